"""Follows Listener → RouteConfiguration → Clusters (→ aggregate children) → endpoints,
and publishes one complete, immutable :class:`XdsConfig` per watched listener.

Everything here runs on the xDS client's thread (watch callbacks and DNS tasks run on
its loop), so the state needs no lock. After every change ``_reconcile`` recomputes
what the listener needs, (un)subscribes accordingly, and publishes only when every
piece is present: a route naming a cluster whose endpoints have not arrived yet
publishes nothing until they do (no config tears). A cluster that does not exist, or
whose EDS does not exist or is invalid with no last good value, becomes a
``ClusterConfig(error=...)`` so the rest of the listener keeps working.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver

from pymesh.errors import MeshError, ResourceInvalid, XdsDataError
from pymesh.xds.client import CDS, EDS, LDS, RDS, XdsClient
from pymesh.xds.client._dns import DnsResolutionError, resolve_cluster
from pymesh.xds.client._federation import FederatedXdsClient
from pymesh.xds.dependencies import ClusterConfig, XdsConfig
from pymesh.xds.resources.cluster import Cluster
from pymesh.xds.resources.endpoint import ClusterLoadAssignment
from pymesh.xds.resources.listener import Listener
from pymesh.xds.resources.route import RouteAction, RouteConfiguration

__all__ = ["MAX_AGGREGATE_DEPTH", "DependencyManager", "clusters_of"]

log = logging.getLogger("pymesh.xds.dependencies")

#: Aggregate clusters nest at most this deep (as gRPC, gRFC A75).
MAX_AGGREGATE_DEPTH = 16

OnConfig = Callable[[XdsConfig], None]
OnError = Callable[[str, MeshError], None]


def clusters_of(rc: RouteConfiguration) -> list[str]:
    """Every cluster a route configuration can send to, in first-seen order.

    cluster, weighted_clusters and mirror clusters; cluster_header targets cannot be
    known ahead and are skipped.
    """
    seen: dict[str, None] = {}
    for vh in rc.virtual_hosts:
        for route in vh.routes:
            action = route.action
            if not isinstance(action, RouteAction):
                continue
            if action.cluster:
                seen[action.cluster] = None
            for cw in action.weighted_clusters:
                seen[cw.name] = None
            for mirror in action.request_mirror_policies:
                seen[mirror.cluster] = None
    return list(seen)


@dataclass(eq=False)
class _Watched:
    """One subscribed resource: its last good value, or why there is none."""

    type_url: str
    name: str
    watcher: _Callbacks
    value: Any = None
    state: str = "pending"  # pending | ok | missing | error
    error: str = ""


@dataclass(eq=False)
class _DnsState:
    cluster: Cluster
    task: asyncio.Task[None] | None = None
    result: ClusterLoadAssignment | None = None
    error: str = ""
    done: bool = False


class _Callbacks:
    """ResourceWatcher adapter routing a resource's events to its listener watch."""

    def __init__(self, owner: _ListenerWatch, type_url: str) -> None:
        self.owner = owner
        self.type_url = type_url

    def on_resource(self, name: str, value: Any) -> None:
        self.owner.on_event(self.type_url, name, "ok", value, None)

    def on_error(self, name: str, error: MeshError) -> None:
        self.owner.on_event(self.type_url, name, "error", None, error)

    def on_does_not_exist(self, name: str) -> None:
        self.owner.on_event(self.type_url, name, "missing", None, None)


@dataclass
class _Walk:
    """The result of walking the cluster tree once."""

    complete: bool = True
    cds: set[str] = field(default_factory=set)
    eds: set[str] = field(default_factory=set)
    dns: set[str] = field(default_factory=set)
    configs: dict[str, ClusterConfig] = field(default_factory=dict)


class _ListenerWatch:
    def __init__(
        self,
        manager: DependencyManager,
        name: str,
        on_config: OnConfig,
        on_error: OnError,
    ) -> None:
        self.m = manager
        self.client = manager.client
        self.name = name
        self.on_config = on_config
        self.on_error = on_error
        self.cancelled = False
        self.version = 0
        self.published: tuple[Listener, RouteConfiguration, dict[str, ClusterConfig]] | None = None
        self.watches: dict[tuple[str, str], _Watched] = {}
        self.dns: dict[str, _DnsState] = {}
        #: Clusters subscribed on demand (cluster_header targets), kept for the watch's
        #: life; in first-asked order.
        self.dynamic: dict[str, None] = {}

    # ------------------------------------------------------------ subscriptions
    def _ensure(self, type_url: str, name: str) -> _Watched:
        key = (type_url, name)
        w = self.watches.get(key)
        if w is None:
            w = self.watches[key] = _Watched(type_url, name, _Callbacks(self, type_url))
            self.client.watch(type_url, name, w.watcher)
        return w

    def _drop(self, type_url: str, name: str) -> None:
        w = self.watches.pop((type_url, name), None)
        if w is not None:
            self.client.cancel_watch(type_url, name, w.watcher)

    def start(self) -> None:
        self._ensure(LDS, self.name)

    def add_cluster(self, name: str) -> None:
        """Subscribe ``name`` beside the clusters the routes name (on the xDS thread)."""
        if self.cancelled or name in self.dynamic:
            return
        self.dynamic[name] = None
        self.reconcile()

    def cancel(self) -> None:
        self.cancelled = True
        for type_url, name in list(self.watches):
            self._drop(type_url, name)
        for st in self.dns.values():
            if st.task is not None:
                st.task.cancel()
        self.dns.clear()

    # ------------------------------------------------------------ events
    def on_event(
        self, type_url: str, name: str, state: str, value: Any, error: MeshError | None
    ) -> None:
        if self.cancelled:
            return
        w = self.watches.get((type_url, name))
        if w is None:
            return
        if state == "ok" and type_url == LDS and not isinstance(value, Listener):
            # A server-side Listener (gRFC A36) has no api_listener: useless to a client.
            state, error = (
                "error",
                ResourceInvalid(
                    name,
                    "api_listener",
                    "a client needs an api_listener; this is a server Listener",
                ),
            )
        if state == "ok":
            w.value, w.state, w.error = value, "ok", ""
        elif state == "error":
            assert error is not None
            if w.state == "ok" and not isinstance(error, XdsDataError):
                # gRFC A88: an error with a last good value keeps the value serving.
                log.warning("xDS %s %r: %s (keeping the last good value)", type_url, name, error)
                return
            w.value, w.state, w.error = None, "error", error.message
        else:
            w.value, w.state, w.error = None, "missing", ""
        listener_ok = type_url == RDS and self.watches[(LDS, self.name)].state == "ok"
        if state != "ok" and (type_url == LDS or listener_ok):
            # The consumer drops the config on this error: the next complete one is new.
            self.published = None
            # Typed, so the consumer decides structurally: only a listener that does not
            # exist may pass through; a missing route configuration is an incomplete
            # config, and a stream error is no answer at all.
            self._report(error or self.client.does_not_exist_error(type_url, name))
        self.reconcile()

    def _report(self, err: MeshError) -> None:
        try:
            self.on_error(self.name, err)
        except Exception:
            log.exception("on_error callback for listener %r raised", self.name)

    # ------------------------------------------------------------ reconcile
    def reconcile(self) -> None:
        if self.cancelled:
            return
        lw = self.watches.get((LDS, self.name))
        if lw is None or lw.state != "ok":
            return
        listener: Listener = lw.value
        rc: RouteConfiguration | None
        if listener.route_config is not None:
            rc = listener.route_config
            self._drop_all(RDS, keep=set())
        else:
            assert listener.rds_name is not None
            rw = self._ensure(RDS, listener.rds_name)
            self._drop_all(RDS, keep={listener.rds_name})
            rc = rw.value if rw.state == "ok" else None
        if rc is None:
            return  # keep cluster subscriptions until the new route config arrives
        walk = _Walk()
        for root in clusters_of(rc):
            self._walk(root, 0, (), walk)
        for root in self.dynamic:
            # An on-demand cluster never holds back the listener's config: it joins the
            # published clusters once it is resolved (or known to be missing).
            if root in walk.configs:
                continue
            sub = _Walk()
            self._walk(root, 0, (), sub)
            walk.cds |= sub.cds
            walk.eds |= sub.eds
            walk.dns |= sub.dns
            if sub.complete:
                for name, cc in sub.configs.items():
                    walk.configs.setdefault(name, cc)
        self._drop_all(CDS, keep=walk.cds)
        self._drop_all(EDS, keep=walk.eds)
        for name in list(self.dns):
            if name not in walk.dns:
                st = self.dns.pop(name)
                if st.task is not None:
                    st.task.cancel()
        if walk.complete:
            self._publish(listener, rc, walk.configs)

    def _drop_all(self, type_url: str, keep: set[str]) -> None:
        for t, name in list(self.watches):
            if t == type_url and name not in keep:
                self._drop(t, name)

    def _walk(self, name: str, depth: int, stack: tuple[str, ...], walk: _Walk) -> list[str]:
        """Visit cluster ``name``; returns its leaf clusters (for aggregate parents)."""
        done = walk.configs.get(name)
        if done is not None:  # reached again through another route or parent
            if done.error is not None:
                return []
            return list(done.leaf_clusters) if done.leaf_clusters else [name]
        walk.cds.add(name)
        cw = self._ensure(CDS, name)
        if cw.state == "pending":
            walk.complete = False
            return []
        if cw.state != "ok":
            reason = cw.error or f"cluster {name!r} does not exist"
            walk.configs[name] = ClusterConfig(name, None, error=reason)
            return []
        cluster: Cluster = cw.value
        if cluster.kind == "AGGREGATE":
            return self._walk_aggregate(cluster, depth, stack, walk)
        if cluster.kind == "EDS":
            ew = self._ensure(EDS, cluster.eds_resource_name)
            walk.eds.add(cluster.eds_resource_name)
            if ew.state == "pending":
                walk.complete = False
                return []
            if ew.state != "ok":
                reason = ew.error or f"EDS resource {cluster.eds_resource_name!r} does not exist"
                walk.configs[name] = ClusterConfig(name, cluster, error=reason)
                return []
            walk.configs[name] = ClusterConfig(name, cluster, endpoints=ew.value)
            return [name]
        if cluster.kind == "STATIC":
            cla = cluster.load_assignment or ClusterLoadAssignment(name)
            walk.configs[name] = ClusterConfig(name, cluster, endpoints=cla)
            return [name]
        # STRICT_DNS / LOGICAL_DNS
        walk.dns.add(name)
        st = self._ensure_dns(cluster)
        if not st.done:
            walk.complete = False
            return []
        if st.result is None:
            walk.configs[name] = ClusterConfig(name, cluster, error=st.error)
            return []
        walk.configs[name] = ClusterConfig(name, cluster, endpoints=st.result)
        return [name]

    def _walk_aggregate(
        self, cluster: Cluster, depth: int, stack: tuple[str, ...], walk: _Walk
    ) -> list[str]:
        name = cluster.name
        if depth >= MAX_AGGREGATE_DEPTH:
            err = f"aggregate cluster {name!r} nests deeper than {MAX_AGGREGATE_DEPTH}"
            walk.configs[name] = ClusterConfig(name, cluster, error=err)
            return []
        leaves: list[str] = []
        for child in cluster.aggregate_clusters:
            if child in stack or child == name:
                path = " -> ".join((*stack, name, child))
                walk.configs[name] = ClusterConfig(
                    name, cluster, error=f"aggregate cluster cycle: {path}"
                )
                return []
            for leaf in self._walk(child, depth + 1, (*stack, name), walk):
                if leaf not in leaves:
                    leaves.append(leaf)
        if not leaves:
            why = "; ".join(
                f"{c}: {walk.configs[c].error}"
                for c in cluster.aggregate_clusters
                if c in walk.configs and walk.configs[c].error
            )
            err = f"aggregate cluster {name!r} has no usable leaf cluster"
            walk.configs[name] = ClusterConfig(
                name, cluster, error=f"{err} ({why})" if why else err
            )
            return []
        walk.configs[name] = ClusterConfig(name, cluster, leaf_clusters=tuple(leaves))
        return leaves

    # ------------------------------------------------------------ DNS
    def _ensure_dns(self, cluster: Cluster) -> _DnsState:
        st = self.dns.get(cluster.name)
        if st is not None and st.cluster == cluster:
            return st
        if st is not None and st.task is not None:
            st.task.cancel()
        st = self.dns[cluster.name] = _DnsState(cluster)
        st.task = self.client.loop.create_task(self._dns_loop(st))
        return st

    async def _dns_loop(self, st: _DnsState) -> None:
        cluster = st.cluster
        while True:
            delay = cluster.dns_refresh_rate
            try:
                resolved = await resolve_cluster(self.m.resolver, cluster)
            except Exception as e:  # DnsResolutionError, or anything unexpected
                error = str(e) if isinstance(e, DnsResolutionError) else f"DNS error: {e!r}"
                if st.result is None:  # a failure keeps the last good addresses
                    st.error = error
                log.warning("cluster %r: %s", cluster.name, error)
                delay = cluster.dns_failure_refresh_rate or cluster.dns_refresh_rate
                changed = not st.done
            else:
                changed = not st.done or st.result != resolved.assignment
                st.result, st.error = resolved.assignment, ""
                if cluster.respect_dns_ttl and resolved.ttl:
                    delay = resolved.ttl
            st.done = True
            if changed and self.dns.get(cluster.name) is st:
                self.reconcile()
            await asyncio.sleep(max(delay, 0.001))

    # ------------------------------------------------------------ publish
    def _publish(
        self, listener: Listener, rc: RouteConfiguration, clusters: dict[str, ClusterConfig]
    ) -> None:
        snapshot = (listener, rc, clusters)
        if snapshot == self.published:
            return
        self.published = snapshot
        self.version += 1
        config = XdsConfig(listener, rc, dict(clusters), self.version)
        try:
            self.on_config(config)
        except Exception:
            log.exception("on_config callback for listener %r raised", self.name)


class DependencyManager:
    """Publishes a complete :class:`XdsConfig` per watched listener.

    ``resolver`` is the dnspython async resolver used for STRICT_DNS / LOGICAL_DNS
    clusters (default: the system's configuration).
    """

    def __init__(
        self,
        client: XdsClient | FederatedXdsClient,
        *,
        resolver: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        self.client = client
        self._resolver = resolver

    @property
    def resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:  # created lazily: reads /etc/resolv.conf
            self._resolver = dns.asyncresolver.Resolver()
        return self._resolver

    def watch_listener(
        self, name: str, on_config: OnConfig, on_error: OnError
    ) -> ListenerWatchHandle:
        """Follow listener ``name``; returns a function that cancels the watch.

        ``on_config(XdsConfig)`` is called (on the xDS thread) with each new complete
        config; ``on_error(listener_name, MeshError)`` when the listener or its route
        configuration does not exist (ResourceDoesNotExistError, whose ``type_url`` says
        which), cannot be fetched (XdsStreamError) or is invalid with no last good value.
        """
        watch = _ListenerWatch(self, name, on_config, on_error)
        self.client.submit(watch.start)
        return ListenerWatchHandle(self.client, watch)


class ListenerWatchHandle:
    """What :meth:`DependencyManager.watch_listener` returns: call it to cancel the
    watch; :meth:`add_cluster` subscribes a cluster on demand."""

    def __init__(self, client: XdsClient | FederatedXdsClient, watch: _ListenerWatch) -> None:
        self._client = client
        self._watch = watch

    def __call__(self) -> None:
        self._client.submit(self._watch.cancel)

    def add_cluster(self, name: str) -> None:
        """Subscribe cluster ``name`` for this listener (a ``cluster_header`` target):
        it is published with the listener's clusters once resolved, or with an error
        once known not to exist, and stays subscribed while the listener is watched."""
        self._client.submit(functools.partial(self._watch.add_cluster, name))
