"""The asyncio mesh channel against real gRPC backends and the embedded control plane."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio
import pytest
from _backend import CHAT, COLLECT, ECHO, HANG, SPLIT, TARGET, Backend, echo_service, serve

import pymesh
import pymesh.grpc.aio
from pymesh.server import ControlPlane
from pymesh.testing.envoy import free_port

MakeMesh = Callable[..., pymesh.Mesh]


async def test_all_four_call_types(cp: ControlPlane, make_mesh: MakeMesh) -> None:
    with Backend("a") as a:
        serve(cp, echo_service(endpoints=[a.address]))
        async with pymesh.grpc.aio.insecure_channel(TARGET, make_mesh()) as ch:
            call = ch.unary_unary(ECHO)(b"hi", timeout=10, metadata=(("x-trace", "t"),))
            assert await call == b"a:hi"
            assert await call.code() is grpc.StatusCode.OK
            assert ("x-backend", "a") in list(await call.trailing_metadata())
            replies = [r async for r in ch.unary_stream(SPLIT)(b"3", timeout=10)]
            assert replies == [b"a:0", b"a:1", b"a:2"]

            async def requests() -> AsyncIterator[bytes]:
                for x in (b"1", b"2"):
                    yield x

            assert await ch.stream_unary(COLLECT)(requests(), timeout=10) == b"a:1,2"
            collect = ch.stream_unary(COLLECT)(timeout=10)
            await collect.write(b"w1")
            await collect.write(b"w2")
            await collect.done_writing()
            assert await collect == b"a:w1,w2"
            chat = ch.stream_stream(CHAT)(timeout=10)
            await chat.write(b"x")
            assert await chat.read() == b"a:x"
            await chat.done_writing()
            assert await chat.code() is grpc.StatusCode.OK
    assert a.metadata[0]["x-trace"] == "t"
    assert a.calls == {"Echo": 1, "Split": 1, "Collect": 2, "Chat": 1}


async def test_200_concurrent_calls_no_loss_or_duplicates(
    cp: ControlPlane, make_mesh: MakeMesh
) -> None:
    with Backend("a", workers=32) as a, Backend("b", workers=32) as b:
        serve(
            cp,
            echo_service(
                versions={"v1": {"endpoints": [a.address]}, "v2": {"endpoints": [b.address]}},
                routes=[{"split": {"v1": 50, "v2": 50}}],
            ),
        )
        async with pymesh.grpc.aio.insecure_channel(TARGET, make_mesh()) as ch:
            echo = ch.unary_unary(ECHO)
            replies = await asyncio.gather(*(echo(str(i).encode(), timeout=30) for i in range(200)))
    bodies = [r.split(b":", 1)[1] for r in replies]
    assert sorted(bodies) == sorted(str(i).encode() for i in range(200))
    hosts = Counter(r.split(b":", 1)[0] for r in replies)
    assert a.count() + b.count() == 200
    assert hosts[b"a"] == a.count() and hosts[b"b"] == b.count()
    assert min(hosts.values()) >= 60  # 50/50 split: P(< 60 of 200) is about 1e-8


async def test_retries_counted_at_backend(cp: ControlPlane, make_mesh: MakeMesh) -> None:
    with Backend("a", fail_first=2) as a:
        retries = {"attempts": 2, "on": "unavailable,internal", "backoff": {"base": "1ms"}}
        serve(cp, echo_service(endpoints=[a.address], routes=[{"retries": retries}]))
        async with pymesh.grpc.aio.insecure_channel(TARGET, make_mesh()) as ch:
            assert await ch.unary_unary(ECHO)(b"r", timeout=10) == b"a:r"
            assert a.count() == 3
            a.fail_first = 6
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ch.unary_unary(ECHO)(b"r", timeout=10)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
            assert a.count() == 6
            a.fail_first = 1  # per-method counts: Collect's first call fails
            assert await ch.stream_unary(COLLECT)(iter([b"1", b"2"]), timeout=10) == b"a:1,2"
            assert a.count("Collect") == 2


async def test_deadline_exceeded(cp: ControlPlane, make_mesh: MakeMesh) -> None:
    with Backend("a") as a:
        serve(cp, echo_service(endpoints=[a.address]))
        async with pymesh.grpc.aio.insecure_channel(TARGET, make_mesh()) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ch.unary_unary(HANG)(b"", timeout=0.5)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize(
    ("abort", "code"),
    [
        ({"grpc_status": 8}, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ({"status": 503}, grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_fault_abort(
    cp: ControlPlane, make_mesh: MakeMesh, abort: dict[str, int], code: grpc.StatusCode
) -> None:
    with Backend("a") as a:
        serve(cp, echo_service(endpoints=[a.address], routes=[{"fault": {"abort": abort}}]))
        async with pymesh.grpc.aio.insecure_channel(TARGET, make_mesh()) as ch:
            call = ch.unary_unary(ECHO)(b"", timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() is code
            assert await call.code() is code
            with pytest.raises(grpc.aio.AioRpcError) as sinfo:
                [r async for r in ch.unary_stream(SPLIT)(b"1", timeout=10)]
            assert sinfo.value.code() is code
    assert a.count() == 0


async def test_no_route_is_unavailable(cp: ControlPlane, make_mesh: MakeMesh) -> None:
    with Backend("a") as a:
        serve(cp, echo_service(endpoints=[a.address], routes=[{"match": {"prefix": "/x/"}}]))
        async with pymesh.grpc.aio.insecure_channel(TARGET, make_mesh()) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ch.unary_unary(ECHO)(b"", timeout=10)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "echo:50051" in (info.value.details() or "")


async def test_channel_ready_and_state(cp: ControlPlane, make_mesh: MakeMesh) -> None:
    with Backend("a") as a:
        serve(cp, echo_service(endpoints=[a.address]))
        async with pymesh.grpc.aio.insecure_channel(TARGET, make_mesh()) as ch:
            await asyncio.wait_for(ch.channel_ready(), 30)
            assert ch.get_state() is grpc.ChannelConnectivity.READY


async def test_unknown_listener_passes_through(cp: ControlPlane, make_mesh: MakeMesh) -> None:
    with Backend("a") as a:
        serve(cp, echo_service(endpoints=["127.0.0.1:1"]))
        async with pymesh.grpc.aio.insecure_channel(f"xds:///{a.address}", make_mesh()) as ch:
            assert await ch.unary_unary(ECHO)(b"d", timeout=30) == b"a:d"
            replies = [r async for r in ch.unary_stream(SPLIT)(b"2", timeout=30)]
            assert replies == [b"a:0", b"a:1"]


async def test_unary_call_starts_when_made_whether_or_not_it_is_awaited(
    cp: ControlPlane, make_mesh: MakeMesh
) -> None:
    """A call awaited at once runs in the caller's task; one never awaited still runs
    (grpc.aio calls start when made), and callbacks, accessors and cancel() work either
    way."""
    with Backend("a") as a:
        serve(cp, echo_service(endpoints=[a.address]))
        async with pymesh.grpc.aio.insecure_channel(TARGET, make_mesh()) as ch:
            echo = ch.unary_unary(ECHO)
            ended: list[object] = []
            background = echo(b"bg", timeout=10)  # never awaited itself
            background.add_done_callback(ended.append)
            assert await background.code() is grpc.StatusCode.OK
            assert ended == [background] and background.done()
            inline = echo(b"in", timeout=10)
            inline.add_done_callback(ended.append)
            assert await inline == b"a:in"
            assert await inline == b"a:in"  # a second await gives the same answer
            assert ended == [background, inline]
            assert ("x-backend", "a") in list(await inline.trailing_metadata())
            cancelled = ch.unary_unary(HANG)(b"", timeout=30)
            assert cancelled.cancel()  # before it started: it never reaches the backend
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert cancelled.cancelled()
    assert a.calls == {"Echo": 2}


@pytest.mark.parametrize("status_readable", [True, False])
async def test_unary_call_gives_its_slot_back_however_it_ends(
    cp: ControlPlane, make_mesh: MakeMesh, monkeypatch: pytest.MonkeyPatch, status_readable: bool
) -> None:
    """A one-attempt call is grpc.aio's own call; its end (an answer, a status, a cancel,
    awaited or never awaited) frees its circuit-breaker slot, also with a grpcio whose
    calls do not show their status to a done callback (then it is awaited)."""
    if not status_readable:
        monkeypatch.setattr(pymesh.grpc.aio, "_STATUS", "_no_status_here")
    with Backend("a") as a:
        policy = {"circuit_breakers": {"max_requests": 1}}
        serve(cp, echo_service(endpoints=[a.address], traffic_policy=policy))
        async with pymesh.grpc.aio.insecure_channel(TARGET, make_mesh()) as ch:
            echo = ch.unary_unary(ECHO)

            async def recorded() -> None:
                # Unreadable status: a task of the channel's reads it; let it finish.
                await asyncio.gather(*list(ch._tasks))

            background = echo(b"bg", timeout=10)  # never awaited itself
            assert await background.code() is grpc.StatusCode.OK
            await recorded()
            assert await echo(b"1", timeout=10) == b"a:1"
            await recorded()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ch.unary_unary(HANG)(b"", timeout=0.5)
            assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            await recorded()
            hang = ch.unary_unary(HANG)(b"", timeout=30)
            assert await asyncio.to_thread(a.hanging.acquire, True, 30)  # it holds the slot
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await echo(b"", timeout=10)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "overflow" in (info.value.details() or "")
            assert hang.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hang
            await recorded()
            assert await echo(b"2", timeout=10) == b"a:2"
    assert a.count("Echo") == 3


async def test_avoids_endpoint_in_transient_failure(cp: ControlPlane, make_mesh: MakeMesh) -> None:
    # The aio channel asks its sub-channels' states at most every 50 ms (not per call:
    # that costs as much as the cluster is big), and still stops picking a dead endpoint.
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: connections are refused
    with Backend("a") as a:
        serve(cp, echo_service(endpoints=[dead, a.address]))
        async with pymesh.grpc.aio.insecure_channel(TARGET, make_mesh()) as ch:
            echo = ch.unary_unary(ECHO)
            failures = ok_streak = 0
            for _ in range(400):
                try:
                    await echo(b"", timeout=10)
                    ok_streak += 1
                except grpc.aio.AioRpcError as err:
                    assert err.code() is grpc.StatusCode.UNAVAILABLE
                    failures += 1
                    ok_streak = 0
                if ok_streak == 30:
                    break
    # As the sync channel's test: 30 successes in a row only once the dead endpoint is
    # avoided; how many calls failed first depends on when grpcio reports its state.
    assert ok_streak == 30
    assert failures >= 1
