"""Mesh: the bootstrap, the background xDS client and per-listener routing state."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymesh import telemetry
from pymesh._upstream import ClusterRuntime, Sweeper
from pymesh.bootstrap import Bootstrap, load_bootstrap
from pymesh.errors import (
    ConfigTimeoutError,
    MeshClosedError,
    MeshError,
    ResourceDoesNotExistError,
    UnknownHostError,
    XdsDataError,
)
from pymesh.resilience.fault import FaultInjector
from pymesh.routing import RouteTable
from pymesh.security import MeshSecurity
from pymesh.telemetry._csds import client_config
from pymesh.xds._dependency_manager import DependencyManager
from pymesh.xds.client import LDS, XdsClientStats
from pymesh.xds.client._client import DEFAULT_MAX_MESSAGE_BYTES
from pymesh.xds.client._federation import FederatedXdsClient
from pymesh.xds.dependencies import XdsConfig
from pymesh.xds.resources._warnings import counts_dump
from pymesh.xds.resources.listener import FAULT_TYPE
from pymesh.xds.resources.session import STATEFUL_SESSION_TYPE, StatefulSession

if TYPE_CHECKING:
    from pymesh._admin import AdminServer

log = logging.getLogger("pymesh")

#: How long a request waits for a listener's first config when it has no timeout.
DEFAULT_CONFIG_WAIT = 15.0
#: Mesh.slot remembers at most this many authorities (then starts again).
_SLOT_MEMO_LIMIT = 4096
#: cluster_header targets one listener subscribes on demand, at most (a request header
#: names them: the bound keeps a client from subscribing to whatever callers send).
ON_DEMAND_CLUSTER_LIMIT = 256


@dataclass(slots=True)
class _Wanted:
    """A cluster subscribed on demand for one listener: set once it is published."""

    ready: threading.Event = field(default_factory=threading.Event)
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=list
    )

    def settle(self) -> None:
        self.ready.set()
        waiters, self.waiters = self.waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut)


@dataclass(frozen=True, slots=True)
class ListenerState:
    """Everything a request needs for one listener, swapped as one attribute."""

    config: XdsConfig
    table: RouteTable
    clusters: Mapping[str, ClusterRuntime]
    #: The listener's own HTTPFault filter, built with the state and shared by its
    #: requests (routes may override it by filter name).
    fault: FaultInjector | None
    fault_filter_name: str | None
    #: The listener's stateful session filter (cookie) config and name (routes may
    #: override it by that name); None when it has none.
    session: StatefulSession | None = None
    session_filter_name: str | None = None


@dataclass(slots=True)
class ListenerSlot:
    """Per-listener holder: the current state, or why there is none."""

    name: str
    state: ListenerState | None = None
    error: MeshError | None = None
    does_not_exist: bool = False  # the listener was never known: requests may pass through
    had_state: bool = False  # a config was published once (so a deletion is an error)
    ready: threading.Event = field(default_factory=threading.Event)
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=list
    )
    cancel: Any = None
    #: cluster_header targets subscribed on demand (Mesh.wait_cluster), kept.
    wanted: dict[str, _Wanted] = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return self.ready.is_set()


class Mesh:
    """A client-side service mesh bound to one xDS control plane.

    ``bootstrap`` is a path, a dict, or None (``GRPC_XDS_BOOTSTRAP`` /
    ``GRPC_XDS_BOOTSTRAP_CONFIG``). Unknown hosts pass through directly unless
    ``passthrough=False``; a host is unknown only once the control plane's answer shows
    its listener does not exist (or ``resource_timeout`` passed with no answer), never
    because config is slow or incomplete. ``xds_max_message_bytes`` caps one ADS
    response (256 MiB). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        bootstrap: str | os.PathLike[str] | Mapping[str, Any] | Bootstrap | None = None,
        *,
        passthrough: bool = True,
        resource_timeout: float = 15.0,
        seed: int | None = None,
        xds_max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.bootstrap: Bootstrap = (
            bootstrap if isinstance(bootstrap, Bootstrap) else load_bootstrap(bootstrap)
        )
        self.passthrough = passthrough
        self.node_id = self.bootstrap.node.id
        admin_port = _admin_port_from_env()  # checked before any thread starts
        self.rng = random.Random(seed)
        self._closed = False
        self._lock = threading.Lock()  # guards slot/cluster creation, not the request path
        self._slots: dict[str, ListenerSlot] = {}
        #: authority (or (xds authority, authority)) -> its slot, so requests skip the
        #: listener-name template (bounded).
        self._slot_of: dict[str | tuple[str, str], ListenerSlot] = {}
        self._clusters: dict[str, ClusterRuntime] = {}
        #: Certificate providers and TLS contexts (mTLS from xDS; docs/security.md).
        self.security = MeshSecurity(self.bootstrap, self.node_id)
        self._client = FederatedXdsClient(
            self.bootstrap,
            resource_timeout=resource_timeout,
            max_message_bytes=xds_max_message_bytes,
        )
        self._deps = DependencyManager(self._client)
        self._client.start()
        self._sweeper = Sweeper(lambda: list(self._clusters.values()))
        # Observability hooks: observable metrics read this mesh's counters; an admin
        # server starts by itself when PYMESH_ADMIN_PORT is set (docs/observability.md).
        self._admin: AdminServer | None = None
        self._csds: tuple[Any, int] | None = None  # (grpc.Server, port) once started
        telemetry.register(self)
        if admin_port is not None:
            self.start_admin(admin_port)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Mesh:
        """A Mesh from ``GRPC_XDS_BOOTSTRAP`` (path) or ``GRPC_XDS_BOOTSTRAP_CONFIG`` (JSON)."""
        return cls(None, **kwargs)

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        ready = sum(1 for s in self._slots.values() if s.state is not None)
        return (
            f"<Mesh node={self.node_id!r} listeners={ready}/{len(self._slots)} "
            f"clusters={len(self._clusters)}{' closed' if self._closed else ''}>"
        )

    def close(self) -> None:
        """Stop the xDS client and background threads (within about 1 s)."""
        if self._closed:
            return
        self._closed = True
        for slot in list(self._slots.values()):
            self._settle(slot)
        self._sweeper.close()
        self._client.close()
        for runtime in self.clusters().values():
            runtime.states.close()  # ORCA out-of-band streams
        if self._admin is not None:
            self._admin.close()
        if self._csds is not None:
            self._csds[0].stop(grace=None)
        self.security.close()

    # -- listener state ------------------------------------------------------------

    def listener_name(self, authority: str, xds_authority: str | None = None) -> str:
        """The xDS listener name for a request authority (gRPC's template rule);
        ``xds_authority`` is the authority of an ``xds://<xds_authority>/target`` (gRFC
        A47: that authority's template, and its servers fetch the listener)."""
        return self.bootstrap.listener_resource_name(authority, xds_authority=xds_authority)

    def slot(self, authority: str, xds_authority: str | None = None) -> ListenerSlot:
        """The slot for ``authority``, subscribing to its listener on first use.

        ``xds_authority`` names a bootstrap ``authorities`` entry (federation); an
        unknown one is a BootstrapError naming it."""
        key: str | tuple[str, str] = (
            authority if xds_authority is None else (xds_authority, authority)
        )
        slot = self._slot_of.get(key)
        if slot is not None:
            return slot
        slot = self._slot_named(self.listener_name(authority, xds_authority))
        self._remember(key, slot)
        return slot

    def _slot_named(self, name: str) -> ListenerSlot:
        slot = self._slots.get(name)
        if slot is not None:
            return slot
        if self._closed:
            raise MeshClosedError("mesh is closed", node_id=self.node_id)
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                slot = ListenerSlot(name)
                self._slots[name] = slot
                slot.cancel = self._deps.watch_listener(
                    name,
                    functools.partial(self._on_config, slot),
                    functools.partial(self._on_listener_error, slot),
                )
        return slot

    def _remember(self, authority: str | tuple[str, str], slot: ListenerSlot) -> None:
        if len(self._slot_of) >= _SLOT_MEMO_LIMIT:
            self._slot_of.clear()  # a bound for clients that make up host names
        self._slot_of[authority] = slot

    def _cluster(self, name: str) -> ClusterRuntime:
        runtime = self._clusters.get(name)
        if runtime is None:
            # Every cluster draws from the mesh's one generator, as Envoy's clusters share
            # one: a random.Random is 2.5 KB, 7.5 MB for 3 000 clusters of their own.
            runtime = self._clusters.setdefault(name, ClusterRuntime(name, self.rng))
        return runtime

    def _on_config(self, slot: ListenerSlot, config: XdsConfig) -> None:
        """Runs on the xDS thread: compile and publish one complete listener state."""
        try:
            clusters = {}
            for name, cc in config.clusters.items():
                runtime = self._cluster(name)
                runtime.update(cc)
                clusters[name] = runtime
            fault: FaultInjector | None = None
            fault_name: str | None = None
            session: StatefulSession | None = None
            session_name: str | None = None
            for f in config.listener.http_filters:
                if f.type_name == FAULT_TYPE:
                    fault, fault_name = FaultInjector(f.config), f.name
                elif f.type_name == STATEFUL_SESSION_TYPE:
                    session, session_name = f.config, f.name
            slot.state = ListenerState(
                config=config,
                table=RouteTable.compile(config.route_config),
                clusters=clusters,
                fault=fault,
                fault_filter_name=fault_name,
                session=session,
                session_filter_name=session_name,
            )
            slot.error = None
            slot.does_not_exist = False
            slot.had_state = True
            for name, wanted in list(slot.wanted.items()):
                if name in clusters:
                    wanted.settle()
        except Exception as exc:  # keep the last good state; report why
            log.exception("listener %s: cannot apply config", slot.name)
            slot.error = MeshError(f"cannot apply config: {exc}", resource_name=slot.name)
        self._settle(slot)

    def _on_listener_error(self, slot: ListenerSlot, _name: str, error: MeshError) -> None:
        slot.error = error
        if isinstance(error, (ResourceDoesNotExistError, XdsDataError)):
            # The server has no such resource (deleted, or never had it), or its cached
            # value was dropped on a data error (fail_on_data_errors): requests stop
            # using the last config. Only a listener that never had one is an unknown
            # host that may pass through; a deleted listener or a missing route
            # configuration fails requests with this typed error.
            slot.state = None
            slot.does_not_exist = (
                isinstance(error, ResourceDoesNotExistError)
                and error.type_url == LDS
                and error.resource_name == slot.name
                and not slot.had_state
            )
        self._settle(slot)

    @staticmethod
    def _settle(slot: ListenerSlot) -> None:
        slot.ready.set()
        waiters, slot.waiters = slot.waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut)

    def wait_state(
        self, slot: ListenerSlot, timeout: float | None, *, passthrough: bool | None = None
    ) -> ListenerState | None:
        """Block until the listener has a state, failed, or ``timeout`` passed.

        Returns None when the listener does not exist (the caller passes through).
        """
        if slot.state is not None:
            return slot.state
        wait = DEFAULT_CONFIG_WAIT if timeout is None else timeout
        if not slot.ready.wait(wait):
            raise ConfigTimeoutError(
                f"no xDS config for listener after {wait:.3g}s",
                node_id=self.node_id,
                resource_name=slot.name,
            )
        return self._settled_state(slot, passthrough)

    async def wait_state_async(
        self, slot: ListenerSlot, timeout: float | None, *, passthrough: bool | None = None
    ) -> ListenerState | None:
        """The asyncio twin of :meth:`wait_state` (never blocks the event loop)."""
        if slot.state is not None:
            return slot.state
        if not slot.ready.is_set():
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            slot.waiters.append((loop, fut))
            if slot.ready.is_set():  # settled while we registered
                _resolve(fut)
            wait = DEFAULT_CONFIG_WAIT if timeout is None else timeout
            try:
                await asyncio.wait_for(fut, wait)
            except asyncio.TimeoutError:
                raise ConfigTimeoutError(
                    f"no xDS config for listener after {wait:.3g}s",
                    node_id=self.node_id,
                    resource_name=slot.name,
                ) from None
        return self._settled_state(slot, passthrough)

    def _want(self, state: ListenerState, cluster: str) -> tuple[ListenerSlot, _Wanted] | None:
        """Subscribe ``cluster`` for ``state``'s listener (once; kept), as Envoy resolves
        a ``cluster_header`` target among all clusters and grpc-go subscribes a cluster
        specifier plugin's on demand. None: over :data:`ON_DEMAND_CLUSTER_LIMIT`."""
        slot = self._slots.get(state.config.listener.name)
        if slot is None:
            return None
        wanted = slot.wanted.get(cluster)
        if wanted is None:
            with self._lock:
                wanted = slot.wanted.get(cluster)
                if wanted is None:
                    if len(slot.wanted) >= ON_DEMAND_CLUSTER_LIMIT:
                        log.warning(
                            "listener %s: cluster_header target %r not subscribed: %d "
                            "on-demand clusters already",
                            slot.name,
                            cluster,
                            ON_DEMAND_CLUSTER_LIMIT,
                        )
                        return None
                    wanted = slot.wanted[cluster] = _Wanted()
                    slot.cancel.add_cluster(cluster)
        current = slot.state
        if current is not None and cluster in current.clusters:
            wanted.settle()  # already published (another route, or an earlier wait)
        return slot, wanted

    def wait_cluster(
        self, state: ListenerState, cluster: str, timeout: float | None
    ) -> ListenerState:
        """A request's ``cluster_header`` names ``cluster``, which ``state`` does not
        have: subscribe it and block until the listener's config includes it (resolved,
        or with the error that it does not exist) or ``timeout`` (default
        :data:`DEFAULT_CONFIG_WAIT`, as the first request to a listener) passed. Returns
        the listener's state then; planning on it again answers NC if the cluster is
        still not there (fail closed)."""
        found = self._want(state, cluster)
        if found is None:
            return state
        slot, wanted = found
        wanted.ready.wait(DEFAULT_CONFIG_WAIT if timeout is None else timeout)
        return slot.state or state

    async def wait_cluster_async(
        self, state: ListenerState, cluster: str, timeout: float | None
    ) -> ListenerState:
        """The asyncio twin of :meth:`wait_cluster` (never blocks the event loop)."""
        found = self._want(state, cluster)
        if found is None:
            return state
        slot, wanted = found
        if not wanted.ready.is_set():
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            wanted.waiters.append((loop, fut))
            if wanted.ready.is_set():  # settled while we registered
                _resolve(fut)
            with contextlib.suppress(asyncio.TimeoutError):  # planned again: NC
                await asyncio.wait_for(fut, DEFAULT_CONFIG_WAIT if timeout is None else timeout)
        return slot.state or state

    def wait_listener(
        self,
        slot: ListenerSlot,
        alternate: str | None,
        timeout: float | None,
        *,
        passthrough: bool | None = None,
        xds_authority: str | None = None,
    ) -> ListenerState | None:
        """:meth:`wait_state`, with ``alternate`` as a second name for the same host
        (``host:80`` for a URL whose default port the HTTP client dropped: Istio names
        that listener with the port). Both names go out in one request; whichever the
        control plane has is kept and the other subscription is dropped."""
        alt = self._alias_of(slot, alternate, xds_authority)
        if alt is None:
            return self.wait_state(slot, timeout, passthrough=passthrough)
        state = self.wait_state(slot, timeout, passthrough=True)
        if state is None:
            state = self.wait_state(alt, timeout, passthrough=passthrough)
        self._keep_existing(slot, alt)
        return state

    async def wait_listener_async(
        self,
        slot: ListenerSlot,
        alternate: str | None,
        timeout: float | None,
        *,
        passthrough: bool | None = None,
        xds_authority: str | None = None,
    ) -> ListenerState | None:
        """The asyncio twin of :meth:`wait_listener`."""
        alt = self._alias_of(slot, alternate, xds_authority)
        if alt is None:
            return await self.wait_state_async(slot, timeout, passthrough=passthrough)
        state = await self.wait_state_async(slot, timeout, passthrough=True)
        if state is None:
            state = await self.wait_state_async(alt, timeout, passthrough=passthrough)
        self._keep_existing(slot, alt)
        return state

    def _alias_of(
        self, slot: ListenerSlot, alternate: str | None, xds_authority: str | None
    ) -> ListenerSlot | None:
        """The slot for ``alternate``, subscribed now beside ``slot``, or None."""
        if alternate is None or slot.state is not None:
            return None
        alt = self.slot(alternate, xds_authority)
        return None if alt is slot else alt

    def _keep_existing(self, slot: ListenerSlot, alt: ListenerSlot) -> None:
        """Two names for one host have settled: when the control plane has exactly one,
        requests for either name use it and the other subscription is dropped."""
        if slot.state is not None and alt.does_not_exist:
            keep, drop = slot, alt
        elif alt.state is not None and slot.does_not_exist:
            keep, drop = alt, slot
        else:
            return  # both exist (two listeners), neither, or not settled
        with self._lock:
            if self._slots.get(drop.name) is not drop:
                return  # another request did this already
            del self._slots[drop.name]
            for authority, s in list(self._slot_of.items()):
                if s is drop:
                    self._slot_of[authority] = keep
        if drop.cancel is not None:
            drop.cancel()

    def _settled_state(self, slot: ListenerSlot, passthrough: bool | None) -> ListenerState | None:
        if slot.state is not None:
            return slot.state
        if self._closed:
            raise MeshClosedError("mesh is closed", node_id=self.node_id)
        if slot.does_not_exist:
            if self.passthrough if passthrough is None else passthrough:
                return None
            raise UnknownHostError(
                "the control plane does not know this host and passthrough is off",
                node_id=self.node_id,
                resource_name=slot.name,
            )
        assert slot.error is not None
        raise slot.error

    # -- operations ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def xds_stats(self) -> XdsClientStats:
        """The xDS client's counters (updates, ACKs, NACKs per type; connected)."""
        return self._client.stats

    def start_admin(self, port: int = 0, host: str = "127.0.0.1") -> AdminServer:
        """Start (once) the admin HTTP server: /config_dump, /clusters, /stats, /ready,
        /explain. Localhost only by default; closed with the mesh."""
        from pymesh._admin import AdminServer

        with self._lock:
            if self._admin is None:
                self._admin = AdminServer(self, port=port, host=host)
        return self._admin

    def start_csds(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Start (once) a gRPC server with the ``ClientStatusDiscoveryService`` (CSDS,
        gRFC A40) for this mesh: every resource with its status and body. Returns the
        port (``port=0``: any free one). Localhost only by default; closed with the mesh.
        ``pymesh status --csds HOST:PORT`` reads it."""
        from concurrent import futures

        import grpc
        from envoy.service.status.v3 import csds_pb2_grpc

        from pymesh.telemetry._csds import CsdsServicer, client_config_proto

        with self._lock:
            if self._csds is None:
                servicer = CsdsServicer(
                    lambda: client_config_proto(
                        self._client.config_dump(bodies=True)["resources"],
                        self.bootstrap,
                        bodies=True,
                    )
                )
                server = grpc.server(
                    futures.ThreadPoolExecutor(2, thread_name_prefix="pymesh-csds"),
                    options=[("grpc.so_reuseport", 0)],
                )
                csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(servicer, server)
                bound = server.add_insecure_port(f"{host}:{port}")
                if not bound:
                    raise MeshError(
                        f"cannot serve CSDS on {host}:{port} (the port is in use?); "
                        "pick another port, or 0 for any free one"
                    )
                server.start()
                self._csds = (server, bound)
            return self._csds[1]

    def server_ssl_context(
        self, instance_name: str = "default", roots_instance: str | None = None
    ) -> ssl.SSLContext:
        """An mTLS server context from bootstrap certificate provider ``instance_name``.

        It requires and verifies client certificates (against ``roots_instance``'s CA,
        by default the same provider's), and follows rotations: each handshake switches
        to the providers' current certificates (``sni_callback``), so one context serves
        for the process's life. Raises TlsConfigError.
        """
        return self.security.server(instance_name, roots_instance).ssl_context()

    @property
    def admin(self) -> AdminServer | None:
        """The admin server, if started."""
        return self._admin

    def clusters(self) -> dict[str, ClusterRuntime]:
        """Live cluster runtimes by name (a copy of the mapping)."""
        return dict(self._clusters)

    def config_dump(self) -> dict[str, Any]:
        """Every resource with version, status, last error, plus endpoint health.

        A JSON-able dict in the spirit of CSDS's ClientConfig.
        """
        dump = self._client.config_dump()
        dump["listeners_in_use"] = {
            name: {
                "ready": slot.state is not None,
                "version": slot.state.config.version if slot.state else None,
                "error": str(slot.error) if slot.error else None,
                "does_not_exist": slot.does_not_exist,
            }
            for name, slot in list(self._slots.items())
        }
        dump["clusters_in_use"] = {
            name: _cluster_dump(rt) for name, rt in list(self._clusters.items())
        }
        # Counted warnings for set-but-unsupported fields (pymesh status shows them).
        dump["unsupported_fields"] = counts_dump(self._client.warning_source)
        dump["dumped_at"] = time.time()
        dump["client_config"] = client_config(dump, self.bootstrap)
        return dump


def _admin_port_from_env() -> int | None:
    """``PYMESH_ADMIN_PORT`` as a port number, None when unset; a typed error otherwise."""
    raw = os.environ.get("PYMESH_ADMIN_PORT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > 65535:
        raise MeshError(
            f"environment variable PYMESH_ADMIN_PORT={raw!r} is not a port number; "
            "set it to 0..65535 (0: any free port) or unset it"
        )
    return int(raw)


def _cluster_dump(rt: ClusterRuntime) -> dict[str, Any]:
    ejected = rt.ejected  # what the pickers leave out, so what requests see
    endpoints = []
    if rt.endpoints is not None:
        for loc in rt.endpoints.localities:
            for ep in loc.endpoints:
                st = rt.states.get(ep.address)
                endpoints.append(
                    {
                        "address": ep.address,
                        "locality": str(loc.locality),
                        "priority": loc.priority,
                        "health": ep.health,
                        "weight": ep.weight,
                        "ejected": ep.address in ejected,
                        "active_requests": st.active_requests if st is not None else 0,
                    }
                )
                if st is not None and st.orca is not None:
                    # Weighted round robin: the weight in use now (0: none yet, in its
                    # blackout, or expired; the endpoint then gets the mean).
                    endpoints[-1]["orca_weight"] = st.orca.current(time.monotonic())
    return {
        "error": rt.error,
        "lb_policy": rt.cluster.lb_policy.name if rt.cluster else None,
        "leaf_clusters": list(rt.leaf_clusters),
        "endpoints": endpoints,
    }


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
