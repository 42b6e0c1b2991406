"""Read a mesh's own counters (breakers, outlier detectors, endpoints, xDS client).

One reading serves both the OpenTelemetry observable instruments and the admin
server's Prometheus ``/stats``, so the two never disagree. Everything read here is a
plain int or an immutable snapshot: no lock is taken.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pymesh._mesh import Mesh

Attrs = tuple[tuple[str, str], ...]
Kind = Literal["counter", "gauge"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """An observable metric: its name, kind, unit and description."""

    name: str
    kind: Kind
    unit: str
    description: str


#: The observable metrics, in the order /stats prints them.
OBSERVED: tuple[MetricSpec, ...] = (
    MetricSpec(
        "pymesh.circuit_breaker.overflows",
        "counter",
        "{request}",
        "Requests refused by a cluster's circuit breaker, by limit (requests, pending, "
        "retries, connections).",
    ),
    MetricSpec(
        "pymesh.outlier.ejections.active",
        "gauge",
        "{endpoint}",
        "Endpoints currently ejected by outlier detection.",
    ),
    MetricSpec(
        "pymesh.outlier.ejections",
        "counter",
        "{ejection}",
        "Outlier ejections enforced since the cluster's detector was created.",
    ),
    MetricSpec(
        "pymesh.endpoints", "gauge", "{endpoint}", "Endpoints of a cluster by EDS health status."
    ),
    MetricSpec(
        "pymesh.xds_client.resource_updates",
        "counter",
        "{resource}",
        "Resources received that changed, by type (valid updates).",
    ),
    MetricSpec("pymesh.xds_client.acks", "counter", "{response}", "xDS responses ACKed."),
    MetricSpec(
        "pymesh.xds_client.nacks",
        "counter",
        "{response}",
        "xDS responses NACKed (at least one invalid resource).",
    ),
    MetricSpec(
        "pymesh.xds_client.connected",
        "gauge",
        "1",
        "1 while the ADS stream to the xDS server is up, else 0.",
    ),
    MetricSpec(
        "pymesh.xds_client.server_failure",
        "counter",
        "{failure}",
        "ADS streams that failed (gRPC's grpc.xds_client.server_failure).",
    ),
)

_meshes: weakref.WeakSet[Mesh] = weakref.WeakSet()


def register(mesh: Mesh) -> None:
    """Include ``mesh`` in the observable metrics (held weakly; a closed mesh drops out)."""
    _meshes.add(mesh)


def live_meshes() -> list[Mesh]:
    return [m for m in list(_meshes) if not m.closed]


def _attrs(**kv: str) -> Attrs:
    return tuple(sorted(kv.items()))


def collect(meshes: list[Mesh]) -> dict[str, dict[Attrs, float]]:
    """Every observable metric of ``meshes``, summed over meshes per attribute set."""
    out: dict[str, dict[Attrs, float]] = {spec.name: defaultdict(float) for spec in OBSERVED}
    for mesh in meshes:
        for name, rt in mesh.clusters().items():
            breaker = rt.breaker
            if breaker is not None:
                ov = breaker.overflow
                series = out["pymesh.circuit_breaker.overflows"]
                for kind, value in (
                    ("requests", ov.requests),
                    ("pending", ov.pending),
                    ("retries", ov.retries),
                    ("connections", ov.connections),
                ):
                    series[_attrs(**{"pymesh.cluster": name, "pymesh.overflow.kind": kind})] += (
                        value
                    )
            outlier = rt.outlier
            if outlier is not None:
                key = _attrs(**{"pymesh.cluster": name})
                out["pymesh.outlier.ejections.active"][key] += len(outlier.ejected)
                out["pymesh.outlier.ejections"][key] += outlier.stats.get(
                    "ejections_enforced_total", 0
                )
            cla = rt.endpoints
            if cla is not None:
                for ep in cla.endpoints:
                    key = _attrs(**{"pymesh.cluster": name, "pymesh.endpoint.health": ep.health})
                    out["pymesh.endpoints"][key] += 1
        stats = mesh.xds_stats
        server = _attrs(**{"pymesh.xds.server": mesh.bootstrap.xds_servers[0].server_uri})
        for metric, per_type in (
            ("pymesh.xds_client.resource_updates", stats.updates),
            ("pymesh.xds_client.acks", stats.acks),
            ("pymesh.xds_client.nacks", stats.nacks),
        ):
            for type_url, value in list(per_type.items()):
                key = server + _attrs(**{"pymesh.xds.resource_type": type_url})
                out[metric][tuple(sorted(key))] += value
        out["pymesh.xds_client.connected"][server] += stats.connected
        out["pymesh.xds_client.server_failure"][server] += stats.stream_failures
    return out
