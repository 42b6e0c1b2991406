"""The HTTP/1.1 endpoint pools against real backends: reuse, waiting, cancel, and Envoy's
connection-pool breakers (cluster-wide max_connections with upstream_cx_overflow and
the first-connection rule; max_pending_requests with upstream_rq_pending_overflow)."""

from __future__ import annotations

import asyncio
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpcore
import pytest

from pymesh.resilience import CircuitBreaker
from pymesh.testing import EchoBackend
from pymesh.testing.envoy import free_port
from pymesh.transports._pool import AsyncEndpointPool, EndpointPool, PoolOverflow
from pymesh.xds.resources.cluster import CircuitBreakers

sys.path.insert(0, str(Path(__file__).parent.parent))

from _polling import wait_until


class _Cluster:
    """What a pool reads of its cluster: the breaker (a ClusterRuntime in pymesh)."""

    def __init__(self, **limits: int) -> None:
        self.breaker: CircuitBreaker | None = CircuitBreaker(CircuitBreakers(**limits))


def _origin(backend: EchoBackend) -> httpcore.Origin:
    return httpcore.Origin(b"http", backend.host.encode(), backend.port)


def _pool(backend: EchoBackend, cluster: _Cluster) -> AsyncEndpointPool:
    return AsyncEndpointPool(_origin(backend), cluster, keepalive_expiry=5.0)


def _request(backend: EchoBackend, pool_timeout: float | None = None) -> httpcore.Request:
    return httpcore.Request(
        b"GET",
        httpcore.URL(scheme=b"http", host=backend.host.encode(), port=backend.port, target=b"/"),
        headers=[(b"host", b"svc")],
        extensions={"timeout": {"pool": pool_timeout}},
    )


async def _get(
    pool: AsyncEndpointPool, backend: EchoBackend, pool_timeout: float | None = None
) -> bytes:
    resp = await pool.handle_async_request(_request(backend, pool_timeout))
    try:
        return await resp.aread()
    finally:
        await resp.aclose()


def _sync_get(pool: EndpointPool, backend: EchoBackend) -> bytes:
    resp = pool.handle_request(_request(backend))
    try:
        return resp.read()
    finally:
        resp.close()


async def _until(check: object, what: str) -> None:
    for _ in range(3000):  # generous: 60 s
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_sequential_requests_reuse_one_connection(echo_backend: EchoBackend) -> None:
    cluster = _Cluster()
    pool = _pool(echo_backend, cluster)
    for _ in range(5):
        assert await _get(pool, echo_backend) == b"echo"
    assert len({r.peer for r in echo_backend.requests}) == 1
    assert len(pool.connections) == 1 and pool.connections[0].is_idle()
    assert cluster.breaker is not None and cluster.breaker.active_connections == 1
    await pool.aclose()
    assert pool.connections == []
    assert cluster.breaker.active_connections == 0


async def test_concurrency_is_bounded_and_waiters_are_served() -> None:
    cluster = _Cluster(max_connections=2)
    with EchoBackend("slow", delay=0.2) as slow:
        pool = _pool(slow, cluster)
        bodies = await asyncio.gather(*(_get(pool, slow) for _ in range(6)))
        assert bodies == [b"slow"] * 6
        assert len({r.peer for r in slow.requests}) == 2  # never a third connection
        breaker = cluster.breaker
        assert breaker is not None
        assert breaker.overflow.connections >= 1  # the waiters found the limit reached
        assert (breaker.pending_requests, breaker.overflow.pending) == (0, 0)
        await pool.aclose()


async def test_max_connections_is_cluster_wide_and_each_endpoint_gets_one() -> None:
    # Two endpoints of one cluster, max_connections 1: the second endpoint's first
    # connection is opened above the limit (Envoy: an endpoint with no connection always
    # gets one) and counted as upstream_cx_overflow; a second request to the first
    # endpoint waits for its connection instead of opening another.
    cluster = _Cluster(max_connections=1)
    breaker = cluster.breaker
    assert breaker is not None
    with EchoBackend("a", delay=0.5) as a, EchoBackend("b") as b:
        pool_a, pool_b = _pool(a, cluster), _pool(b, cluster)
        first = asyncio.create_task(_get(pool_a, a))
        await _until(lambda: breaker.active_connections == 1, "a's first connection")
        assert await _get(pool_b, b) == b"b"
        assert (breaker.active_connections, breaker.overflow.connections) == (2, 1)
        second = asyncio.create_task(_get(pool_a, a))
        await _until(lambda: breaker.pending_requests == 1, "the second request pending")
        assert breaker.overflow.connections == 2
        assert await first == b"a" and await second == b"a"
        assert len({r.peer for r in a.requests}) == 1  # both on a's one connection
        assert breaker.active_connections == 2 and breaker.pending_requests == 0
        await pool_a.aclose()
        await pool_b.aclose()
        assert breaker.active_connections == 0


async def test_max_pending_requests_overflows_at_once() -> None:
    cluster = _Cluster(max_connections=1, max_pending_requests=1)
    breaker = cluster.breaker
    assert breaker is not None
    with EchoBackend("slow", delay=0.5) as slow:
        pool = _pool(slow, cluster)
        assert await _get(pool, slow) == b"slow"  # the connection is up and idle
        busy = asyncio.create_task(_get(pool, slow))  # takes it: not pending
        await _until(lambda: not pool.connections[0].is_idle(), "the connection busy")
        waiting = asyncio.create_task(_get(pool, slow))
        await _until(lambda: breaker.pending_requests == 1, "one request pending")
        with pytest.raises(PoolOverflow, match="max_pending_requests"):
            await _get(pool, slow)
        assert breaker.overflow.pending == 1
        assert await busy == b"slow" and await waiting == b"slow"
        assert slow.request_count == 3
        assert breaker.pending_requests == 0
        await pool.aclose()


async def test_max_requests_is_taken_when_a_request_is_attached() -> None:
    # Envoy checks max_requests when a request gets a ready connection: one waiting for
    # the connection is pending, not refused for the one in flight; a refusal counts as
    # upstream_rq_pending_overflow and gives the connection back unused.
    cluster = _Cluster(max_connections=1, max_pending_requests=1, max_requests=1)
    breaker = cluster.breaker
    assert breaker is not None
    with EchoBackend("slow", delay=0.3) as slow:
        pool = _pool(slow, cluster)
        assert await _get(pool, slow) == b"slow"
        assert breaker.active_requests == 0  # given back when the body was closed
        busy = asyncio.create_task(_get(pool, slow))
        await _until(lambda: breaker.active_requests == 1, "the first request attached")
        waiting = asyncio.create_task(_get(pool, slow))
        await _until(lambda: breaker.pending_requests == 1, "the second request pending")
        assert await busy == b"slow" and await waiting == b"slow"
        assert (breaker.active_requests, breaker.overflow.requests) == (0, 0)
        await pool.aclose()
    refusing = _Cluster(max_requests=0)
    with EchoBackend("idle") as idle:
        pool = _pool(idle, refusing)
        with pytest.raises(PoolOverflow, match="max_requests"):
            await _get(pool, idle)
        assert idle.request_count == 0
        assert refusing.breaker is not None and refusing.breaker.overflow.pending == 1
        assert refusing.breaker.active_connections == 0  # the new connection was closed
        await pool.aclose()


async def test_a_request_is_pending_while_its_connection_connects(
    echo_backend: EchoBackend,
) -> None:
    # Envoy: a request finding no ready connection is pending, even while the new
    # connection it caused is connecting; with max_pending_requests 0 none can be sent.
    cluster = _Cluster(max_pending_requests=0)
    pool = _pool(echo_backend, cluster)
    with pytest.raises(PoolOverflow):
        await _get(pool, echo_backend)
    assert echo_backend.request_count == 0 and pool.connections == []
    assert cluster.breaker is not None and cluster.breaker.overflow.pending == 1


async def test_pool_timeout_when_every_connection_is_busy() -> None:
    cluster = _Cluster(max_connections=1)
    with EchoBackend("slow", delay=1.0) as slow:
        pool = _pool(slow, cluster)
        busy = asyncio.create_task(_get(pool, slow))
        while not pool.connections:  # the first request holds the only connection
            await asyncio.sleep(0.01)
        with pytest.raises(httpcore.PoolTimeout, match="max_connections"):
            await _get(pool, slow, pool_timeout=0.1)
        assert await busy == b"slow"
        assert cluster.breaker is not None and cluster.breaker.pending_requests == 0
        await pool.aclose()


async def test_a_cancelled_waiter_does_not_lose_the_connection() -> None:
    cluster = _Cluster(max_connections=1)
    with EchoBackend("slow", delay=0.3) as slow:
        pool = _pool(slow, cluster)
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
        assert cluster.breaker is not None and cluster.breaker.pending_requests == 0
        await pool.aclose()


async def test_a_response_closed_early_retires_its_connection(echo_backend: EchoBackend) -> None:
    cluster = _Cluster()
    pool = _pool(echo_backend, cluster)
    resp = await pool.handle_async_request(_request(echo_backend))
    await resp.aclose()  # body never read: the connection cannot be reused
    assert pool.connections == []
    assert cluster.breaker is not None and cluster.breaker.active_connections == 0
    assert await _get(pool, echo_backend) == b"echo"
    assert len({r.peer for r in echo_backend.requests}) == 2
    await pool.aclose()


async def test_connect_failure_frees_the_slots() -> None:
    port = free_port()
    cluster = _Cluster(max_connections=1, max_pending_requests=1)
    pool = AsyncEndpointPool(
        httpcore.Origin(b"http", b"127.0.0.1", port), cluster, keepalive_expiry=5.0
    )
    req = httpcore.Request(
        b"GET", httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=port, target=b"/")
    )
    for _ in range(3):  # each failure gives the connection and pending slots back
        with pytest.raises(httpcore.ConnectError):
            await pool.handle_async_request(req)
    assert pool.connections == []
    breaker = cluster.breaker
    assert breaker is not None
    assert (breaker.active_connections, breaker.pending_requests) == (0, 0)
    assert (breaker.overflow.connections, breaker.overflow.pending) == (0, 0)


# -- the threaded pool -----------------------------------------------------------------


def test_sync_pool_bounds_connections_cluster_wide() -> None:
    cluster = _Cluster(max_connections=2)
    breaker = cluster.breaker
    assert breaker is not None
    with EchoBackend("slow", delay=0.2) as slow:
        pool = EndpointPool(_origin(slow), cluster, keepalive_expiry=5.0)
        with ThreadPoolExecutor(6) as ex:
            bodies = list(ex.map(lambda _: _sync_get(pool, slow), range(6)))
        assert bodies == [b"slow"] * 6
        assert len({r.peer for r in slow.requests}) == 2
        assert breaker.active_connections == 2 and breaker.pending_requests == 0
        pool.close()
        assert breaker.active_connections == 0


def test_sync_pool_pending_overflow() -> None:
    cluster = _Cluster(max_connections=1, max_pending_requests=1)
    breaker = cluster.breaker
    assert breaker is not None
    with EchoBackend("slow", delay=0.5) as slow:
        pool = EndpointPool(_origin(slow), cluster, keepalive_expiry=5.0)
        assert _sync_get(pool, slow) == b"slow"
        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda: results.append(_sync_get(pool, slow))) for _ in range(2)
        ]
        threads[0].start()
        wait_until(lambda: not pool.connections[0].is_idle(), "the connection busy")
        threads[1].start()
        wait_until(lambda: breaker.pending_requests == 1, "one request pending")
        with pytest.raises(PoolOverflow):
            _sync_get(pool, slow)
        for t in threads:
            t.join(60)
        assert results == [b"slow", b"slow"]
        assert breaker.overflow.pending == 1 and breaker.pending_requests == 0
        pool.close()


def test_sync_pool_connect_failure_frees_the_slots() -> None:
    port = free_port()
    cluster = _Cluster(max_connections=1, max_pending_requests=1)
    pool = EndpointPool(httpcore.Origin(b"http", b"127.0.0.1", port), cluster, keepalive_expiry=5.0)
    req = httpcore.Request(
        b"GET", httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=port, target=b"/")
    )
    for _ in range(3):
        with pytest.raises(httpcore.ConnectError):
            pool.handle_request(req)
    breaker = cluster.breaker
    assert breaker is not None
    assert (breaker.active_connections, breaker.pending_requests) == (0, 0)
    assert pool.connections == []
