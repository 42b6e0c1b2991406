"""The ADS client: one stream (state of the world, or delta with the server feature
``xds_delta``) for every resource type, one thread, fallback across ``xds_servers``.

A daemon thread named ``pymesh-xds`` runs an asyncio loop that owns the ADS stream and
*all* client state; public methods called from other threads hop onto that loop, and
watcher callbacks run serially on it (a federated client's other servers' clients run on
the same loop). The stream itself is grpc's sync stack bridged into the loop
(:mod:`._sync_stream`: grpc.aio would wake this loop for every grpc.aio completion of the
application's). Protocol rules followed:

- Envoy's xDS protocol doc: per type ``version_info`` + ``nonce``; ACK carries the new
  version, NACK the previous one plus ``error_detail``; LDS/CDS are full state, so a
  resource missing from an accepted response that provably answered a request naming it
  is deleted (or, never received, does not exist: see :mod:`._answered`); a requested
  resource that never arrives is reported does-not-exist ``resource_timeout`` (15 s)
  after the request naming it was written, counted only while the stream is up.
- xRFC TP3 / gRFC A88: a ``resource_errors`` entry with NOT_FOUND is a definitive
  does-not-exist; other codes are data errors (a cached value keeps serving).
- gRFC A46-style partial acceptance: the valid resources of a response are applied even
  when others in it are invalid; the NACK names each invalid one. A rejected response
  deletes nothing and declares nothing absent.
- Requests are coalesced: the subscription of a type is written once per turn of the
  loop however many watches changed it, and each request is built from the current
  state when the stream takes it, so an ACK carries the current list once.
- Resources whose bytes did not change since the previous response are not decoded
  again.
- gRFC A57: cached resources survive stream failures; the client reconnects with
  jittered exponential backoff and re-subscribes with its last versions (no nonce).
- gRFC A71: the first reachable server of ``xds_servers`` in order; back to a
  higher-priority one as soon as it connects, the cache serving throughout.
- Delta (incremental) ADS: subscribe/unsubscribe diffs, per-resource versions,
  ``removed_resources`` as deletion, ``initial_resource_versions`` on reconnect.
- gRFC A53: ``ignore_resource_deletion`` in server_features keeps deleted resources.
- gRFC A88: an invalid update for a cached resource keeps serving the last good value
  and reports the error to watchers; the rejected version, its error and time are kept
  for the config dump (CSDS ``error_state``) until a valid update replaces them.

Set-but-unsupported fields are logged once per resource version: each resource is parsed
with the response's ``version_info`` (see :mod:`pymesh.xds.resources._warnings`); a
resource whose bytes did not change is not parsed again, so it does not warn again.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import datetime
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from pymesh._gil import short_turns
from pymesh.bootstrap import Bootstrap, XdsServer
from pymesh.errors import (
    MeshClosedError,
    MeshError,
    ResourceDoesNotExistError,
    ResourceInvalid,
    XdsDataError,
    XdsStreamError,
)
from pymesh.server._runner import _on_loop_error as on_loop_error
from pymesh.xds.client._answered import SentRequests
from pymesh.xds.client._backoff import Backoff
from pymesh.xds.client._sync_stream import Connectivity, Stream, StreamEnded, any_change
from pymesh.xds.client._transport import channel_factory, node_to_proto
from pymesh.xds.resources import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, decode
from pymesh.xds.resources._warnings import collecting

__all__ = [
    "CDS",
    "EDS",
    "LDS",
    "RDS",
    "Decoder",
    "ResourceStatus",
    "ResourceWatcher",
    "XdsClient",
    "XdsClientStats",
]

log = logging.getLogger("pymesh.xds.client")

LDS = LISTENER_TYPE
RDS = ROUTE_TYPE
CDS = CLUSTER_TYPE
EDS = ENDPOINT_TYPE
#: Order in which subscriptions are (re)sent on a new stream, as gRPC does.
_TYPE_ORDER = (LDS, RDS, CDS, EDS)
#: Types whose SotW responses carry every subscribed resource (absence = deletion).
_FULL_STATE_TYPES = frozenset({LDS, CDS})
_INVALID_ARGUMENT = 3
_NOT_FOUND = 5
_PERMISSION_DENIED = 7
#: Queued hops (work other threads hand the xDS thread) from which running them takes
#: short GIL turns: a hop is ~10 µs, so fewer run within one turn anyway.
_MANY_HOPS = 50
#: The protocol of the current stream (per server: bootstrap server feature xds_delta).
_SOTW, _DELTA = "sotw", "delta"
#: Default cap on one ADS response (gRPC's own default is 4 MiB, which an Istio-sized
#: CDS or EDS response exceeds; Envoy sets none). Configurable per client.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

#: ``decode(type_url, any_msg) -> (name, value)``, raising ResourceInvalid.
Decoder = Callable[[str, Any], tuple[str, Any]]

T = TypeVar("T")


class ResourceStatus:
    """Client-side status of a resource, as in CSDS."""

    REQUESTED = "REQUESTED"
    ACKED = "ACKED"
    NACKED = "NACKED"
    DOES_NOT_EXIST = "DOES_NOT_EXIST"


class ResourceWatcher(Protocol):
    """Receives updates for one watched resource, on the xDS thread, serially."""

    def on_resource(self, name: str, value: Any) -> None: ...

    def on_error(self, name: str, error: MeshError) -> None: ...

    def on_does_not_exist(self, name: str) -> None: ...


@dataclass
class XdsClientStats:
    """Approximate counters (plain ints, written only on the xDS thread)."""

    connected: int = 0  # 1 while a stream is up
    streams_started: int = 0
    stream_failures: int = 0
    updates: dict[str, int] = field(default_factory=dict)  # resources changed, per type
    acks: dict[str, int] = field(default_factory=dict)
    nacks: dict[str, int] = field(default_factory=dict)
    does_not_exist: int = 0
    deletions_ignored: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # DiscoveryRequests written
    decodes_skipped: int = 0  # resources whose bytes had not changed
    oversize_responses: int = 0  # streams failed by a response over the size limit


@dataclass(eq=False)
class _Resource:
    name: str
    watchers: list[ResourceWatcher] = field(default_factory=list)
    value: Any = None
    has_value: bool = False
    version: str = ""  # version of ``value`` (the last accepted one)
    status: str = ResourceStatus.REQUESTED
    update_time: datetime.datetime | None = None  # when ``value`` was accepted (or deleted)
    # The last rejected update while no valid one has replaced it (CSDS error_state):
    last_error: str | None = None
    error_version: str | None = None
    error_time: datetime.datetime | None = None
    timer: asyncio.TimerHandle | None = None
    raw: tuple[str, bytes] | None = None  # the accepted value's Any (type URL, bytes): CSDS


#: A decoded resource: ``(name, value, None)`` or ``(name or "", None, error)``.
_Decoded = tuple[str, Any, "MeshError | None"]
#: A decoded resource's key: its bytes, with its type URL when not the stream's.
_DecodeKey = bytes | tuple[str, bytes]


@dataclass(eq=False)
class _TypeState:
    type_url: str
    version_info: str = ""
    nonce: str = ""
    resources: dict[str, _Resource] = field(default_factory=dict)
    # A request is owed (subscription changed, or a response to ACK/NACK) and queued.
    dirty: bool = False
    pending_error: status_pb2.Status | None = None  # the NACK the owed request carries
    sent: SentRequests = field(default_factory=SentRequests)  # this stream's requests
    # The last response's resources by their bytes, so unchanged ones are not decoded.
    decoded: dict[_DecodeKey, _Decoded] = field(default_factory=dict)
    # Delta only: the names the server was told on this stream, whether this stream has
    # a request of this type yet, and whether a response awaits its ACK/NACK.
    server_names: set[str] = field(default_factory=set)
    delta_started: bool = False
    ack_owed: bool = False


def _default_decoder(type_url: str, any_msg: Any) -> tuple[str, Any]:
    return decode(type_url, any_msg)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(t: datetime.datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``, as protobuf's JSON mapping writes a Timestamp."""
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z") if t else None


class XdsClient:
    """An ADS (SotW) client for the first server of ``bootstrap``.

    ``resource_timeout`` is the does-not-exist timer (seconds). ``decoder`` turns an
    ``Any`` into ``(name, value)``; it defaults to :func:`pymesh.xds.resources.decode`.
    ``max_message_bytes`` caps one ADS response (256 MiB by default); a larger one fails
    the stream with a logged, counted error that names this setting.
    ``servers`` overrides the bootstrap's top-level ``xds_servers`` (an authority's own
    servers, gRFC A47); ``host`` is a client whose thread this one shares.
    Construction validates the server URI and credentials (BootstrapError).
    """

    def __init__(
        self,
        bootstrap: Bootstrap,
        *,
        resource_timeout: float = 15.0,
        decoder: Decoder | None = None,
        backoff: Backoff | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        servers: tuple[XdsServer, ...] | None = None,
        host: XdsClient | None = None,
    ) -> None:
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, not {max_message_bytes}")
        self.bootstrap = bootstrap
        self.node_id = bootstrap.node.id
        #: The bootstrap's servers in priority order (gRFC A71 fallback), and the one the
        #: current (or last) stream talks to.
        self.servers = servers or tuple(bootstrap.xds_servers)
        self.server = self.servers[0]
        # Another client whose thread and loop this one runs on (xDS federation: every
        # server's stream and all watcher callbacks stay on one thread).
        self._host = host
        self.max_message_bytes = max_message_bytes
        self._channel_factories = [
            channel_factory(
                server,
                source=bootstrap.source,
                path=f"xds_servers[{i}]",
                max_message_bytes=max_message_bytes,
            )
            for i, server in enumerate(self.servers)
        ]
        self._node_proto = node_to_proto(bootstrap.node)
        self.resource_timeout = resource_timeout
        self._decode = decoder or _default_decoder
        self._backoff = backoff or Backoff()
        self.stats = XdsClientStats()
        self._types: dict[str, _TypeState] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._main: asyncio.Task[None] | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        # Per-stream state (only touched on the loop).
        self._send_queue: asyncio.Queue[Any] | None = None
        self._stream_up = False
        self._node_sent = False
        self._connect_error: str | None = None  # set while the server is unreachable
        self._last_stream_error: str | None = None  # why the last stream ended (dump)
        self._send_kind = _SOTW
        # The server whose responses the cached versions came from (delta's
        # initial_resource_versions are only meaningful to that server).
        self._versions_from: str | None = None
        # Separates this client's "warned once per resource version" memory from others'.
        self._warning_source = f"{self.node_id}@{self.server.server_uri}#{id(self)}"
        # Work other threads hand to the xDS thread (watches, cancels, submitted
        # callables), in order. One wake-up of the loop runs all that is queued by then:
        # a burst of first requests subscribes thousands of names at once, which would
        # otherwise be as many wake-ups, each a GIL hand-over.
        self._hops: collections.deque[Callable[[], None]] = collections.deque()
        self._hops_scheduled = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("connected" if self.stats.connected else "idle")
        n = sum(len(t.resources) for t in self._types.values())
        return f"<XdsClient {self.server.server_uri} node={self.node_id!r} {state} resources={n}>"

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the background thread and the ADS stream (idempotent)."""
        with self._start_lock:
            if self._closed:
                raise MeshClosedError("xDS client is closed", node_id=self.node_id)
            if self._thread is not None:
                return
            if self._host is not None:
                self._loop = loop = self._host.loop
                self._thread = self._host._thread
                if self._thread is threading.current_thread():  # from a watcher callback
                    self._main = loop.create_task(self._run())
                    return
                started = concurrent.futures.Future[None]()

                def begin() -> None:
                    self._main = loop.create_task(self._run())
                    started.set_result(None)

                loop.call_soon_threadsafe(begin)
                started.result(30)
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                # If grpc.aio ever runs on this loop (its completion queue is shared by every
                # loop in the process), a completion for a loop that already closed must
                # not print a traceback here.
                loop.set_exception_handler(on_loop_error)
                self._main = loop.create_task(self._run())
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            self._loop = loop
            self._thread = threading.Thread(target=run, name="pymesh-xds", daemon=True)
            self._thread.start()
            ready.wait()

    def close(self, timeout: float = 1.0) -> None:
        """Stop the stream and the thread; returns within about ``timeout`` seconds.

        A client on another client's thread (``host``) stops only its own stream."""
        if self._thread is not None and self._thread is threading.current_thread():
            raise RuntimeError("XdsClient.close() must not be called from a watcher callback")
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        guest = self._host is not None

        async def shutdown() -> None:
            if self._main is not None:
                self._main.cancel()
                with contextlib.suppress(BaseException):
                    await self._main
            self._cancel_timers()
            if guest:
                return
            # Other work on this loop (e.g. DNS refresh tasks) ends with the client.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            loop.stop()

        with contextlib.suppress(RuntimeError):  # loop already stopped
            done = asyncio.run_coroutine_threadsafe(shutdown(), loop)
            if guest:
                with contextlib.suppress(Exception):
                    done.result(timeout)
                return
        thread.join(timeout)

    def __enter__(self) -> XdsClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- public API

    def watch(self, type_url: str, name: str, watcher: ResourceWatcher) -> None:
        """Watch resource ``name`` of ``type_url``; subscribes if it is new.

        If a value (or does-not-exist) is already known, the watcher is told soon,
        on the xDS thread. Safe to call from any thread, including callbacks.
        """
        self.start()
        self._on_loop(lambda: self._watch(type_url, name, watcher))

    def cancel_watch(self, type_url: str, name: str, watcher: ResourceWatcher) -> None:
        """Remove ``watcher``; the last watcher of a resource unsubscribes it."""
        if self._closed or self._loop is None:
            return
        self._on_loop(lambda: self._cancel_watch(type_url, name, watcher))

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the xDS thread (directly when already on it); starts the client."""
        self.start()
        self._on_loop(fn)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The xDS thread's event loop (for code that runs on that thread)."""
        self.start()
        assert self._loop is not None
        return self._loop

    def config_dump(self, *, bodies: bool = False) -> dict[str, Any]:
        """A JSON-able, CSDS-like view: every resource with version, status and error.

        ``bodies`` adds each accepted resource's ``raw`` ``(type_url, bytes)`` (for CSDS;
        not JSON-able)."""
        if self._loop is None or self._closed:
            return self._dump(bodies)
        return self._call(lambda: self._dump(bodies))

    # ----------------------------------------------------------------- loop hops

    def _on_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def _on_loop(self, fn: Callable[[], None]) -> None:
        if self._on_thread():
            fn()
            return
        assert self._loop is not None
        self._hops.append(fn)
        if not self._hops_scheduled:
            self._hops_scheduled = True
            with contextlib.suppress(RuntimeError):  # loop closed: the client is closing
                self._loop.call_soon_threadsafe(self._run_hops)

    def _run_hops(self) -> None:
        """Run the queued hops, and those queued meanwhile, in order; in short GIL turns
        once there are many (a request thread waiting meanwhile gets the GIL soon)."""
        hops = self._hops
        with contextlib.ExitStack() as turns:
            ran = 0
            while True:
                while hops:
                    if ran == _MANY_HOPS:
                        turns.enter_context(short_turns())
                    ran += 1
                    hop = hops.popleft()
                    try:
                        hop()
                    except Exception as e:  # as the loop reports a failed callback
                        assert self._loop is not None
                        self._loop.call_exception_handler(
                            {"message": "xDS client: a queued call failed", "exception": e}
                        )
                # Cleared before the last look: a hop queued after it schedules a run.
                self._hops_scheduled = False
                if not hops:
                    return
                self._hops_scheduled = True

    def _call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        if self._on_thread():
            return fn()
        assert self._loop is not None
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    # ----------------------------------------------------------------- state (loop only)

    def _type(self, type_url: str) -> _TypeState:
        ts = self._types.get(type_url)
        if ts is None:
            ts = self._types[type_url] = _TypeState(type_url)
        return ts

    def _watch(self, type_url: str, name: str, watcher: ResourceWatcher) -> None:
        ts = self._type(type_url)
        res = ts.resources.get(name)
        if res is None:
            res = ts.resources[name] = _Resource(name)
            res.watchers.append(watcher)
            self._request(ts)
            if self._connect_error is not None and not self._stream_up:
                down = self._stream_error(self._connect_error, name)
                asyncio.get_running_loop().call_soon(
                    self._notify_one, watcher, "on_error", name, down
                )
            return
        res.watchers.append(watcher)
        loop = asyncio.get_running_loop()
        if res.has_value:
            loop.call_soon(self._notify_one, watcher, "on_resource", name, res.value)
        elif res.status == ResourceStatus.DOES_NOT_EXIST:
            loop.call_soon(self._notify_one, watcher, "on_does_not_exist", name)
        elif res.last_error is not None:
            err = MeshError(res.last_error, node_id=self.node_id, resource_name=name)
            loop.call_soon(self._notify_one, watcher, "on_error", name, err)

    def _cancel_watch(self, type_url: str, name: str, watcher: ResourceWatcher) -> None:
        ts = self._types.get(type_url)
        res = ts.resources.get(name) if ts else None
        if ts is None or res is None:
            return
        with contextlib.suppress(ValueError):
            res.watchers.remove(watcher)
        if not res.watchers:
            if res.timer is not None:
                res.timer.cancel()
            del ts.resources[name]
            self._request(ts)

    def _notify_one(self, watcher: ResourceWatcher, method: str, *args: Any) -> None:
        try:
            getattr(watcher, method)(*args)
        except Exception:
            log.exception("xDS watcher %r.%s raised", watcher, method)

    def _notify(self, res: _Resource, method: str, *args: Any) -> None:
        for w in list(res.watchers):  # a callback may cancel watches
            self._notify_one(w, method, res.name, *args)

    def _request(self, ts: _TypeState, error: status_pb2.Status | None = None) -> None:
        """Owe the server the current subscription of ``ts`` (an ACK/NACK when a
        response is pending). Coalesced: one request per type is queued, and it is
        built when the stream takes it, from the state at that moment."""
        if error is not None:
            ts.pending_error = error
        if self._send_queue is None or not self._stream_up or ts.dirty:
            return  # already queued, or sent when the next stream starts
        ts.dirty = True
        self._send_queue.put_nowait(ts.type_url)

    def _build_request(self, ts: _TypeState) -> Any:
        """The request owed for ``ts``, as written now; starts its resources' timers."""
        if self._send_kind == _DELTA:
            return self._written(ts, self._delta_request(ts))
        names = frozenset(ts.resources)
        req = discovery_pb2.DiscoveryRequest(
            type_url=ts.type_url,
            version_info=ts.version_info,
            response_nonce=ts.nonce,
            resource_names=sorted(names),
        )
        if ts.type_url in _FULL_STATE_TYPES:
            ts.sent.record(names)
        return self._written(ts, req)

    def _written(self, ts: _TypeState, req: Any) -> Any:
        """What every request of either protocol carries and starts: the owed NACK, the
        node on a stream's first request, the count, the does-not-exist timers."""
        if ts.pending_error is not None:
            req.error_detail.CopyFrom(ts.pending_error)
            ts.pending_error = None
        if not self._node_sent:
            req.node.CopyFrom(self._node_proto)
            self._node_sent = True
        ts.dirty = False
        self.stats.requests[ts.type_url] = self.stats.requests.get(ts.type_url, 0) + 1
        self._start_timers(ts)
        return req

    def _delta_request(self, ts: _TypeState) -> discovery_pb2.DeltaDiscoveryRequest:
        """Delta: the subscription change since the server last heard, plus the ACK/NACK
        of the last response; a stream's first request of a type names every resource
        and the versions already held (initial_resource_versions)."""
        names = set(ts.resources)
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=ts.type_url)
        if not ts.delta_started:
            ts.delta_started = True
            req.resource_names_subscribe.extend(sorted(names))
            if self._versions_from == self.server.server_uri:
                for name, res in ts.resources.items():
                    if res.has_value and res.version:
                        req.initial_resource_versions[name] = res.version
        else:
            req.resource_names_subscribe.extend(sorted(names - ts.server_names))
            req.resource_names_unsubscribe.extend(sorted(ts.server_names - names))
        ts.server_names = names
        if ts.ack_owed:
            req.response_nonce = ts.nonce
            ts.ack_owed = False
        return req

    def _start_timers(self, ts: _TypeState) -> None:
        loop = asyncio.get_running_loop()
        for res in ts.resources.values():
            if res.status == ResourceStatus.REQUESTED and not res.has_value and res.timer is None:
                res.timer = loop.call_later(
                    self.resource_timeout, self._resource_timed_out, ts.type_url, res.name
                )

    def _cancel_timers(self) -> None:
        for ts in self._types.values():
            for res in ts.resources.values():
                if res.timer is not None:
                    res.timer.cancel()
                    res.timer = None

    def _resource_timed_out(self, type_url: str, name: str) -> None:
        res = self._types[type_url].resources.get(name)
        if res is None:
            return
        res.timer = None
        if res.has_value or not self._stream_up:
            return
        log.warning("xDS resource %s %r does not exist (timeout)", type_url, name)
        self._does_not_exist(res)

    def _does_not_exist(self, res: _Resource) -> None:
        """A resource without a value is now known not to exist."""
        if res.timer is not None:
            res.timer.cancel()
            res.timer = None
        res.status = ResourceStatus.DOES_NOT_EXIST
        res.update_time = _now()
        self.stats.does_not_exist += 1
        self._notify(res, "on_does_not_exist")

    # ----------------------------------------------------------------- responses

    def _handle_response(self, resp: discovery_pb2.DiscoveryResponse) -> None:
        """A state-of-the-world response."""
        ts = self._type(resp.type_url)
        ts.nonce = resp.nonce
        version = resp.version_info
        carried, errors = self._apply(ts, resp.resources, None, resp.resource_errors, version)
        if errors:
            self._nack(ts, errors, version)
            return
        if ts.type_url in _FULL_STATE_TYPES:
            proven = ts.sent.answered(carried)
            for name in [n for n in ts.resources if n not in carried and n in proven]:
                self._absent(ts, name, "left out of a full-state response")
        self._ack(ts, version)

    def _handle_delta(self, resp: discovery_pb2.DeltaDiscoveryResponse) -> None:
        """An incremental (delta) response: what changed, with per-resource versions,
        and what was removed. Absence means nothing here."""
        ts = self._type(resp.type_url)
        ts.nonce = resp.nonce
        ts.ack_owed = True
        version = resp.system_version_info
        items = [r for r in resp.resources if r.HasField("resource")]
        _, errors = self._apply(
            ts,
            [r.resource for r in items],
            [r.version for r in items],
            resp.resource_errors,
            version,
        )
        for name in resp.removed_resources:
            self._absent(ts, name, "removed by the xDS server")
        if errors:
            self._nack(ts, errors, version)
        else:
            self._ack(ts, version)

    def _apply(
        self,
        ts: _TypeState,
        resources: Sequence[Any],
        versions: Sequence[str] | None,
        resource_errors: Iterable[Any],
        version: str,
    ) -> tuple[set[str], list[str]]:
        """Decode ``resources`` (Any messages; unchanged bytes are not decoded again),
        apply the valid ones (gRFC A46, also in a response that is NACKed), mark the
        invalid ones, and apply ``resource_errors`` (TP3/A88). ``versions``: each
        resource's version (delta), or None: all are ``version`` (SotW). Returns every
        name the response speaks of, and the NACK lines."""
        type_url = ts.type_url
        valid: dict[str, tuple[Any, int, _DecodeKey]] = {}
        errors: list[str] = []
        carried: set[str] = set()
        decoded: dict[_DecodeKey, _Decoded] = {}
        before = ts.decoded
        subscribed = ts.resources
        skipped = 0
        now = _now()
        acked = ResourceStatus.ACKED
        for i, any_msg in enumerate(resources):
            data = any_msg.value
            any_type = any_msg.type_url
            # A resource's bytes are its key; one under another type URL than the
            # stream's (an error when decoded) is keyed apart.
            key: _DecodeKey = data if any_type == type_url else (any_type, data)
            result = before.get(key)
            if result is None:
                result = self._decode_one(
                    type_url, any_msg, version if versions is None else versions[i]
                )
            else:
                skipped += 1
            decoded[key] = result
            name, value, err = result
            if name:
                carried.add(name)
            if err is None:
                res = subscribed.get(name)
                if (
                    res is not None
                    and res.value is value
                    and res.has_value
                    and res.status is acked
                    and res.last_error is None
                ):
                    # The very value it holds (decoded from the same bytes) and nothing
                    # to clear: a SotW response repeating it (2 999 of 3 000 when one
                    # cluster's endpoints change). Only its version moves on.
                    res.version = version if versions is None else versions[i]
                    res.update_time = now
                    valid.pop(name, None)  # the last of duplicate names wins
                    continue
                valid[name] = (value, i, key)
                continue
            errors.append(str(err.message))
            if name:
                self._mark_invalid(ts, name, err, version if versions is None else versions[i])
        # Only the last response's resources are remembered: bounded by one response
        # (SotW re-sends everything, so that is all that can repeat; delta sends changes).
        ts.decoded = decoded
        self.stats.decodes_skipped += skipped
        not_found: list[str] = []
        for re in resource_errors:
            name = re.resource_name.name
            carried.add(name)
            if re.error_detail.code == _NOT_FOUND:
                not_found.append(name)
            else:
                self._server_error(ts, name, re.error_detail, version)
        for name, (value, i, key) in valid.items():
            res = subscribed.get(name)
            if res is None:
                continue  # not subscribed (any more): ignore, as Envoy does
            # The very bytes the decode cache keeps (no second copy per resource).
            res.raw = key if isinstance(key, tuple) else (type_url, key)
            if res.timer is not None:
                res.timer.cancel()
                res.timer = None
            changed = not res.has_value or res.value != value
            res.value, res.has_value = value, True
            res.status = acked
            res.version = version if versions is None else versions[i]
            res.last_error = res.error_version = res.error_time = None
            res.update_time = now
            if changed:
                self.stats.updates[type_url] = self.stats.updates.get(type_url, 0) + 1
                self._notify(res, "on_resource", value)
        for name in not_found:
            self._absent(ts, name, "the xDS server says it does not exist")
        return carried, errors

    def _nack(self, ts: _TypeState, errors: list[str], version: str) -> None:
        # A rejected response proves nothing about what it left out (gRFC A46 keeps its
        # valid resources, already applied, but deletes and declares nothing).
        self.stats.nacks[ts.type_url] = self.stats.nacks.get(ts.type_url, 0) + 1
        message = "\n".join(errors)
        log.warning("NACK %s version %r: %s", ts.type_url, version, message)
        self._request(ts, status_pb2.Status(code=_INVALID_ARGUMENT, message=message))

    def _ack(self, ts: _TypeState, version: str) -> None:
        self.stats.acks[ts.type_url] = self.stats.acks.get(ts.type_url, 0) + 1
        ts.version_info = version
        self._request(ts)

    def _decode_one(self, type_url: str, any_msg: Any, version: str) -> _Decoded:
        """``(name, value, None)``, or ``(name or "", None, error)``.

        The error's ``message`` is the NACK line: ``resource 'x': field: reason``.
        """
        try:
            with collecting(self._warning_source, version):
                name, value = self._decode(type_url, any_msg)
        except ResourceInvalid as e:
            name = e.resource_name or ""
            what = f"resource {name!r}" if name else f"a resource of type {type_url!r}"
            detail = f"{e.field}: {e.reason}" if e.field else e.reason
            return name, None, self._error(f"{what}: {detail}", name)
        except Exception as e:  # undecodable bytes and the like
            return "", None, self._error(f"resource of type {type_url!r}: cannot decode: {e}")
        return name, value, None

    def _error(self, message: str, name: str | None = None) -> MeshError:
        return MeshError(message, node_id=self.node_id, resource_name=name or None)

    def _stream_error(self, message: str, name: str) -> XdsStreamError:
        return XdsStreamError(message, node_id=self.node_id, resource_name=name)

    def does_not_exist_error(self, type_url: str, name: str) -> ResourceDoesNotExistError:
        """The typed error for resource ``name`` of ``type_url`` not existing."""
        kind = type_url.rsplit(".", 1)[-1]
        return ResourceDoesNotExistError(
            f"xDS {kind} {name!r} does not exist",
            type_url=type_url,
            node_id=self.node_id,
            resource_name=name,
        )

    def _mark_invalid(self, ts: _TypeState, name: str, err: MeshError, version: str) -> None:
        res = ts.resources.get(name)
        if res is None:
            return
        if res.timer is not None:  # the server did answer for it
            res.timer.cancel()
            res.timer = None
        # ``value``, ``version`` and ``update_time`` stay those of the last good update,
        # which keeps serving (gRFC A88); the rejected one is remembered beside them.
        res.status = ResourceStatus.NACKED
        res.last_error = err.message
        res.error_version = version
        res.error_time = _now()
        self._data_error(res, err)

    def _server_error(
        self, ts: _TypeState, name: str, status: status_pb2.Status, version: str
    ) -> None:
        """A ``resource_errors`` entry other than NOT_FOUND (gRFC A88): PERMISSION_DENIED
        is a data error, any other code a transient one; a cached value keeps serving
        unless ``fail_on_data_errors`` drops it (data errors only)."""
        res = ts.resources.get(name)
        if res is None:
            return
        if res.timer is not None:
            res.timer.cancel()
            res.timer = None
        message = f"xDS server error for {name!r}: code {status.code}: {status.message}"
        res.last_error, res.error_version, res.error_time = message, version, _now()
        err = self._error(message, name)
        if status.code == _PERMISSION_DENIED:
            self._data_error(res, err)
        else:
            self._notify(res, "on_error", err)

    def _data_error(self, res: _Resource, err: MeshError) -> None:
        """Tell watchers of a data error; with the server feature ``fail_on_data_errors``
        (gRFC A88) a cached value is dropped first, so they stop using it."""
        if res.has_value and self.server.fail_on_data_errors:
            log.warning("xDS %r: dropping the cached value (fail_on_data_errors)", res.name)
            res.value, res.has_value, res.raw = None, False, None
            err = XdsDataError(err.message, node_id=self.node_id, resource_name=res.name)
        self._notify(res, "on_error", err)

    def _absent(self, ts: _TypeState, name: str, why: str) -> None:
        """The server provably does not have subscribed resource ``name``."""
        res = ts.resources.get(name)
        if res is None:
            return
        if not res.has_value:
            if res.status != ResourceStatus.DOES_NOT_EXIST and res.watchers:
                log.info("xDS %s %r does not exist: %s", ts.type_url, name, why)
                self._does_not_exist(res)
            return
        if self.server.ignore_resource_deletion:
            self.stats.deletions_ignored += 1
            log.warning(
                "xDS server dropped %s %r; keeping it (ignore_resource_deletion)",
                ts.type_url,
                name,
            )
            return
        log.warning("xDS server deleted %s %r (%s)", ts.type_url, name, why)
        res.value, res.has_value, res.raw = None, False, None
        # A rejected version of a resource the server no longer has is moot.
        res.last_error = res.error_version = res.error_time = None
        self._does_not_exist(res)

    # ----------------------------------------------------------------- the stream

    async def _run(self) -> None:
        channels = [make() for make in self._channel_factories]
        loop = asyncio.get_running_loop()
        watches = [Connectivity(c, loop) for c in channels]
        try:
            while True:
                index = await self._reachable(watches)
                self.server = self.servers[index]
                stream = asyncio.ensure_future(self._one_stream(channels[index]))
                if index == 0:
                    received = await stream
                else:
                    # On a fallback server: go back as soon as a better one is reachable.
                    log.warning("xDS: falling back to %s", self.server.server_uri)
                    better = asyncio.ensure_future(self._any_ready(watches[:index]))
                    await asyncio.wait({stream, better}, return_when=asyncio.FIRST_COMPLETED)
                    back = better.done() and not stream.done()
                    better.cancel()
                    if back:
                        log.warning("xDS: a higher-priority server is reachable; leaving %s",
                                    self.server.server_uri)  # fmt: skip
                        stream.cancel()
                        await asyncio.wait({stream})  # its finally closes the call
                        self._cancel_timers()  # the new stream restarts them on its requests
                        continue  # to the better server at once, keeping the cache
                    received = stream.result()
                if received:
                    self._backoff.reset()
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            self._stream_up = False
            self.stats.connected = 0
            await asyncio.gather(*(w.close() for w in watches))

    async def _reachable(self, watches: list[Connectivity]) -> int:
        """The index of the first server in bootstrap order whose channel connects (gRFC
        A71: a server is tried only when every one before it cannot be reached). Pending
        watchers hear once when none can be reached; the cache keeps serving."""
        async with contextlib.AsyncExitStack() as stack:
            for w in watches:
                await stack.enter_async_context(w)
            while True:
                seen = []
                for index, w in enumerate(watches):
                    if await w.connects():
                        self._connect_error = None
                        return index
                    seen.append(w.state)
                if not self._connect_error:
                    uris = ", ".join(s.server_uri for s in self.servers)
                    self._connect_error = f"cannot connect to xDS server {uris}"
                    self._notify_pending(self._connect_error)
                # Each channel retries on its own back-off; wake on the first state change.
                await any_change(watches, seen)

    @staticmethod
    async def _any_ready(watches: list[Connectivity]) -> None:
        """Return once any of ``watches``' channels is READY (each keeps trying)."""
        async with contextlib.AsyncExitStack() as stack:
            for w in watches:
                await stack.enter_async_context(w)
            while not any(w.state == grpc.ChannelConnectivity.READY for w in watches):
                await any_change(watches)

    async def _one_stream(self, channel: grpc.Channel) -> bool:
        """Run one ADS stream until it fails; True if it was healthy (a response came
        and the stream did not end on an oversize response, which would recur)."""
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._send_queue = queue
        self._node_sent = False
        delta = self.server.delta
        self._send_kind = _DELTA if delta else _SOTW
        handle: Callable[[Any], None] = self._handle_delta if delta else self._handle_response

        async def next_request() -> Any | None:
            # Built when grpc is ready to send it: what piled up meanwhile goes as one.
            while True:
                type_url = await queue.get()
                if type_url is None:
                    return None
                ts = self._types.get(type_url)
                if ts is not None and ts.dirty:
                    return self._build_request(ts)

        call = Stream(asyncio.get_running_loop())
        self._stream_up = True
        self.stats.streams_started += 1
        self.stats.connected = 1
        received = False
        try:
            for type_url in self._ordered_types():
                ts = self._types[type_url]
                ts.nonce = ""  # a nonce belongs to the stream that sent it
                ts.dirty = False
                ts.pending_error = None
                ts.sent.reset()
                ts.server_names, ts.delta_started, ts.ack_owed = set(), False, False
                if ts.resources:
                    self._request(ts)
            call.open(
                stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources,
                next_request,
            )
            while True:
                resp = await call.next_response()
                received = True
                self._versions_from = self.server.server_uri
                # Decoding and applying a big response is tens of ms of Python: requests
                # get the GIL in short turns meanwhile (pymesh._gil).
                with short_turns():
                    handle(resp)
        except StreamEnded:
            log.warning("xDS stream to %s closed by the server", self.server.server_uri)
            self._stream_failed("stream closed by the server")
        except grpc.RpcError as e:
            code, details = e.code(), e.details()  # the call is a grpc.Call as well
            if _is_oversize(code, details):
                received = False  # the same response comes back: back off, do not spin
                self.stats.oversize_responses += 1
                reason = (
                    f"an xDS response exceeded max_message_bytes={self.max_message_bytes} "
                    f"({details}); raise it (Mesh(xds_max_message_bytes=...)) or have "
                    "the control plane send less per response"
                )
                log.error("xDS stream to %s: %s", self.server.server_uri, reason)
            else:
                reason = f"{code.name}: {details}"
                log.warning("xDS stream to %s failed: %s", self.server.server_uri, reason)
            self._stream_failed(reason)
        except Exception as e:  # a bug must not kill the client: log, reconnect
            log.exception("xDS stream to %s: unexpected error", self.server.server_uri)
            self._stream_failed(f"internal error: {e!r}")
        finally:
            self._stream_up = False
            self.stats.connected = 0
            self._send_queue = None
            queue.put_nowait(None)
            call.close()
        return received

    def _ordered_types(self) -> Iterable[str]:
        known = [t for t in _TYPE_ORDER if t in self._types]
        return known + [t for t in self._types if t not in _TYPE_ORDER]

    def _stream_failed(self, reason: str) -> None:
        self.stats.stream_failures += 1
        self._stream_up = False
        self._last_stream_error = reason
        self._cancel_timers()
        self._notify_pending(f"xDS stream to {self.server.server_uri} failed: {reason}")

    def _notify_pending(self, message: str) -> None:
        # gRFC A88: resources without a value learn about the failure; cached ones keep
        # serving silently.
        for ts in self._types.values():
            for res in ts.resources.values():
                if not res.has_value and res.status == ResourceStatus.REQUESTED:
                    self._notify(res, "on_error", self._stream_error(message, res.name))

    # ----------------------------------------------------------------- dump

    def _dump(self, bodies: bool = False) -> dict[str, Any]:
        resources = []
        types = {}
        for type_url, ts in self._types.items():
            types[type_url] = {"version_info": ts.version_info, "nonce": ts.nonce}
            for res in ts.resources.values():
                row: dict[str, Any] = {
                    "type_url": type_url,
                    "name": res.name,
                    "version": res.version,
                    "status": res.status,
                    "update_time": _iso(res.update_time),
                    "last_error": res.last_error,
                    "error_version": res.error_version,
                    "error_time": _iso(res.error_time),
                }
                if bodies and res.has_value:
                    row["raw"] = res.raw
                resources.append(row)
        return {
            "node_id": self.node_id,
            "server_uri": self.server.server_uri,
            "connected": bool(self.stats.connected),
            "last_stream_error": self._last_stream_error,
            "protocol": self._send_kind,  # "sotw" or "delta" (server feature xds_delta)
            "types": types,
            "resources": resources,
        }


def _is_oversize(code: grpc.StatusCode, details: str | None) -> bool:
    """A response over the channel's receive limit (grpc reports RESOURCE_EXHAUSTED)."""
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (details or "")
