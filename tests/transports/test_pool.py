"""AsyncEndpointPool against a real HTTP/1.1 backend: bounds, reuse, waiting, cancel."""

from __future__ import annotations

import asyncio

import httpcore
import pytest

from pymesh.testing import EchoBackend
from pymesh.transports._pool import AsyncEndpointPool


def _pool(backend: EchoBackend, max_connections: int) -> AsyncEndpointPool:
    return AsyncEndpointPool(
        httpcore.Origin(b"http", backend.host.encode(), backend.port),
        max_connections=max_connections,
        keepalive_expiry=5.0,
    )


async def _get(
    pool: AsyncEndpointPool, backend: EchoBackend, pool_timeout: float | None = None
) -> bytes:
    req = httpcore.Request(
        b"GET",
        httpcore.URL(scheme=b"http", host=backend.host.encode(), port=backend.port, target=b"/"),
        headers=[(b"host", b"svc")],
        extensions={"timeout": {"pool": pool_timeout}},
    )
    resp = await pool.handle_async_request(req)
    try:
        return await resp.aread()
    finally:
        await resp.aclose()


async def test_sequential_requests_reuse_one_connection(echo_backend: EchoBackend) -> None:
    pool = _pool(echo_backend, 8)
    for _ in range(5):
        assert await _get(pool, echo_backend) == b"echo"
    assert len({r.peer for r in echo_backend.requests}) == 1
    assert len(pool.connections) == 1 and pool.connections[0].is_idle()
    await pool.aclose()
    assert pool.connections == []


async def test_concurrency_is_bounded_and_waiters_are_served() -> None:
    with EchoBackend("slow", delay=0.2) as slow:
        pool = _pool(slow, 2)
        bodies = await asyncio.gather(*(_get(pool, slow) for _ in range(6)))
        assert bodies == [b"slow"] * 6
        assert len({r.peer for r in slow.requests}) == 2  # never a third connection
        await pool.aclose()


async def test_pool_timeout_when_every_connection_is_busy() -> None:
    with EchoBackend("slow", delay=1.0) as slow:
        pool = _pool(slow, 1)
        busy = asyncio.create_task(_get(pool, slow))
        while not pool.connections:  # the first request holds the only connection
            await asyncio.sleep(0.01)
        with pytest.raises(httpcore.PoolTimeout, match="max_connections"):
            await _get(pool, slow, pool_timeout=0.1)
        assert await busy == b"slow"
        await pool.aclose()


async def test_a_cancelled_waiter_does_not_lose_the_connection() -> None:
    with EchoBackend("slow", delay=0.3) as slow:
        pool = _pool(slow, 1)
        first = asyncio.create_task(_get(pool, slow))
        while not pool.connections:
            await asyncio.sleep(0.01)
        waiter = asyncio.create_task(_get(pool, slow))
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await first == b"slow"
        # The connection came back to the pool, not to the cancelled waiter.
        assert await asyncio.wait_for(_get(pool, slow), 10) == b"slow"
        assert len({r.peer for r in slow.requests}) == 1
        await pool.aclose()


async def test_a_response_closed_early_retires_its_connection(echo_backend: EchoBackend) -> None:
    pool = _pool(echo_backend, 4)
    req = httpcore.Request(
        b"GET",
        httpcore.URL(
            scheme=b"http", host=echo_backend.host.encode(), port=echo_backend.port, target=b"/"
        ),
        headers=[(b"host", b"svc")],
    )
    resp = await pool.handle_async_request(req)
    await resp.aclose()  # body never read: the connection cannot be reused
    assert pool.connections == []
    assert await _get(pool, echo_backend) == b"echo"
    assert len({r.peer for r in echo_backend.requests}) == 2
    await pool.aclose()


async def test_connect_failure_frees_the_slot() -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = AsyncEndpointPool(
        httpcore.Origin(b"http", b"127.0.0.1", port), max_connections=1, keepalive_expiry=5.0
    )
    req = httpcore.Request(
        b"GET", httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=port, target=b"/")
    )
    for _ in range(3):  # each failure gives the only slot back
        with pytest.raises(httpcore.ConnectError):
            await pool.handle_async_request(req)
    assert pool.connections == []
