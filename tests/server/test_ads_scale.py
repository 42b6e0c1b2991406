"""One control plane holds 1 000 concurrent ADS streams without a thread each, and a
snapshot change reaches every one of them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import grpc
from _server_helpers import simple_snapshot
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from pymesh.server import LISTENER_TYPE, ControlPlane

STREAMS = 1000
CHANNELS = 10  # several connections, as separate clients would have
TIMEOUT = 90.0


class _Client:
    """One lightweight SotW stream: subscribe to all listeners, ACK every response."""

    def __init__(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, i: int) -> None:
        self.out: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self.versions: asyncio.Queue[str] = asyncio.Queue()
        self.node = f"scale-{i}"
        self.call = stub.StreamAggregatedResources(self._requests())
        self.task = asyncio.ensure_future(self._read())

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        yield discovery_pb2.DiscoveryRequest(
            type_url=LISTENER_TYPE, node=base_pb2.Node(id=self.node)
        )
        while (req := await self.out.get()) is not None:
            yield req

    async def _read(self) -> None:
        async for resp in self.call:
            self.out.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    type_url=resp.type_url,
                    version_info=resp.version_info,
                    response_nonce=resp.nonce,
                )
            )
            self.versions.put_nowait(resp.version_info)

    def close(self) -> None:
        self.out.put_nowait(None)
        self.call.cancel()
        self.task.cancel()


async def test_thousand_streams_without_a_thread_each_all_get_the_change() -> None:
    threads_before = threading.active_count()
    with ControlPlane() as cp:
        cp.set_snapshot(simple_snapshot("1", "a:80"))
        channels = [
            grpc.aio.insecure_channel(cp.address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CHANNELS)
        ]
        stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in channels]
        clients = [_Client(stubs[i % CHANNELS], i) for i in range(STREAMS)]
        try:
            first = await asyncio.wait_for(
                asyncio.gather(*(c.versions.get() for c in clients)), TIMEOUT
            )
            assert set(first) == {"1"}
            assert cp.stream_count == STREAMS
            # The old server held one pool thread per stream; this one runs them all on
            # one loop (a few grpc/asyncio helper threads are allowed).
            assert threading.active_count() - threads_before < 20
            await asyncio.wait_for(_acked(cp, "1"), TIMEOUT)

            cp.set_snapshot(simple_snapshot("2", "a:80", "b:80"))
            pushed = await asyncio.wait_for(
                asyncio.gather(*(c.versions.get() for c in clients)), TIMEOUT
            )
            assert set(pushed) == {"2"}
            await asyncio.wait_for(_acked(cp, "2"), TIMEOUT)
            assert cp.nacks == []
        finally:
            for c in clients:
                c.close()
            for ch in channels:
                await ch.close()


async def _acked(cp: ControlPlane, version: str) -> None:
    """Until every stream's node has ACKed ``version`` (the blocking waits, off the loop)."""

    def wait_all() -> None:
        for i in range(STREAMS):
            cp.wait_for_ack(LISTENER_TYPE, version, TIMEOUT, node_id=f"scale-{i}")

    await asyncio.to_thread(wait_all)
