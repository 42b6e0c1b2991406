"""An asyncio HTTP/1.1 connection pool for one endpoint, O(1) per request.

httpcore's ``AsyncConnectionPool`` re-examines every connection for every queued request
each time a request starts or ends (and asks each connection's socket whether it is
readable), so with N requests in flight on one endpoint each request costs O(N²): at 64
concurrent requests that is most of the client's CPU. pymesh already knows the endpoint
(one pool per endpoint), so a pool needs only a stack of idle connections:

* a request takes the most recently used idle connection (LIFO keeps few connections
  warm and lets the rest expire), checking just that one for expiry; else opens a new
  one while under ``max_connections``; else waits, first come first served, for one to
  be handed back (bounded by the caller's ``pool`` timeout);
* when the response body is closed the connection goes back on the stack (or straight
  to the longest waiter), and the oldest idle connection is closed if it has expired.

Each connection is httpcore's own ``AsyncHTTPConnection`` (connect, HTTP/1.1 framing,
keep-alive expiry, the network backend), so only the bookkeeping is pymesh's. HTTP/2
clusters keep httpcore's pool (one multiplexed connection: nothing quadratic).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import typing

import httpcore

__all__ = ["AsyncEndpointPool"]


class _PooledStream:
    """The response body; closing it hands the connection back to the pool."""

    def __init__(
        self,
        inner: typing.AsyncIterable[bytes],
        pool: AsyncEndpointPool,
        conn: httpcore.AsyncHTTPConnection,
    ) -> None:
        self._inner = inner
        self._pool = pool
        self._conn: httpcore.AsyncHTTPConnection | None = conn

    async def __aiter__(self) -> typing.AsyncIterator[bytes]:
        async for part in self._inner:
            yield part

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        try:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if conn is not None:
                await self._pool._release(conn)


class AsyncEndpointPool:
    """HTTP/1.1 connections to one endpoint (``origin``), at most ``max_connections``."""

    def __init__(
        self,
        origin: httpcore.Origin,
        *,
        max_connections: int,
        keepalive_expiry: float | None,
        ssl_context: ssl.SSLContext | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._origin = origin
        self._max = max(1, max_connections)
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._backend = network_backend
        self._idle: list[httpcore.AsyncHTTPConnection] = []  # a stack: last in, first out
        self._all: set[httpcore.AsyncHTTPConnection] = set()
        self._waiters: collections.deque[asyncio.Future[httpcore.AsyncHTTPConnection | None]]
        self._waiters = collections.deque()
        self._closed = False

    @property
    def connections(self) -> list[httpcore.AsyncHTTPConnection]:
        """Every open connection (idle or busy), as httpcore's pools expose them."""
        return list(self._all)

    def _new(self) -> httpcore.AsyncHTTPConnection:
        conn = httpcore.AsyncHTTPConnection(
            self._origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=self._backend,
        )
        self._all.add(conn)
        return conn

    async def _acquire(self, timeout: float | None) -> httpcore.AsyncHTTPConnection:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.has_expired() or not conn.is_idle():
                self._all.discard(conn)
                await conn.aclose()
                continue
            return conn
        if len(self._all) < self._max:
            return self._new()
        waiter: asyncio.Future[httpcore.AsyncHTTPConnection | None]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handed = await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise httpcore.PoolTimeout(
                f"no connection to {self._origin} within {timeout} s "
                f"({self._max} in use: max_connections)"
            ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()  # handed over just as we were cancelled
                if handed is not None:
                    await self._release(handed)
                else:
                    self._wake_one()
            raise
        return handed if handed is not None else self._new()

    def _wake_one(self) -> None:
        """A connection slot came free: the longest waiter opens a new connection."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _release(self, conn: httpcore.AsyncHTTPConnection) -> None:
        if self._closed or not conn.is_idle() or conn.has_expired():
            # Closed by the server, broken mid-response, or past its keep-alive: gone.
            self._all.discard(conn)
            await conn.aclose()
            self._wake_one()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)
        oldest = self._idle[0]
        if oldest is not conn and oldest.has_expired():
            self._idle.pop(0)
            self._all.discard(oldest)
            await oldest.aclose()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send ``request`` on an idle (or new) connection; the response's stream hands
        the connection back when it is closed."""
        if self._closed:
            raise httpcore.ConnectError(f"pool for {self._origin} is closed")
        timeouts = request.extensions.get("timeout") or {}
        conn = await self._acquire(timeouts.get("pool"))
        try:
            resp = await conn.handle_async_request(request)
        except BaseException:
            await self._release(conn)
            raise
        assert isinstance(resp.stream, typing.AsyncIterable)
        resp.stream = _PooledStream(resp.stream, self, conn)
        return resp

    async def aclose(self) -> None:
        """Close every connection; waiting requests fail with a pool timeout."""
        self._closed = True
        conns, self._all, self._idle = list(self._all), set(), []
        for conn in conns:
            await conn.aclose()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(httpcore.PoolTimeout(f"pool for {self._origin} closed"))
