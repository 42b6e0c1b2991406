"""Follows LDS→RDS→CDS(→aggregate children)→EDS/DNS and publishes complete configs.

The contract between the xDS client and the request path: for each watched listener,
one immutable :class:`XdsConfig` is published, and only once it is whole (listener,
its route configuration, and every cluster the routes name resolved to endpoints or
to a per-cluster error). Endpoint or cluster updates republish a new XdsConfig.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymesh.xds.resources.cluster import Cluster
from pymesh.xds.resources.endpoint import ClusterLoadAssignment
from pymesh.xds.resources.listener import Listener
from pymesh.xds.resources.route import RouteConfiguration


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A cluster with what it resolves to.

    Leaf clusters (EDS/STATIC/DNS) carry ``endpoints`` (DNS results already turned into
    a ClusterLoadAssignment). Aggregate clusters carry ``leaf_clusters``: the
    names of the leaves in priority order (each also present in XdsConfig.clusters).
    ``error`` is set instead when the cluster (or its EDS) does not exist or is invalid
    and no last good value is known; requests routed there fail with UNAVAILABLE/503.
    """

    name: str
    cluster: Cluster | None
    endpoints: ClusterLoadAssignment | None = None
    leaf_clusters: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class XdsConfig:
    """One complete, immutable view for one listener."""

    listener: Listener
    route_config: RouteConfiguration
    clusters: Mapping[str, ClusterConfig]
    version: int  # increases with every publication for this listener


def __getattr__(name: str) -> Any:
    # The manager imports this module for the data types, so it is loaded lazily.
    if name == "DependencyManager":
        from pymesh.xds._dependency_manager import DependencyManager

        return DependencyManager
    raise AttributeError(name)
