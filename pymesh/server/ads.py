"""The ADS servicer: state-of-the-world and delta xDS, one asyncio coroutine per stream.

Protocol (Envoy's xDS protocol doc): per stream and per type URL the client sends a
subscription (``resource_names``; empty means wildcard for LDS and CDS); the server answers
with ``version_info`` and a fresh ``nonce``. A request echoing the latest nonce is an ACK,
or a NACK when it carries ``error_detail``; one echoing an older nonce is stale and
ignored. The server pushes when the node's snapshot changes, never resends a version the
client already ACKed or NACKed for an unchanged subscription, and only sends resources the
client subscribed to (all of them for a wildcard). Every explicitly subscribed name the
snapshot lacks is reported in ``resource_errors`` as NOT_FOUND (xRFC TP3, gRFC A88), in
every response for that type, so a client knows it does not exist without a timer.

The protocol state of one stream (:class:`SotwStream`, or
:class:`pymesh.server.delta.DeltaStream` for delta) is sans-I/O: it turns requests and
"the snapshot changed" into responses. The servicer is grpc.aio: a stream is a coroutine,
not a thread, so one server holds thousands of them, and a snapshot change is one
``call_soon_threadsafe`` that wakes every affected stream.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2  # type: ignore[import-untyped, unused-ignore]
from google.rpc import code_pb2, status_pb2

from pymesh.server.cache import SnapshotCache
from pymesh.server.snapshot import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Snapshot,
)

__all__ = ["AckRecord", "AdsServicer", "NackRecord", "SotwStream", "not_found"]

_log = logging.getLogger(__name__)
#: Types where an empty first subscription means "everything" (legacy wildcard).
WILDCARD_TYPES = frozenset({LISTENER_TYPE, CLUSTER_TYPE})
#: How many ACK/NACK records the control plane keeps (a long-running server must not grow
#: without bound; tests and tools only look at recent ones).
RECORD_LIMIT = 100_000


@dataclass(frozen=True)
class AckRecord:
    """A client accepted ``version`` of ``type_url``.

    ``not_found``: the names the accepted response reported as NOT_FOUND.
    """

    type_url: str
    node_id: str
    version: str
    nonce: str
    not_found: frozenset[str] = frozenset()


@dataclass(frozen=True)
class NackRecord:
    """A client rejected ``version`` of ``type_url``; ``message`` is its error_detail.

    ``not_found``: the names the rejected response reported as NOT_FOUND.
    """

    type_url: str
    node_id: str
    version: str
    nonce: str
    message: str
    not_found: frozenset[str] = frozenset()


class _Records:
    """ACK/NACK log shared by all streams, with a condition for (threaded) waiters."""

    def __init__(self, limit: int = RECORD_LIMIT) -> None:
        self.cond = threading.Condition()
        self.acks: collections.deque[AckRecord] = collections.deque(maxlen=limit)
        self.nacks: collections.deque[NackRecord] = collections.deque(maxlen=limit)

    def add(self, rec: AckRecord | NackRecord) -> None:
        with self.cond:
            if isinstance(rec, NackRecord):
                self.nacks.append(rec)
            else:
                self.acks.append(rec)
            self.cond.notify_all()


def not_found(names: Iterable[str], type_url: str) -> list[discovery_pb2.ResourceError]:
    """``ResourceError`` NOT_FOUND entries (xRFC TP3) for ``names``, sorted for stable output."""
    kind = type_url.rsplit(".", 1)[-1]
    return [
        discovery_pb2.ResourceError(
            resource_name=discovery_pb2.ResourceName(name=n),
            error_detail=status_pb2.Status(
                code=code_pb2.NOT_FOUND,
                message=f"{kind} {n!r} does not exist on this control plane",
            ),
        )
        for n in sorted(names)
    ]


@dataclass
class _TypeState:
    """Per stream, per type URL: what the client wants and what it was last sent."""

    wildcard: bool = False
    names: frozenset[str] = frozenset()
    explicit: bool = False  # the client once named resources: empty no longer means wildcard
    sent_version: str | None = None
    sent_subscription: tuple[bool, frozenset[str]] | None = None
    sent_not_found: frozenset[str] = frozenset()
    nonce: str = ""


@dataclass
class SotwStream:
    """The state-of-the-world protocol of one ADS stream (sans-I/O)."""

    cache: SnapshotCache
    records: _Records
    nonces: Iterator[int]
    node_id: str = ""
    types: dict[str, _TypeState] = field(default_factory=dict)

    def on_request(
        self, req: discovery_pb2.DiscoveryRequest
    ) -> discovery_pb2.DiscoveryResponse | None:
        """Handle one request; returns the response to send, if any."""
        if req.node.id and not self.node_id:
            self.node_id = req.node.id
        url = req.type_url
        st = self.types.setdefault(url, _TypeState())
        # A nonce is only checked once this stream sent this type something: a reconnecting
        # client may echo a nonce from its previous stream (go-control-plane does the same).
        if req.response_nonce and st.nonce:
            if req.response_nonce != st.nonce:
                return None  # stale: answers an older response; a newer one is in flight
            if req.HasField("error_detail"):
                msg = req.error_detail.message
                _log.warning("NACK from %s for %s: %s", self.node_id, url, msg)
                self.records.add(
                    NackRecord(
                        url, self.node_id, st.sent_version or "", st.nonce, msg, st.sent_not_found
                    )
                )
            else:
                self.records.add(
                    AckRecord(url, self.node_id, req.version_info, st.nonce, st.sent_not_found)
                )
        names = frozenset(req.resource_names)
        if names - {"*"}:
            st.explicit = True
        st.wildcard = "*" in names or (not names and url in WILDCARD_TYPES and not st.explicit)
        st.names = names - {"*"}
        return self._maybe_respond(url, st)

    def on_change(self) -> Iterator[discovery_pb2.DiscoveryResponse]:
        """The node's snapshot may have changed: responses for every type it changed.

        In the order Envoy's xDS protocol doc asks of a server (CDS, EDS, LDS, RDS, then
        the rest), one at a time: a type's response is built only when the one before it
        was sent, so the type that changed goes out first and is not held up by working
        out that the others did not."""
        for url in sorted(self.types, key=_push_order):
            resp = self._maybe_respond(url, self.types[url])
            if resp is not None:
                yield resp

    def _maybe_respond(self, url: str, st: _TypeState) -> discovery_pb2.DiscoveryResponse | None:
        served = self.cache.served(self.node_id)
        if served is None:
            return None
        subscription = (st.wildcard, st.names)
        version = served.type_version(url)
        if st.sent_subscription == subscription and st.sent_version == version:
            return None  # nothing new for this client: ACK/NACK of the current state
        snap = served.snapshot
        resources = _select(snap, url, None if st.wildcard else st.names)
        st.sent_version, st.sent_subscription = version, subscription
        st.sent_not_found = frozenset(n for n in st.names if n not in snap.get(url))
        st.nonce = str(next(self.nonces))
        return discovery_pb2.DiscoveryResponse(
            version_info=version,
            resources=resources,
            type_url=url,
            nonce=st.nonce,
            resource_errors=not_found(st.sent_not_found, url),
        )


#: Envoy's recommended push order (xDS protocol doc, "eventual consistency
#: considerations"): clusters before their endpoints, both before listeners and routes.
_PUSH_ORDER = {CLUSTER_TYPE: 0, ENDPOINT_TYPE: 1, LISTENER_TYPE: 2, ROUTE_TYPE: 3}


def _push_order(url: str) -> int:
    return _PUSH_ORDER.get(url, len(_PUSH_ORDER))


def _select(snap: Snapshot, url: str, names: frozenset[str] | None) -> list[any_pb2.Any]:
    packed = snap.packed(url)
    if names is None:
        return list(packed.values())
    return [a for name, a in packed.items() if name in names]


class _Protocol(Protocol):
    """What the servicer needs of a stream's protocol state (SotW or delta)."""

    node_id: str

    def on_request(self, req: Any) -> Any | None: ...

    def on_change(self) -> Iterable[Any]: ...


_END = object()
_CHANGED = object()


class _Inbox:
    """One stream's queue: requests in arrival order, plus at most one pending wake-up."""

    __slots__ = ("changed", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.changed = False

    def wake(self) -> None:
        # Coalesced: ten snapshot changes before the stream runs are one recomputation.
        if not self.changed:
            self.changed = True
            self.queue.put_nowait(_CHANGED)


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """AggregatedDiscoveryService (SotW and delta) on grpc.aio, backed by a SnapshotCache.

    Must be used from one event loop: :meth:`attach` binds it to the running loop and
    registers one cache watcher that fans a change out to the affected streams.
    """

    def __init__(self, cache: SnapshotCache, records: _Records | None = None) -> None:
        self.cache = cache
        self.records = records or _Records()
        self._nonces = itertools.count(1)
        self._streams: dict[_Inbox, _Protocol] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cancel_watch: Callable[[], None] | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start following the cache; changes are delivered on ``loop``."""
        self._loop = loop

        def watcher(node_id: str | None) -> None:
            # Called on whichever thread set the snapshot; the streams live on the loop.
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._changed, node_id)

        self._cancel_watch = self.cache.watch(watcher)

    def detach(self) -> None:
        """Stop following the cache."""
        if self._cancel_watch is not None:
            self._cancel_watch()
            self._cancel_watch = None

    @property
    def stream_count(self) -> int:
        """Open ADS streams (SotW and delta)."""
        return len(self._streams)

    def _changed(self, node_id: str | None) -> None:
        for inbox, proto in self._streams.items():
            # None: the default changed, which every node without its own snapshot sees;
            # cheaper to recompute than to ask the cache per stream (a no-op when unchanged).
            if node_id is None or not proto.node_id or proto.node_id == node_id:
                inbox.wake()

    async def _serve(
        self, proto: _Protocol, request_iterator: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        inbox = _Inbox()

        async def read() -> None:
            try:
                async for req in request_iterator:
                    inbox.queue.put_nowait(req)
            except Exception as e:  # the stream broke: treat as disconnect
                _log.debug("ADS stream read ended: %s", e)
            finally:
                inbox.queue.put_nowait(_END)

        reader = asyncio.ensure_future(read())
        self._streams[inbox] = proto
        try:
            while True:
                item = await inbox.queue.get()
                if item is _END:
                    return
                if item is _CHANGED:
                    inbox.changed = False
                    for resp in proto.on_change():
                        yield resp
                    continue
                resp = proto.on_request(item)
                if resp is not None:
                    yield resp
        finally:
            self._streams.pop(inbox, None)
            reader.cancel()

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """The state-of-the-world ADS stream."""
        proto = SotwStream(self.cache, self.records, self._nonces)
        async for resp in self._serve(proto, request_iterator):
            yield resp

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        """The incremental (delta) ADS stream."""
        from pymesh.server.delta import DeltaStream  # delta imports this module

        proto = DeltaStream(self.cache, self.records, self._nonces)
        async for resp in self._serve(proto, request_iterator):
            yield resp
