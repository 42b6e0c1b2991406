"""Incremental (delta) ADS: the protocol state of one ``DeltaAggregatedResources`` stream.

Envoy's xDS protocol doc, "Incremental xDS": per type URL the client subscribes and
unsubscribes names (``*`` is the wildcard; for LDS and CDS a first request naming nothing
is the legacy wildcard, which later named subscriptions do not cancel). The server sends
only resources whose version the client does not have, each as a ``Resource`` with its own
version (a content hash, :meth:`Snapshot.resource_versions`), and names deleted ones in
``removed_resources``. A subscribed name the snapshot lacks is put in ``removed_resources``
(the delta way to say "does not exist") and in ``resource_errors`` as NOT_FOUND (xRFC TP3).

``initial_resource_versions`` on a stream's first request for a type says what a
reconnecting client already has: those are not resent unless changed, and ones since
deleted are removed. Every response has a fresh nonce; a request echoing one is its ACK,
or NACK with ``error_detail``. A NACKed version is not resent (the client keeps what it
had); the next change is. Subscription changes are honoured whatever the nonce (the doc
says a delta server must not drop them as stale).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from pymesh.server.ads import WILDCARD_TYPES, AckRecord, NackRecord, _Records, not_found
from pymesh.server.cache import SnapshotCache

__all__ = ["DeltaStream"]

_log = logging.getLogger(__name__)
# Responses a client has not answered yet, per type; a well-behaved client answers each,
# this only bounds a client that never does.
_MAX_PENDING = 64


@dataclass
class _Sent:
    """What one delta response carried, for its ACK/NACK record."""

    version: str
    not_found: frozenset[str]


@dataclass
class _DeltaTypeState:
    """Per stream, per type URL: the subscription and what the client holds."""

    started: bool = False
    wildcard: bool = False
    names: set[str] = field(default_factory=set)  # explicit subscriptions, without "*"
    known: dict[str, str] = field(default_factory=dict)  # name -> version the client has
    absent: set[str] = field(default_factory=set)  # told "does not exist", still subscribed
    force_removed: set[str] = field(default_factory=set)
    pending: dict[str, _Sent] = field(default_factory=dict)  # nonce -> what it carried


@dataclass
class DeltaStream:
    """The incremental protocol of one ADS stream (sans-I/O)."""

    cache: SnapshotCache
    records: _Records
    nonces: Iterator[int]
    node_id: str = ""
    types: dict[str, _DeltaTypeState] = field(default_factory=dict)

    def on_request(
        self, req: discovery_pb2.DeltaDiscoveryRequest
    ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        """Handle one request; returns the response to send, if any."""
        if req.node.id and not self.node_id:
            self.node_id = req.node.id
        url = req.type_url
        st = self.types.setdefault(url, _DeltaTypeState())
        if req.response_nonce:
            self._answer(url, st, req)
        subscribe, unsubscribe = list(req.resource_names_subscribe), req.resource_names_unsubscribe
        first = not st.started
        if first:
            st.started = True
            st.known = dict(req.initial_resource_versions)
            # Legacy wildcard: a first request for LDS/CDS that names nothing at all.
            st.wildcard = url in WILDCARD_TYPES and not subscribe and not unsubscribe
        for name in subscribe:
            if name == "*":
                st.wildcard = True
                continue
            st.names.add(name)
            # A (re)subscribed name is always sent: the client may have forgotten it. Only
            # the versions a reconnecting client declares on its first request are trusted.
            if not (first and name in req.initial_resource_versions):
                st.known.pop(name, None)
            st.absent.discard(name)
        for name in unsubscribe:
            self._unsubscribe(url, st, name)
        return self._maybe_respond(url, st)

    def on_change(self) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        """The node's snapshot may have changed: responses for every type that needs one."""
        out = []
        for url, st in self.types.items():
            resp = self._maybe_respond(url, st)
            if resp is not None:
                out.append(resp)
        return out

    def _answer(
        self, url: str, st: _DeltaTypeState, req: discovery_pb2.DeltaDiscoveryRequest
    ) -> None:
        nonce = req.response_nonce
        sent = st.pending.pop(nonce, None)
        if sent is None:
            return  # not ours on this stream (e.g. from a previous stream): nothing to record
        if req.HasField("error_detail"):
            msg = req.error_detail.message
            _log.warning("delta NACK from %s for %s: %s", self.node_id, url, msg)
            self.records.add(
                NackRecord(url, self.node_id, sent.version, nonce, msg, sent.not_found)
            )
        else:
            self.records.add(AckRecord(url, self.node_id, sent.version, nonce, sent.not_found))

    def _unsubscribe(self, url: str, st: _DeltaTypeState, name: str) -> None:
        if name == "*":
            st.wildcard = False
            # The client drops what it had only through the wildcard.
            for n in [n for n in st.known if n not in st.names]:
                del st.known[n]
            return
        if name not in st.names:
            return  # a phantom unsubscription: ignored, as the doc allows
        st.names.discard(name)
        st.absent.discard(name)
        if not st.wildcard:
            st.known.pop(name, None)
            return
        # Wildcard plus this name: the client cannot tell whether the wildcard still covers
        # it, so it must get either the resource again or a removal (protocol doc).
        st.known.pop(name, None)
        snap = self.cache.get_snapshot(self.node_id)
        if snap is None or name not in snap.get(url):
            st.force_removed.add(name)

    def _maybe_respond(
        self, url: str, st: _DeltaTypeState
    ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        snap = self.cache.get_snapshot(self.node_id)
        if snap is None:
            return None
        current = snap.get(url)
        versions = snap.resource_versions(url)
        packed = snap.packed(url)
        scope = set(st.names)
        if st.wildcard:
            scope.update(current)
        resources = []
        for name in sorted(scope):
            version = versions.get(name)
            if version is not None and st.known.get(name) != version:
                resources.append(
                    discovery_pb2.Resource(name=name, version=version, resource=packed[name])
                )
                st.known[name] = version
                st.absent.discard(name)
        removed = set(st.force_removed)
        st.force_removed.clear()
        for name in [n for n in st.known if n not in current]:
            del st.known[name]  # deleted from the snapshot (or never there)
            removed.add(name)
        missing = {n for n in st.names if n not in current and n not in st.absent}
        removed |= missing
        # NOT_FOUND for every explicit name this response removes (new or deleted).
        errors = frozenset(n for n in removed if n in st.names)
        st.absent |= errors
        if not resources and not removed:
            return None
        nonce = str(next(self.nonces))
        st.pending[nonce] = _Sent(snap.version, errors)
        while len(st.pending) > _MAX_PENDING:
            del st.pending[next(iter(st.pending))]
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=snap.version,
            resources=resources,
            type_url=url,
            removed_resources=sorted(removed),
            nonce=nonce,
            resource_errors=not_found(errors, url),
        )
