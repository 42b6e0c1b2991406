"""Envoy's ``max_requests_per_connection`` for httpcore pools (HTTP/1.1 upstreams).

httpcore has no such limit, but before it reuses an idle connection it asks the
connection's network stream whether it is readable: an idle HTTP/1.1 connection that is
readable can only be one the server closed, so httpcore closes it and opens a new one.
:class:`LimitedBackend` wraps each connection's stream so that it reports exactly that
once the connection has carried its last allowed request. The effect is Envoy's: no
connection carries more than N requests, and the N-th one is not interrupted.

A request is counted when its first bytes are written after a read (httpcore does not
pipeline HTTP/1.1: a connection's next request starts only after the previous response
was read), so counting needs no hook on the request path.
"""

from __future__ import annotations

import ssl
import typing

import httpcore

__all__ = ["AsyncLimitedBackend", "LimitedBackend"]

SocketOptions = typing.Iterable[typing.Any] | None


class _Count:
    """Requests started on one connection (shared by its plain and TLS streams)."""

    __slots__ = ("fresh", "limit", "started")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.started = 0
        self.fresh = True  # the next write starts a new request

    def wrote(self) -> None:
        if self.fresh:
            self.fresh = False
            self.started += 1

    def exhausted(self) -> bool:
        return self.started >= self.limit


class _LimitedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, count: _Count) -> None:
        self._inner = inner
        self._count = count

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._count.fresh = True
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._count.wrote()
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _LimitedStream(
            self._inner.start_tls(ssl_context, server_hostname, timeout), self._count
        )

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable" and self._count.exhausted():
            return True  # "the server closed it": httpcore retires the connection
        return self._inner.get_extra_info(info)


class _AsyncLimitedStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, count: _Count) -> None:
        self._inner = inner
        self._count = count

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._count.fresh = True
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._count.wrote()
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _AsyncLimitedStream(inner, self._count)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable" and self._count.exhausted():
            return True
        return self._inner.get_extra_info(info)


class LimitedBackend(httpcore.NetworkBackend):
    """Wraps a sync backend: each connection carries at most ``limit`` requests."""

    def __init__(self, limit: int, inner: httpcore.NetworkBackend | None = None) -> None:
        self._limit = limit
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _LimitedStream(stream, _Count(self._limit))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: SocketOptions = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        return _LimitedStream(stream, _Count(self._limit))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class AsyncLimitedBackend(httpcore.AsyncNetworkBackend):
    """The asyncio twin of :class:`LimitedBackend`."""

    def __init__(self, limit: int, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._limit = limit
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AsyncLimitedStream(stream, _Count(self._limit))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: SocketOptions = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return _AsyncLimitedStream(stream, _Count(self._limit))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
