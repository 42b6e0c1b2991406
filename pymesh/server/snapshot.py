"""Snapshot: one immutable, versioned set of xDS resources for the embedded control plane.

Layered as go-control-plane does: a :class:`Snapshot` is frozen and can check itself for
dangling references (:meth:`Snapshot.consistent`); a cache hands snapshots to ADS streams.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "RESOURCE_TYPES",
    "ROUTE_TYPE",
    "Snapshot",
    "SnapshotInconsistent",
    "resource_name",
]

_PREFIX = "type.googleapis.com/"
LISTENER_TYPE = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_TYPE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
#: The four SotW types, in the order a client depends on them.
RESOURCE_TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)

_HCM_TYPE = _PREFIX + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


class SnapshotInconsistent(ValueError):
    """A snapshot references a resource it does not contain (e.g. a listener's RDS name)."""


def resource_name(resource: Message) -> str:
    """The xDS name of a resource (``cluster_name`` for a ClusterLoadAssignment)."""
    if isinstance(resource, endpoint_pb2.ClusterLoadAssignment):
        return str(resource.cluster_name)
    name: str = resource.name  # every other xDS type has .name
    return name


def _type_url(resource: Message) -> str:
    return _PREFIX + str(resource.DESCRIPTOR.full_name)


@dataclass(frozen=True)
class Snapshot:
    """A version plus resources per type URL, keyed by resource name.

    Build one with :meth:`Snapshot.of`; the mappings are read-only.
    """

    version: str
    resources: Mapping[str, Mapping[str, Message]] = field(default_factory=dict)
    # Resources packed into Any once per snapshot, not once per stream and push.
    _packed: dict[str, Mapping[str, any_pb2.Any]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _versions: dict[str, Mapping[str, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _digests: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)
    # Non-empty once consistent() passed (a list: the dataclass is frozen).
    _checked: list[bool] = field(default_factory=list, init=False, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        version: str | None = None,
        *,
        listeners: Iterable[listener_pb2.Listener] = (),
        routes: Iterable[route_pb2.RouteConfiguration] = (),
        clusters: Iterable[cluster_pb2.Cluster] = (),
        endpoints: Iterable[endpoint_pb2.ClusterLoadAssignment] = (),
    ) -> Snapshot:
        """Build a snapshot. With ``version=None`` the version is a short content hash.

        Raises ValueError when two resources of one type share a name.
        """
        by_type: dict[str, dict[str, Message]] = {t: {} for t in RESOURCE_TYPES}
        for group in (listeners, routes, clusters, endpoints):
            for res in group:
                url = _type_url(res)
                if url not in by_type:
                    raise ValueError(f"unsupported resource type {url}")
                name = resource_name(res)
                if name in by_type[url]:
                    raise ValueError(f"duplicate {url.rsplit('.', 1)[-1]} named {name!r}")
                by_type[url][name] = res
        if version is None:
            version = _content_hash(by_type)
        frozen = {t: MappingProxyType(dict(sorted(r.items()))) for t, r in by_type.items()}
        return cls(version=version, resources=MappingProxyType(frozen))

    def get(self, type_url: str) -> Mapping[str, Message]:
        """Resources of one type (empty mapping when none)."""
        return self.resources.get(type_url, MappingProxyType({}))

    def packed(self, type_url: str) -> Mapping[str, any_pb2.Any]:
        """Resources of one type packed as ``Any`` (computed once, then shared)."""
        done = self._packed.get(type_url)
        if done is None:
            done = {}
            for name, res in self.get(type_url).items():
                a = any_pb2.Any()
                a.Pack(res, deterministic=True)
                done[name] = a
            # A race only packs twice; both results are equal.
            self._packed[type_url] = done
        return done

    def resource_versions(self, type_url: str) -> Mapping[str, str]:
        """Per-resource versions for delta xDS: a hash of each resource's bytes.

        Content-derived, so an unchanged resource keeps its version across snapshots (and
        across server restarts, which lets ``initial_resource_versions`` skip it).
        """
        done = self._versions.get(type_url)
        if done is None:
            done = {
                name: hashlib.sha256(a.value).hexdigest()[:16]
                for name, a in self.packed(type_url).items()
            }
            self._versions[type_url] = done
        return done

    def type_digest(self, type_url: str) -> bytes:
        """A hash of every resource of one type (names and bytes): equal digests, equal
        content. Lets the server tell which types a new snapshot really changed."""
        done = self._digests.get(type_url)
        if done is None:
            h = hashlib.sha256()
            for name, a in self.packed(type_url).items():
                h.update(len(name).to_bytes(4, "big") + name.encode())
                h.update(len(a.value).to_bytes(8, "big") + a.value)
            done = self._digests[type_url] = h.digest()
        return done

    def consistent(self) -> None:
        """Raise :class:`SnapshotInconsistent` naming the first dangling reference.

        Checked: a listener's RDS route config, a route's clusters (single and weighted),
        an EDS cluster's ClusterLoadAssignment (by ``eds_cluster_config.service_name``, or
        the cluster name when that is empty). Checked once per snapshot.
        """
        if self._checked:
            return
        routes, clusters, endpoints = (
            self.get(ROUTE_TYPE),
            self.get(CLUSTER_TYPE),
            self.get(ENDPOINT_TYPE),
        )
        for name, lis in self.get(LISTENER_TYPE).items():
            assert isinstance(lis, listener_pb2.Listener)
            for hcm in _listener_hcms(lis):
                if hcm.HasField("rds"):
                    rds = hcm.rds.route_config_name
                    if rds not in routes:
                        raise SnapshotInconsistent(
                            f"listener {name!r} uses route config {rds!r}, which is missing"
                        )
                elif hcm.HasField("route_config"):
                    _check_route_clusters(hcm.route_config, clusters, f"listener {name!r}")
        for name, rc in routes.items():
            assert isinstance(rc, route_pb2.RouteConfiguration)
            _check_route_clusters(rc, clusters, f"route config {name!r}")
        for name, cl in clusters.items():
            assert isinstance(cl, cluster_pb2.Cluster)
            if cl.type == cluster_pb2.Cluster.EDS:
                eds = cl.eds_cluster_config.service_name or cl.name
                if eds not in endpoints:
                    raise SnapshotInconsistent(
                        f"EDS cluster {name!r} needs endpoints {eds!r}, which are missing"
                    )
        self._checked.append(True)


def _listener_hcms(lis: listener_pb2.Listener) -> list[hcm_pb2.HttpConnectionManager]:
    anys = []
    if lis.HasField("api_listener"):
        anys.append(lis.api_listener.api_listener)
    for chain in [*lis.filter_chains, lis.default_filter_chain]:
        anys.extend(f.typed_config for f in chain.filters if f.HasField("typed_config"))
    out = []
    for a in anys:
        if a.type_url == _HCM_TYPE:
            hcm = hcm_pb2.HttpConnectionManager()
            a.Unpack(hcm)
            out.append(hcm)
    return out


def _check_route_clusters(
    rc: route_pb2.RouteConfiguration, clusters: Mapping[str, Message], owner: str
) -> None:
    for vh in rc.virtual_hosts:
        for i, r in enumerate(vh.routes):
            if not r.HasField("route"):
                continue
            names = [r.route.cluster] if r.route.cluster else []
            names += [w.name for w in r.route.weighted_clusters.clusters]
            for c in names:
                if c not in clusters:
                    raise SnapshotInconsistent(
                        f"{owner} virtual host {vh.name!r} route {i} sends to cluster "
                        f"{c!r}, which is missing"
                    )


def _content_hash(by_type: Mapping[str, Mapping[str, Message]]) -> str:
    h = hashlib.sha256()
    for url in sorted(by_type):
        for name in sorted(by_type[url]):
            h.update(url.encode() + b"\0" + name.encode() + b"\0")
            h.update(by_type[url][name].SerializeToString(deterministic=True))
    return h.hexdigest()[:12]
