"""The ADS stream on grpc's sync stack (pymesh/xds/client/_sync_stream.py): the xDS
thread's loop is not woken by the application's grpc.aio calls, and the stream's threads
end with the client."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import grpc.aio

import pymesh
from pymesh.server import ControlPlane
from pymesh.testing import EchoBackend, bootstrap_for, push_mesh
from pymesh.testing.envoy import free_port
from pymesh.xds.client._sync_stream import Connectivity

_HANDLER = grpc.method_handlers_generic_handler(
    "test.Echo",
    {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)},
)
CALLS = 300


class _CountingSelect:
    """Counts the wakeups of an event loop's selector."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.selector: Any = loop._selector  # type: ignore[attr-defined]
        self._select = self.selector.select
        self.wakeups = 0
        self.selector.select = self._counting

    def _counting(self, timeout: float | None = None) -> Any:
        events = self._select(timeout)
        self.wakeups += 1
        return events

    def restore(self) -> None:
        self.selector.select = self._select


async def _app_calls() -> int:
    """CALLS unary grpc.aio calls of the application's own, on its own loop."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_HANDLER,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/test.Echo/Echo")
            answered = 0
            for _ in range(CALLS):
                answered += await call(b"ping", timeout=30) == b"ping"
            return answered
    finally:
        await server.stop(None)


def test_the_applications_grpc_aio_calls_do_not_wake_the_xds_loop() -> None:
    with (
        EchoBackend("v1") as backend,
        ControlPlane() as cp,
        pymesh.Mesh(bootstrap=bootstrap_for(cp)) as mesh,
    ):
        push_mesh(cp, mesh, {"services": {"echo": {"port": 8080, "endpoints": [backend.address]}}})
        xds_loop = mesh._client.default.loop
        counter = _CountingSelect(xds_loop)
        try:
            answered = asyncio.run(_app_calls())
        finally:
            counter.restore()
        assert answered == CALLS
        # grpc.aio wakes every loop that used it for every completion (thousands
        # here); the xDS loop is woken only by its own work (none while idle).
        assert counter.wakeups < CALLS // 10, counter.wakeups


def test_the_streams_threads_end_with_the_client() -> None:
    def reader_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "pymesh-xds-read"]

    with EchoBackend("v1") as backend, ControlPlane() as cp:
        before = set(reader_threads())
        mesh = pymesh.Mesh(bootstrap=bootstrap_for(cp))
        push_mesh(cp, mesh, {"services": {"echo": {"port": 8080, "endpoints": [backend.address]}}})
        assert set(reader_threads()) - before, "the stream reads on a thread of its own"
        mesh.close()
        for t in set(reader_threads()) - before:
            t.join(10)
        assert not set(reader_threads()) - before


def test_close_after_a_try_to_connect_waits_for_grpcs_poller_to_stop() -> None:
    # A "try to connect" subscription made while grpcio's connectivity poller runs sends
    # it round its loop once more (a 0.2 s poll, then its state lock). Holding that lock
    # stands for a starved machine: the poller cannot finish its lap, and a poller that
    # finds the channel closed on it fails in grpc's thread (a traceback on stderr).
    failures: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)

    async def attempt() -> bool:
        """One try; False when the poller had already stopped before the lock was held
        (the test thread itself starved for a whole poll): nothing was shown."""
        channel = grpc.insecure_channel(f"127.0.0.1:{free_port()}")
        w = Connectivity(channel, asyncio.get_running_loop())
        async with w:
            await w.changed(None)  # grpc reported a state: its poller runs
            w._subscribe()  # a "try to connect" while it runs (what kick_if_idle does)
        state: Any = channel._connectivity_state  # type: ignore[attr-defined]
        held, release = threading.Event(), threading.Event()
        caught: list[bool] = []

        def starve() -> None:
            with state.lock:
                caught.append(state.polling)
                held.set()
                release.wait(30)

        starver = threading.Thread(target=starve)
        starver.start()
        try:
            assert held.wait(30)
            closing = asyncio.ensure_future(w.close())
            done, _ = await asyncio.wait({closing}, timeout=0.6)  # past the old 0.3 s wait
            if caught == [True]:
                assert not done, "close() went ahead while grpc's poller had a lap to run"
        finally:
            release.set()
            starver.join(30)
        await asyncio.wait_for(closing, 30)
        return caught == [True]

    try:
        shown = any(asyncio.run(attempt()) for _ in range(3))
        for t in [t for t in threading.enumerate() if "_poll_connectivity" in t.name]:
            t.join(30)
    finally:
        threading.excepthook = hook
    assert shown, "the poller had always stopped before the lock was held"
    assert failures == []
