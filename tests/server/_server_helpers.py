"""A tiny real ADS client for the server tests: a grpc stub fed by a queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2  # type: ignore[import-untyped, unused-ignore]
from google.rpc import status_pb2

from pymesh.server import Snapshot
from pymesh.server.config_file import http_connection_manager

TIMEOUT = 20.0
_END = object()


class _Stream:
    """One ADS stream fed by a queue: what the SotW and delta clients share."""

    def __init__(self, address: str, node_id: str, method: str) -> None:
        self.node_id = node_id
        self.channel = grpc.insecure_channel(address)
        self._out: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._in: queue.SimpleQueue[object] = queue.SimpleQueue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self._call = getattr(stub, method)(self._requests())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._first = True

    def _requests(self) -> Iterator[object]:
        while True:
            item = self._out.get()
            if item is _END:
                return
            yield item

    def _read(self) -> None:
        try:
            for resp in self._call:
                self._in.put(resp)
        except grpc.RpcError as e:
            self._in.put(e)
        self._in.put(_END)

    def _put(self, req: Any, error: str | None) -> None:
        """Queue ``req``: the node only on the first request (like real clients), and
        ``error`` as a NACK's error_detail."""
        if self._first:
            req.node.CopyFrom(base_pb2.Node(id=self.node_id, cluster="test"))
            self._first = False
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._out.put(req)

    def close(self) -> None:
        self._out.put(_END)
        self._call.cancel()
        self.channel.close()


class AdsClient(_Stream):
    """One ADS stream; ``send`` requests, ``recv`` responses (bounded waits, no sleeps)."""

    def __init__(self, address: str, node_id: str = "test-node") -> None:
        super().__init__(address, node_id, "StreamAggregatedResources")

    def send(
        self,
        type_url: str,
        names: list[str] | tuple[str, ...] = (),
        *,
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            version_info=version,
            response_nonce=nonce,
        )
        self._put(req, error)

    def ack(self, resp: discovery_pb2.DiscoveryResponse, names: tuple[str, ...] = ()) -> None:
        self.send(resp.type_url, names, version=resp.version_info, nonce=resp.nonce)

    def recv(self, timeout: float = TIMEOUT) -> discovery_pb2.DiscoveryResponse:
        item = self._in.get(timeout=timeout)
        assert isinstance(item, discovery_pb2.DiscoveryResponse), item
        return item

    def wait_closed(self, timeout: float = TIMEOUT) -> object:
        """Wait for the stream to end; returns the RpcError or the end marker."""
        while True:
            item = self._in.get(timeout=timeout)
            if not isinstance(item, discovery_pb2.DiscoveryResponse):
                return item


class DeltaClient(_Stream):
    """One delta ADS stream (``DeltaAggregatedResources``); same shape as AdsClient."""

    def __init__(self, address: str, node_id: str = "test-node") -> None:
        super().__init__(address, node_id, "DeltaAggregatedResources")

    def send(
        self,
        type_url: str,
        subscribe: tuple[str, ...] | list[str] = (),
        unsubscribe: tuple[str, ...] | list[str] = (),
        *,
        nonce: str = "",
        error: str | None = None,
        initial: dict[str, str] | None = None,
    ) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
            initial_resource_versions=initial or {},
        )
        self._put(req, error)

    def ack(self, resp: discovery_pb2.DeltaDiscoveryResponse) -> None:
        self.send(resp.type_url, nonce=resp.nonce)

    def recv(self, timeout: float = TIMEOUT) -> discovery_pb2.DeltaDiscoveryResponse:
        item = self._in.get(timeout=timeout)
        assert isinstance(item, discovery_pb2.DeltaDiscoveryResponse), item
        return item


def delta_view(resp: discovery_pb2.DeltaDiscoveryResponse) -> tuple[dict[str, str], list[str]]:
    """({resource name: version} sent, removed names) of a delta response."""
    return {r.name: r.version for r in resp.resources}, list(resp.removed_resources)


def names_of(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    """Resource names in a response (listeners/routes/clusters by name)."""
    out = []
    for a in resp.resources:
        assert isinstance(a, any_pb2.Any)
        if a.type_url.endswith("Listener"):
            msg: object = listener_pb2.Listener.FromString(a.value)
        elif a.type_url.endswith("RouteConfiguration"):
            msg = route_pb2.RouteConfiguration.FromString(a.value)
        else:
            raise AssertionError(a.type_url)
        out.append(msg.name)  # type: ignore[attr-defined]
    return sorted(out)


def errors_of(
    resp: discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse,
) -> dict[str, int]:
    """``resource_errors`` of a response as {resource name: status code}."""
    return {e.resource_name.name: e.error_detail.code for e in resp.resource_errors}


def stamped_snapshot(version: str, *route_names: str) -> Snapshot:
    """:func:`simple_snapshot` whose content changes with the version."""
    return simple_snapshot(version, *route_names, stamped=True)


def simple_snapshot(version: str, *route_names: str, stamped: bool = False) -> Snapshot:
    """Listeners ``name`` → RDS ``name``, each route config with no routes.

    ``stamped``: the version is in each resource too (listener stat_prefix, virtual host
    name), so two versions differ in content; a state-of-the-world server resends only
    the types a snapshot changed. Otherwise the content depends on the names alone.
    """
    tag = f"v{version}" if stamped else ""
    listeners = [
        listener_pb2.Listener(
            name=n,
            stat_prefix=tag,
            api_listener=api_listener_pb2.ApiListener(api_listener=_pack_hcm(n)),
        )
        for n in route_names
    ]
    routes = [
        route_pb2.RouteConfiguration(
            name=n,
            virtual_hosts=[route_components_pb2.VirtualHost(name=n + tag, domains=["*"])],
        )
        for n in route_names
    ]
    return Snapshot.of(version, listeners=listeners, routes=routes)


def _pack_hcm(name: str) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(http_connection_manager(name))
    return a
