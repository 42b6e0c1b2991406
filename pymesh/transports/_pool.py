"""HTTP/1.1 connection pools for one endpoint, O(1) per request, with Envoy's breakers.

httpcore's pools re-examine every connection for every queued request each time a
request starts or ends (and ask each connection's socket whether it is readable), so
with N requests in flight on one endpoint each request costs O(N²). pymesh already knows
the endpoint (one pool per endpoint), so a pool needs only a stack of idle connections:

* a request takes the most recently used idle connection (LIFO keeps few connections
  warm and lets the rest expire), checking just that one for expiry;
* otherwise it becomes one of Envoy's *pending* requests: the cluster's
  ``max_pending_requests`` must have room, else the request fails at once with
  :class:`PoolOverflow` (Envoy's ``upstream_rq_pending_overflow``: a local 503 with
  response flag UO, never retried). A pending request opens a new connection when the
  cluster's ``max_connections`` has room (over all endpoints of the cluster, counted by
  the cluster's :class:`~pymesh.resilience.CircuitBreaker`); at the limit Envoy counts
  ``upstream_cx_overflow`` and the request waits, first come first served, for a
  connection of its endpoint to be handed back (bounded by the caller's ``pool``
  timeout). As in Envoy's ``ConnPoolImplBase::tryCreateNewConnection``, an endpoint
  with no connection at all always gets one, so a request is never queued on an
  endpoint that could never serve it. A request stays pending until its connection is
  connected (TCP, and TLS when the cluster has it), as Envoy's stream does;
* when the response body is closed the connection goes back on the stack (or straight
  to the longest waiter), and the oldest idle connection is closed if it has expired.
  A connection that closes gives its ``max_connections`` slot back.

Each connection is httpcore's own ``HTTPConnection`` (connect, HTTP/1.1 framing,
keep-alive expiry, the network backend), so only the bookkeeping is pymesh's. The sync
pool guards its stack with a lock (threads share a client); the asyncio pool needs none.
HTTP/2 clusters keep httpcore's pools (one multiplexed connection per endpoint).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import threading
import time
import typing

import httpcore

from pymesh.resilience import CircuitBreaker

__all__ = ["COUNT_REQUEST", "AsyncEndpointPool", "EndpointPool", "PoolOverflow"]

#: Request extension: False when the call engine already took the request's max_requests
#: slot (hedged attempts), so the pool does not take one on attach.
COUNT_REQUEST = "pymesh.count_request"

SocketOptions = typing.Iterable[typing.Any] | None


class Limits(typing.Protocol):
    """Where a pool reads its cluster's breaker (a ClusterRuntime): read per request, so
    new thresholds from the control plane apply to the next request."""

    @property
    def breaker(self) -> CircuitBreaker | None: ...


class PoolOverflow(httpcore.PoolTimeout):
    """The cluster's ``max_pending_requests`` is reached: Envoy's pool overflow (the
    request is answered locally with 503 and flag UO, and never retried)."""


class _Slots:
    """One request's breaker slots in the pool, as Envoy's connection pool holds them:
    pending while it has no ready connection (given back once, whichever comes first),
    then a request slot from when it is attached to a ready connection (Envoy checks
    max_requests there, and counts a refusal as upstream_rq_pending_overflow) until its
    response body is closed."""

    __slots__ = ("attached", "breaker", "count", "origin", "pending")

    def __init__(
        self, breaker: CircuitBreaker | None, origin: httpcore.Origin, count: bool = True
    ) -> None:
        self.breaker = breaker
        self.origin = origin
        self.count = count  # take a request slot on attach
        self.pending = False
        self.attached = False

    def enter_pending(self) -> None:
        breaker = self.breaker
        if breaker is not None:
            if not breaker.try_acquire_pending():
                limit = breaker.thresholds.max_pending_requests
                raise PoolOverflow(
                    f"upstream overflow (circuit breaker max_pending_requests): {limit} "
                    f"requests already wait for a connection to the cluster; {self.origin} "
                    "has none free"
                )
            self.pending = True

    def leave_pending(self) -> None:
        if self.pending:
            self.pending = False
            assert self.breaker is not None
            self.breaker.release_pending()

    def attach(self) -> None:
        """The request has a ready connection: it stops pending and takes a request slot."""
        breaker = self.breaker
        if self.pending:  # leave_pending(), without its call on the request path
            self.pending = False
            assert breaker is not None
            breaker.release_pending()
        if breaker is None or self.attached or not self.count:
            return
        if not breaker.try_acquire_request(attaching=True):
            raise PoolOverflow(
                f"upstream overflow (circuit breaker max_requests): "
                f"{breaker.thresholds.max_requests} requests already in flight in the cluster"
            )
        self.attached = True

    def detach(self) -> None:
        """The request is over (body closed, or it failed): give every slot back."""
        if self.pending:
            self.leave_pending()
        if self.attached:
            self.attached = False
            assert self.breaker is not None
            self.breaker.release_request()


def _may_open(breaker: CircuitBreaker | None, empty: bool) -> bool:
    """Envoy's connection breaker: room under max_connections, or the endpoint has no
    connection yet (then opened above the limit, as Envoy does; the overflow counts)."""
    return breaker is None or breaker.try_acquire_connection(first=empty)


class _Conn(typing.Protocol):
    def has_expired(self) -> bool: ...
    def is_idle(self) -> bool: ...


C = typing.TypeVar("C", bound=_Conn)
W = typing.TypeVar("W")


class _Book(typing.Generic[C, W]):
    """The bookkeeping both pools share, without I/O or locking (the threaded pool calls
    it under its lock): the idle stack, the open connections with the breaker each one's
    max_connections slot belongs to, and the waiters. Connections it gives up are
    returned for the caller to close; ``hand(waiter, conn)`` gives a waiter a connection
    (None: "try opening one") and is False for a waiter that is already gone."""

    __slots__ = ("all", "closed", "hand", "idle", "waiters")

    def __init__(self, hand: typing.Callable[[W, C | None], bool]) -> None:
        self.hand = hand
        self.idle: list[C] = []  # a stack: last in, first out
        self.all: dict[C, CircuitBreaker | None] = {}
        self.waiters: collections.deque[W] = collections.deque()
        self.closed = False

    def describe(self, name: str, origin: httpcore.Origin) -> str:
        return (
            f"<{name} {origin} connections={len(self.all)} "
            f"idle={len(self.idle)} waiting={len(self.waiters)}>"
        )

    def may_open(self, breaker: CircuitBreaker | None) -> bool:
        return _may_open(breaker, not self.all)

    def forget(self, conn: C) -> None:
        """``conn`` leaves the pool and gives its max_connections slot back."""
        if conn in self.all:
            breaker = self.all.pop(conn)
            if breaker is not None:
                breaker.release_connection()

    def take_idle(self, dead: list[C]) -> C | None:
        """The freshest usable idle connection; stale ones go to ``dead``."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.has_expired() or not conn.is_idle():
                self.forget(conn)
                dead.append(conn)
                continue
            return conn
        return None

    def wake(self, conn: C | None) -> bool:
        """Hand ``conn`` (None: a connection closed) to the longest waiter still there."""
        while self.waiters:
            if self.hand(self.waiters.popleft(), conn):
                return True
        return False

    def release(self, conn: C) -> list[C]:
        """``conn``'s request is over: to the longest waiter, else onto the stack (the
        oldest idle one goes if it has expired); one that cannot be reused goes, and the
        longest waiter tries to open one. Returns the connections to close."""
        if self.closed or not conn.is_idle() or conn.has_expired():
            # Closed by the server, broken mid-response, or past its keep-alive: gone.
            self.forget(conn)
            self.wake(None)
            return [conn]
        if self.waiters and self.wake(conn):
            return []
        self.idle.append(conn)
        oldest = self.idle[0]
        if oldest is not conn and oldest.has_expired():
            self.idle.pop(0)
            self.forget(oldest)
            return [oldest]
        return []

    def close(self) -> tuple[list[C], list[W]]:
        """The pool is closed: every connection to close, and the waiters to fail."""
        self.closed = True
        self.idle = []
        conns = list(self.all)
        for conn in conns:
            self.forget(conn)
        waiters = list(self.waiters)
        self.waiters.clear()
        return conns, waiters


class _PoolBase(typing.Generic[C, W]):
    """What both pools hold: the endpoint, its cluster's limits, how its connections are
    made, and the book; and how a request starts."""

    def __init__(
        self,
        origin: httpcore.Origin,
        limits: Limits,
        keepalive_expiry: float | None,
        ssl_context: ssl.SSLContext | None,
        hand: typing.Callable[[W, C | None], bool],
    ) -> None:
        self._origin = origin
        self._limits = limits
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._book: _Book[C, W] = _Book(hand)

    def __repr__(self) -> str:
        return self._book.describe(type(self).__name__, self._origin)

    @property
    def connections(self) -> list[C]:
        """Every open connection (idle or busy), as httpcore's pools expose them."""
        return list(self._book.all)

    def _start(self, request: httpcore.Request) -> tuple[float | None, _Slots]:
        """The request's pool timeout and its (not yet taken) breaker slots."""
        if self._book.closed:
            raise httpcore.ConnectError(f"pool for {self._origin} is closed")
        timeouts = request.extensions.get("timeout") or {}
        count = request.extensions.get(COUNT_REQUEST, True)
        return timeouts.get("pool"), _Slots(self._limits.breaker, self._origin, count)


# -- the network backends that end a request's pending state when it is connected --------


class _Connecting(httpcore.NetworkBackend):
    """A new connection's backend: its request is attached once it is connected."""

    def __init__(self, inner: httpcore.NetworkBackend, slots: _Slots) -> None:
        self._inner = inner
        self._slots = slots

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions = None,
    ) -> httpcore.NetworkStream:
        try:
            stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        finally:
            self._slots.leave_pending()
        try:
            self._slots.attach()
        except BaseException:
            stream.close()
            raise
        return stream

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: SocketOptions = None
    ) -> httpcore.NetworkStream:
        try:
            stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        finally:
            self._slots.leave_pending()
        try:
            self._slots.attach()
        except BaseException:
            stream.close()
            raise
        return stream

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncConnecting(httpcore.AsyncNetworkBackend):
    """The asyncio twin of :class:`_Connecting`."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, slots: _Slots) -> None:
        self._inner = inner
        self._slots = slots

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            stream = await self._inner.connect_tcp(
                host, port, timeout, local_address, socket_options
            )
        finally:
            self._slots.leave_pending()
        try:
            self._slots.attach()
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: SocketOptions = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        finally:
            self._slots.leave_pending()
        try:
            self._slots.attach()
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# -- asyncio -----------------------------------------------------------------------------


def _hand_future(
    waiter: asyncio.Future[httpcore.AsyncHTTPConnection | None],
    conn: httpcore.AsyncHTTPConnection | None,
) -> bool:
    if waiter.done():  # cancelled, or timed out
        return False
    waiter.set_result(conn)
    return True


class _AsyncPooledStream:
    """The response body; closing it hands the connection back to the pool."""

    def __init__(
        self,
        inner: typing.AsyncIterable[bytes],
        pool: AsyncEndpointPool,
        conn: httpcore.AsyncHTTPConnection,
        slots: _Slots,
    ) -> None:
        self._inner = inner
        self._pool = pool
        self._conn: httpcore.AsyncHTTPConnection | None = conn
        self._slots = slots

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
                self._slots.detach()
                await self._pool._release(conn)


class AsyncEndpointPool(
    _PoolBase[httpcore.AsyncHTTPConnection, "asyncio.Future[httpcore.AsyncHTTPConnection | None]"]
):
    """HTTP/1.1 connections to one endpoint (``origin``) of the cluster ``limits``."""

    def __init__(
        self,
        origin: httpcore.Origin,
        limits: Limits,
        *,
        keepalive_expiry: float | None,
        ssl_context: ssl.SSLContext | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        super().__init__(origin, limits, keepalive_expiry, ssl_context, _hand_future)
        self._backend = network_backend or httpcore.AnyIOBackend()

    def _new(self, breaker: CircuitBreaker | None, slots: _Slots) -> httpcore.AsyncHTTPConnection:
        conn = httpcore.AsyncHTTPConnection(
            self._origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_AsyncConnecting(self._backend, slots),
        )
        self._book.all[conn] = breaker
        return conn

    async def _take_idle(self) -> httpcore.AsyncHTTPConnection | None:
        dead: list[httpcore.AsyncHTTPConnection] = []
        conn = self._book.take_idle(dead)
        for stale in dead:
            await stale.aclose()
        return conn

    async def _acquire(
        self, timeout: float | None, slots: _Slots
    ) -> tuple[httpcore.AsyncHTTPConnection, bool]:
        """A connection for one request, and whether it is new (the request is then
        attached when it has connected)."""
        conn = await self._take_idle()
        if conn is not None:
            return conn, False
        slots.enter_pending()
        breaker = slots.breaker
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._book.may_open(breaker):
                return self._new(breaker, slots), True
            waiter: asyncio.Future[httpcore.AsyncHTTPConnection | None]
            waiter = loop.create_future()
            self._book.waiters.append(waiter)
            left = None if deadline is None else max(deadline - loop.time(), 0.0)
            try:
                handed = await asyncio.wait_for(waiter, left)
            except asyncio.TimeoutError:
                raise httpcore.PoolTimeout(
                    f"no connection to {self._origin} within {timeout} s "
                    f"({len(self._book.all)} busy: the cluster's max_connections)"
                ) from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()  # handed over just as we were cancelled
                    if handed is not None:
                        await self._release(handed)
                    else:
                        self._book.wake(None)
                raise
            if handed is not None:
                return handed, False
            # A connection closed: its slot may be ours now (or an idle one is back).
            conn = await self._take_idle()
            if conn is not None:
                return conn, False

    async def _release(self, conn: httpcore.AsyncHTTPConnection) -> None:
        for gone in self._book.release(conn):
            await gone.aclose()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send ``request`` on an idle (or new) connection; the response's stream hands
        the connection back when it is closed. Raises :class:`PoolOverflow` when the
        cluster's max_pending_requests is reached."""
        timeout, slots = self._start(request)
        try:
            conn, new = await self._acquire(timeout, slots)
        except BaseException:
            slots.detach()
            raise
        try:
            if not new:
                slots.attach()
            resp = await conn.handle_async_request(request)
        except BaseException:
            slots.detach()
            await self._release(conn)
            raise
        assert isinstance(resp.stream, typing.AsyncIterable)
        resp.stream = _AsyncPooledStream(resp.stream, self, conn, slots)
        return resp

    async def aclose(self) -> None:
        """Close every connection; waiting requests fail with a pool timeout."""
        conns, waiters = self._book.close()
        for conn in conns:
            await conn.aclose()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(httpcore.PoolTimeout(f"pool for {self._origin} closed"))


# -- threads -----------------------------------------------------------------------------


class _PooledStream:
    """The response body; closing it hands the connection back to the pool."""

    def __init__(
        self,
        inner: typing.Iterable[bytes],
        pool: EndpointPool,
        conn: httpcore.HTTPConnection,
        slots: _Slots,
    ) -> None:
        self._inner = inner
        self._pool = pool
        self._conn: httpcore.HTTPConnection | None = conn
        self._slots = slots

    def __iter__(self) -> typing.Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        conn, self._conn = self._conn, None
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            if conn is not None:
                self._slots.detach()
                self._pool._release(conn)


class _Waiter:
    """A thread waiting for a connection: handed one, or told to try opening one."""

    __slots__ = ("conn", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.conn: httpcore.HTTPConnection | None = None


def _hand_thread(waiter: _Waiter, conn: httpcore.HTTPConnection | None) -> bool:
    waiter.conn = conn
    waiter.event.set()
    return True  # a thread that gave up has removed itself from the waiters


class EndpointPool(_PoolBase[httpcore.HTTPConnection, _Waiter]):
    """The threaded twin of :class:`AsyncEndpointPool` (same rules, one lock around the
    stack and the waiters; no I/O is done while holding it)."""

    def __init__(
        self,
        origin: httpcore.Origin,
        limits: Limits,
        *,
        keepalive_expiry: float | None,
        ssl_context: ssl.SSLContext | None = None,
        network_backend: httpcore.NetworkBackend | None = None,
    ) -> None:
        super().__init__(origin, limits, keepalive_expiry, ssl_context, _hand_thread)
        self._backend = network_backend or httpcore.SyncBackend()
        self._lock = threading.Lock()  # around every call into the book

    def _acquire(
        self, timeout: float | None, slots: _Slots
    ) -> tuple[httpcore.HTTPConnection, bool]:
        """A connection for one request, and whether it is new (the request is then
        attached when it has connected)."""
        book = self._book
        dead: list[httpcore.HTTPConnection] = []
        try:
            with self._lock:
                conn = book.take_idle(dead)
            if conn is not None:
                return conn, False
            slots.enter_pending()
            breaker = slots.breaker
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                with self._lock:
                    if book.closed:
                        raise httpcore.PoolTimeout(f"pool for {self._origin} closed")
                    conn = book.take_idle(dead)
                    if conn is not None:
                        return conn, False
                    if book.may_open(breaker):
                        conn = httpcore.HTTPConnection(
                            self._origin,
                            ssl_context=self._ssl_context,
                            keepalive_expiry=self._keepalive_expiry,
                            http1=True,
                            http2=False,
                            network_backend=_Connecting(self._backend, slots),
                        )
                        book.all[conn] = breaker
                        return conn, True
                    waiter = _Waiter()
                    book.waiters.append(waiter)
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                waiter.event.wait(left)
                with self._lock:
                    if not waiter.event.is_set():
                        book.waiters.remove(waiter)
                        raise httpcore.PoolTimeout(
                            f"no connection to {self._origin} within {timeout} s "
                            f"({len(book.all)} busy: the cluster's max_connections)"
                        )
                if waiter.conn is not None:
                    return waiter.conn, False
                # A connection closed: try again (open one, or an idle one came back).
        finally:
            for conn in dead:
                conn.close()

    def _release(self, conn: httpcore.HTTPConnection) -> None:
        with self._lock:
            close = self._book.release(conn)
        for c in close:
            c.close()

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send ``request`` on an idle (or new) connection; the response's stream hands
        the connection back when it is closed. Raises :class:`PoolOverflow` when the
        cluster's max_pending_requests is reached."""
        timeout, slots = self._start(request)
        try:
            conn, new = self._acquire(timeout, slots)
        except BaseException:
            slots.detach()
            raise
        try:
            if not new:
                slots.attach()
            resp = conn.handle_request(request)
        except BaseException:
            slots.detach()
            self._release(conn)
            raise
        assert isinstance(resp.stream, typing.Iterable)
        resp.stream = _PooledStream(resp.stream, self, conn, slots)
        return resp

    def close(self) -> None:
        """Close every connection; waiting requests fail with a pool timeout."""
        with self._lock:
            conns, waiters = self._book.close()
        for conn in conns:
            conn.close()
        for waiter in waiters:
            waiter.event.set()  # it finds the pool closed
