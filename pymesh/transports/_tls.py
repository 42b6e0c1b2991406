"""httpcore network backends that do a cluster's TLS: current context, SNI, SAN check.

The backend of an endpoint's pool looks the cluster's TLS config up at connect time
(:func:`tls_lookup`). For a TLS cluster it does the whole upgrade inside
``connect_tcp``: TCP connect, TLS handshake with the cluster's *current* context (so a
rotated certificate applies to the next connection without rebuilding pools), then the
SAN check. A peer with the wrong identity is disconnected before httpcore writes a
single request byte (:class:`~pymesh.security.PeerIdentityError`); a TLS config that
cannot be satisfied raises TlsConfigError before any socket is opened.

Why in ``connect_tcp`` rather than in ``start_tls`` (an ``https`` URL): the decision
then follows the endpoint's actual cluster (aggregate leaves, mirrors) at the moment
of connecting, with no window where a request URL and the cluster config disagree.
httpcore still sees ``ssl_object`` and negotiates HTTP/2 from ALPN. Pools get
:func:`refusing_ssl_context` as their own context: if anything ever asks httpcore to
start TLS itself, the handshake fails instead of connecting unverified.
"""

from __future__ import annotations

import ssl
import typing
from collections.abc import Callable

import httpcore

from pymesh._mesh import Mesh
from pymesh._upstream import ClusterRuntime
from pymesh.security import ClientTls

__all__ = ["AsyncMeshTlsBackend", "MeshTlsBackend", "refusing_ssl_context", "tls_lookup"]

#: Returns the cluster's current ClientTls, None for plaintext (raises TlsConfigError).
TlsLookup = Callable[[], ClientTls | None]

_refusing: ssl.SSLContext | None = None


def refusing_ssl_context() -> ssl.SSLContext:
    """A client context that trusts nothing: any handshake made with it fails."""
    global _refusing
    if _refusing is None:
        _refusing = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, no roots
    return _refusing


def tls_lookup(mesh: Mesh, rt: ClusterRuntime) -> TlsLookup:
    """A function giving ``rt``'s current client TLS state (None: plaintext)."""

    def lookup() -> ClientTls | None:
        return rt.client_tls(mesh.security)

    return lookup


def _peer_der(stream: httpcore.NetworkStream | httpcore.AsyncNetworkStream) -> bytes | None:
    obj = stream.get_extra_info("ssl_object")
    if obj is None:
        return None
    # Positional: sync httpcore exposes the internal _ssl._SSLSocket (no kwargs).
    der: bytes | None = obj.getpeercert(True)
    return der


class MeshTlsBackend(httpcore.NetworkBackend):
    """A sync backend for one cluster's pools; ``lookup`` gives its current TLS state."""

    def __init__(self, lookup: TlsLookup, inner: httpcore.NetworkBackend | None = None) -> None:
        self._lookup = lookup
        self._inner = inner or httpcore.SyncBackend()

    def _secure(
        self, stream: httpcore.NetworkStream, tls: ClientTls | None, timeout: float | None
    ) -> httpcore.NetworkStream:
        if tls is None:
            return stream
        try:
            secure = stream.start_tls(tls.context(), tls.sni, timeout)
        except BaseException:
            stream.close()
            raise
        try:
            tls.check_peer(_peer_der(secure))
        except BaseException:
            secure.close()  # the TLS stream owns the socket now
            raise
        return secure

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._lookup()  # before connecting: a broken TLS config opens no socket
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return self._secure(stream, tls, timeout)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._lookup()
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        return self._secure(stream, tls, timeout)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class AsyncMeshTlsBackend(httpcore.AsyncNetworkBackend):
    """The asyncio twin of :class:`MeshTlsBackend` (wraps httpcore's AnyIO backend)."""

    def __init__(
        self, lookup: TlsLookup, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._lookup = lookup
        self._inner = inner or httpcore.AnyIOBackend()

    async def _secure(
        self, stream: httpcore.AsyncNetworkStream, tls: ClientTls | None, timeout: float | None
    ) -> httpcore.AsyncNetworkStream:
        if tls is None:
            return stream
        try:
            secure = await stream.start_tls(tls.context(), tls.sni, timeout)
        except BaseException:
            await stream.aclose()
            raise
        try:
            tls.check_peer(_peer_der(secure))
        except BaseException:
            await secure.aclose()  # the TLS stream owns the socket now
            raise
        return secure

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = self._lookup()
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return await self._secure(stream, tls, timeout)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = self._lookup()
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return await self._secure(stream, tls, timeout)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
