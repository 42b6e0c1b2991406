"""The ADS servicer: state-of-the-world xDS over one bidi stream per client.

Protocol (Envoy's xDS protocol doc): per stream and per type URL the client sends a
subscription (``resource_names``; empty means wildcard for LDS and CDS); the server answers
with ``version_info`` and a fresh ``nonce``. A request echoing the latest nonce is an ACK,
or a NACK when it carries ``error_detail``; one echoing an older nonce is stale and
ignored. The server pushes when the node's snapshot changes, never resends a version the
client already ACKed or NACKed for an unchanged subscription, and only sends resources the
client subscribed to (all of them for a wildcard).

grpcio's thread-pool server runs the handler as a generator; a reader thread and the
cache's watcher feed one queue, so the generator blocks on a single ``Queue.get``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2  # type: ignore[import-untyped, unused-ignore]

from pymesh.server.cache import SnapshotCache
from pymesh.server.snapshot import CLUSTER_TYPE, LISTENER_TYPE, Snapshot

__all__ = ["AckRecord", "AdsServicer", "NackRecord"]

_log = logging.getLogger(__name__)
_WILDCARD_TYPES = frozenset({LISTENER_TYPE, CLUSTER_TYPE})
_NOT_FOUND = 5  # google.rpc.Code


@dataclass(frozen=True)
class AckRecord:
    """A client accepted ``version`` of ``type_url``."""

    type_url: str
    node_id: str
    version: str
    nonce: str


@dataclass(frozen=True)
class NackRecord:
    """A client rejected ``version`` of ``type_url``; ``message`` is its error_detail."""

    type_url: str
    node_id: str
    version: str
    nonce: str
    message: str


class _Records:
    """ACK/NACK log shared by all streams, with a condition for waiters."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.acks: list[AckRecord] = []
        self.nacks: list[NackRecord] = []

    def add(self, rec: AckRecord | NackRecord) -> None:
        with self.cond:
            if isinstance(rec, NackRecord):
                self.nacks.append(rec)
            else:
                self.acks.append(rec)
            self.cond.notify_all()


@dataclass
class _TypeState:
    """Per stream, per type URL: what the client wants and what it was last sent."""

    wildcard: bool = False
    names: frozenset[str] = frozenset()
    explicit: bool = False  # the client once named resources: empty no longer means wildcard
    sent_version: str | None = None
    sent_names: frozenset[str] | None = None
    nonce: str = ""


_END = object()
_CHANGED = object()


@dataclass
class _Stream:
    cache: SnapshotCache
    records: _Records
    nonces: Iterator[int]
    node_id: str = ""
    types: dict[str, _TypeState] = field(default_factory=dict)

    def on_request(
        self, req: discovery_pb2.DiscoveryRequest
    ) -> discovery_pb2.DiscoveryResponse | None:
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
                    NackRecord(url, self.node_id, st.sent_version or "", st.nonce, msg)
                )
            else:
                self.records.add(AckRecord(url, self.node_id, req.version_info, st.nonce))
        names = frozenset(req.resource_names)
        if names - {"*"}:
            st.explicit = True
        st.wildcard = "*" in names or (not names and url in _WILDCARD_TYPES and not st.explicit)
        st.names = names - {"*"}
        return self._maybe_respond(url, st)

    def on_change(self) -> list[discovery_pb2.DiscoveryResponse]:
        out = []
        for url, st in self.types.items():
            resp = self._maybe_respond(url, st)
            if resp is not None:
                out.append(resp)
        return out

    def _maybe_respond(self, url: str, st: _TypeState) -> discovery_pb2.DiscoveryResponse | None:
        snap = self.cache.get_snapshot(self.node_id)
        if snap is None:
            return None
        subscribed = None if st.wildcard else st.names
        if st.sent_version == snap.version and st.sent_names == subscribed:
            return None  # nothing new for this client: ACK/NACK of the current state
        resources = _select(snap, url, subscribed)
        st.sent_version, st.sent_names = snap.version, subscribed
        st.nonce = str(next(self.nonces))
        resp = discovery_pb2.DiscoveryResponse(
            version_info=snap.version,
            resources=resources,
            type_url=url,
            nonce=st.nonce,
        )
        if subscribed:
            # xRFC TP3 / gRFC A88: say which subscribed names do not exist, so a client
            # knows at once instead of after its does-not-exist timer.
            packed = snap.packed(url)
            for name in sorted(subscribed - packed.keys()):
                err = resp.resource_errors.add()
                err.resource_name.name = name
                err.error_detail.code = _NOT_FOUND
                err.error_detail.message = f"{name!r} is not in snapshot {snap.version!r}"
        return resp


def _select(snap: Snapshot, url: str, names: frozenset[str] | None) -> list[any_pb2.Any]:
    packed = snap.packed(url)
    if names is None:
        return list(packed.values())
    return [a for name, a in packed.items() if name in names]


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """AggregatedDiscoveryService (SotW) backed by a :class:`SnapshotCache`."""

    def __init__(self, cache: SnapshotCache, records: _Records | None = None) -> None:
        self.cache = cache
        self.records = records or _Records()
        self._nonces = itertools.count(1)
        self._streams_lock = threading.Lock()
        self._wakers: set[Callable[[], None]] = set()

    def close_streams(self) -> None:
        """End every open stream (used on server stop)."""
        with self._streams_lock:
            wakers = list(self._wakers)
        for w in wakers:
            w()

    def StreamAggregatedResources(
        self, request_iterator: Iterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> Iterator[discovery_pb2.DiscoveryResponse]:
        """The bidi ADS stream."""
        inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        stream = _Stream(self.cache, self.records, self._nonces)

        def end() -> None:
            inbox.put(_END)

        def read() -> None:
            try:
                for req in request_iterator:
                    inbox.put(req)
            except Exception as e:  # the stream broke: treat as disconnect
                _log.debug("ADS stream read ended: %s", e)
            finally:
                inbox.put(_END)

        cancel_watch = self.cache.watch(lambda _node: inbox.put(_CHANGED))
        context.add_callback(end)
        with self._streams_lock:
            self._wakers.add(end)
        threading.Thread(target=read, name="pymesh-ads-reader", daemon=True).start()
        try:
            while True:
                item = inbox.get()
                if item is _END:
                    return
                if item is _CHANGED:
                    yield from stream.on_change()
                    continue
                assert isinstance(item, discovery_pb2.DiscoveryRequest)
                resp = stream.on_request(item)
                if resp is not None:
                    yield resp
        finally:
            cancel_watch()
            with self._streams_lock:
                self._wakers.discard(end)
