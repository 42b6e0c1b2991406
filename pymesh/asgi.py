"""ASGI servers in the mesh: xDS-delivered mTLS and RBAC (gRFC A36, A41) on each request.

:class:`RbacMiddleware` wraps any ASGI app. For each HTTP (or WebSocket) request it builds
what RBAC reads: method, path, headers, authority, the connection's addresses and the
peer's *verified* client certificate, and answers ``403 RBAC: access denied`` (Envoy's
reply) when the policies deny it, before the app sees the request. Denials are logged
with the policy name and counted (``pymesh.server.rbac.denied``).

Where the policies come from: :class:`XdsListener` follows the mesh's server Listener for
the listening address (filter chains, DownstreamTlsContext, routes and their RBAC
filters), so the control plane decides and its updates apply to the next request.

The client certificate comes from the ASGI TLS extension (``scope["extensions"]["tls"]
["client_cert_chain"]``, PEM). uvicorn and hypercorn do not fill that extension
themselves; :func:`uvicorn_config` runs uvicorn with protocol classes that do (from the
connection's ``ssl_object``) and with the mesh's mTLS :class:`ssl.SSLContext` (client
certificates required, rotated from the bootstrap certificate providers)::

    import asyncio, pymesh, uvicorn
    from pymesh.asgi import RbacMiddleware, XdsListener, uvicorn_config

    mesh = pymesh.Mesh.from_env()
    listener = XdsListener(mesh, "0.0.0.0:8443")
    config = uvicorn_config(RbacMiddleware(my_app, listener),
                            ssl_context=listener.ssl_context())
    asyncio.run(uvicorn.Server(config).serve(sockets=[listener.socket()]))

A request on a TLS connection without the TLS extension (a server that does not provide
it) is refused with 500 and an error log, never evaluated without the peer's identity:
a DENY policy on an identity must not be bypassed by a missing certificate.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from pymesh.errors import MeshError
from pymesh.routing._request import RequestInfo
from pymesh.security._rbac import (
    ALLOWED,
    PeerCertificate,
    RbacAuthorizer,
    RbacDecision,
    RbacRequest,
    RbacRoutes,
    peer_certificate_from_pem,
)
from pymesh.security.san import san_matches
from pymesh.xds.resources.server_listener import Connection
from pymesh.xds.resources.tls import SanType

if TYPE_CHECKING:
    from pymesh._mesh import Mesh
    from pymesh.grpc._xds_server import ServingConfig

__all__ = [
    "PeerCertificate",
    "RbacAuthorizer",
    "RbacDecision",
    "RbacMiddleware",
    "RbacRoutes",
    "RbacSource",
    "peer_certificate_from_pem",
    "rbac_request",
    "tls_extension",
    "uvicorn_config",
    "uvicorn_protocol",
]

logger = logging.getLogger("pymesh.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: What the middleware evaluates: one chain for every request, or per-route chains.
RbacSource = RbacAuthorizer | RbacRoutes

#: Hop-by-hop headers are not present for RBAC (gRFC A41, RFC 7230 §6.1).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"}
)

_DENIED_BODY = b"RBAC: access denied"

#: Bodies of the local replies other than an RBAC denial (shared with pymesh.wsgi).
LOCAL_REPLIES: dict[int, bytes] = {
    403: b"the connection does not meet the listener's TLS requirements",
    404: b"no route",
    500: b"RBAC: the server does not provide the client certificate",
    503: b"not serving: no valid server Listener or route configuration yet",
}


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, Any] | None:
    """The ASGI TLS extension dict for a connection's completed handshake (None without
    TLS). Python exposes only the peer's leaf certificate, so ``client_cert_chain`` holds
    that one certificate (verified against the server context's roots)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    name = peer_certificate_from_pem(chain[0]).subject if chain else None
    version = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}.get(ssl_object.version() or "")
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": version,
        "cipher_suite": None,
    }


def _addr(value: Any) -> tuple[str, int]:
    if isinstance(value, (list, tuple)) and len(value) >= 2:
        return str(value[0]), int(value[1] or 0)
    return "", 0


def _latin1(b: bytes | str) -> str:
    return b.decode("latin-1") if isinstance(b, bytes) else b


class _MissingTls(Exception):
    pass


def rbac_request(scope: Scope) -> RbacRequest:
    """What RBAC reads from an ASGI ``http`` / ``websocket`` scope."""
    headers: dict[str, str] = {}
    repeated: dict[str, list[str]] | None = None
    authority = ""
    for raw_name, raw_value in scope.get("headers") or ():
        name = _latin1(raw_name).lower()
        value = _latin1(raw_value)
        if name in HOP_BY_HOP:
            continue
        if name in ("host", ":authority"):
            authority = value
            continue
        prev = headers.get(name)
        if prev is None:
            headers[name] = value
        else:
            # A41: a repeated header is its values joined with "," (no spaces); Envoy
            # also matches value by value (RequestInfo.repeated).
            headers[name] = prev + "," + value
            if repeated is None:
                repeated = {}
            repeated.setdefault(name, [prev]).append(value)
    raw_path = scope.get("raw_path")
    path = _latin1(raw_path) if raw_path else scope.get("path", "/")
    query = scope.get("query_string") or b""
    if query:
        path = f"{path}?{_latin1(query)}"
    method = scope.get("method", "GET")
    # The TLS extension, not the scheme, says whether the connection is TLS: a proxy-
    # headers middleware (uvicorn's is on by default) rewrites the scheme from
    # X-Forwarded-Proto, which the caller controls.
    ext = (scope.get("extensions") or {}).get("tls")
    tls = ext is not None
    cert: PeerCertificate | None = None
    if ext is None:
        if scope.get("scheme") in ("https", "wss"):
            raise _MissingTls
    else:
        chain = ext.get("client_cert_chain") or ()
        if chain:
            try:
                cert = peer_certificate_from_pem(_latin1(chain[0]))
            except ValueError:  # not a certificate: refuse rather than guess
                raise _MissingTls from None
    peer_ip, peer_port = _addr(scope.get("client"))
    local_ip, local_port = _addr(scope.get("server"))
    return RbacRequest(
        RequestInfo(method, authority, path, headers, repeated=repeated),
        peer_address=peer_ip,
        peer_port=peer_port,
        local_address=local_ip,
        local_port=local_port,
        tls=tls,
        peer_certificate=cert,
    )


async def _reply(scope: Scope, send: Send, status: int, body: bytes) -> None:
    if scope["type"] == "websocket":
        # Closing before accept makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008})
        return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RbacMiddleware:
    """Apply RBAC to every HTTP and WebSocket request before ``app`` sees it.

    ``rbac`` is an :class:`XdsListener` (the server Listener for the address, from the
    mesh: filter chains, routes and their RBAC filters, updated by xDS), an
    :class:`~pymesh.security._rbac.RbacAuthorizer` (one chain for every request), an
    :class:`~pymesh.security._rbac.RbacRoutes` (per-route overrides from a server route
    configuration), or a callable returning the current one (read per request, so a new
    config applies to the next request; None: the config has not arrived and requests
    are refused with 503, fail closed).

    Denied: ``403 RBAC: access denied`` (WebSocket: closed before accept). No route in
    the route configuration: 404, as Envoy. Other scope types (lifespan) pass through.
    """

    def __init__(
        self,
        app: ASGIApp,
        rbac: RbacSource | XdsListener | Callable[[], RbacSource | XdsListener | None],
        *,
        resource_name: str | None = None,
    ) -> None:
        self.app = app
        self.resource_name = resource_name
        if isinstance(rbac, (RbacAuthorizer, RbacRoutes, XdsListener)):
            fixed: RbacSource | XdsListener = rbac
            self._source: Callable[[], RbacSource | XdsListener | None] = lambda: fixed
        else:
            self._source = rbac
        self._warned_tls = False

    def decide(self, scope: Scope) -> RbacDecision | int:
        """The decision for one scope, or an HTTP status for a local reply
        (404: no route, 500: no TLS info, 503: no config yet or not serving)."""
        source = self._source()
        if source is None:
            return 503
        try:
            req = rbac_request(scope)
        except _MissingTls:
            if not self._warned_tls:
                self._warned_tls = True
                logger.error(
                    "RBAC: a TLS request carries no ASGI TLS extension "
                    '(scope["extensions"]["tls"]), so the client certificate is unknown; '
                    "refusing requests with 500. Run uvicorn with "
                    "pymesh.asgi.uvicorn_config(...) or a server that provides the extension"
                )
            return 500
        return authorize(source, req)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        decision = self.decide(scope)
        if isinstance(decision, int):
            await _reply(scope, send, decision, LOCAL_REPLIES[decision])
            return
        if not decision.allowed:
            await _reply(scope, send, 403, _DENIED_BODY)
            return
        await self.app(scope, receive, send)


def authorize(source: RbacSource | XdsListener, req: RbacRequest) -> RbacDecision | int:
    """RBAC for one request from ``source``; an int is the status of a local reply."""
    if isinstance(source, XdsListener):
        return source.authorize(req)
    auth = source.authorizer_for(req.request)
    if auth is None:
        return 404
    return auth.check(req, protocol="http")


class XdsListener:
    """The server Listener of one listening address, from the mesh (gRFC A36), for HTTP
    servers: ``pymesh.asgi.RbacMiddleware(app, XdsListener(mesh, "0.0.0.0:8443"))``.

    It watches the Listener named by the bootstrap's
    ``server_listener_resource_name_template`` with ``%s`` = ``IP:PORT`` (port 0: a free
    port is reserved; :attr:`port` says which) and the RouteConfigurations its chains
    name, and keeps the latest valid config (one attribute, read per request). Per
    request, as a gRPC xDS server: the filter chain for the connection (none: 503), its
    TLS requirements (a plaintext request on a TLS chain, or a client certificate
    outside the chain's SAN matchers: 403), the route (none: 404; not a
    ``non_forwarding_action``: 503) and the route's RBAC filters (with overrides).
    Before the first valid Listener, and while the Listener is unusable: 503.

    :meth:`socket` gives a listening socket on the reserved port for the HTTP server;
    :meth:`ssl_context` the mesh's mTLS context for the Listener's DownstreamTlsContext.
    """

    def __init__(self, mesh: Mesh, address: str) -> None:
        from pymesh.grpc._xds_server import XdsPort, route_for

        self._route_for = route_for
        self._serving = threading.Event()
        self.config: ServingConfig | None = None
        self._mesh = mesh
        self._port = XdsPort(mesh, address, self._on_change)
        self.address: str = self._port.address
        self.port: int = self._port.port
        self.listener_name: str = self._port.listener_name
        self._port.start()

    def _on_change(self, config: ServingConfig | None) -> None:
        # Called on the xDS thread; requests read self.config without a lock.
        self.config = config
        if config is None:
            self._serving.clear()
        else:
            self._serving.set()

    def wait_serving(self, timeout: float = 30.0) -> ServingConfig:
        """Block until a valid Listener (and its routes) arrived; MeshError on timeout."""
        if not self._serving.wait(timeout):
            raise MeshError(
                f"no valid server Listener {self.listener_name!r} for {self.address} within "
                f"{timeout:g}s (see the pymesh.grpc.server log for why)",
                resource_name=self.listener_name,
            )
        config = self.config
        assert config is not None
        return config

    def socket(self, backlog: int = 1024) -> socket.socket:
        """A listening TCP socket on this address (SO_REUSEPORT beside the reservation)."""
        ip = self._port.ip
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, self.port))
        sock.listen(backlog)
        return sock

    def ssl_context(self, timeout: float = 30.0) -> ssl.SSLContext | None:
        """The mesh's mTLS server context for the Listener's DownstreamTlsContext (its
        identity and validation certificate provider instances; client certificates are
        required), or None for a plaintext Listener. Waits for the Listener."""
        security = self.wait_serving(timeout).security
        if security is None:
            return None
        roots = security.validation.instance_name if security.validation else None
        return self._mesh.server_ssl_context(security.identity.instance_name, roots)

    def authorize(self, req: RbacRequest) -> RbacDecision | int:
        config = self.config
        if config is None:
            return 503
        chain = config.listener.select(
            Connection(config.listen_ip, req.peer_address, req.peer_port)
        )
        if chain is None:
            return 503
        tls = chain.tls
        if tls is not None:
            if not req.tls:
                return 403
            if tls.san_matchers and not _sans_match(tls.san_matchers, req.peer_certificate):
                return 403
        auth = self._route_for(config, chain, req.request)
        if not isinstance(auth, RbacAuthorizer):
            return 404 if auth.no_route else 503
        if not auth.enforcing:
            return ALLOWED
        return auth.check(req, protocol="http")

    def close(self) -> None:
        """Stop watching and release the reserved port."""
        self._port.close()

    def __repr__(self) -> str:
        state = "serving" if self.config is not None else "not serving"
        return f"<XdsListener {self.address} {self.listener_name!r} {state}>"


def _sans_match(matchers: Any, cert: PeerCertificate | None) -> bool:
    if cert is None:
        return False
    sans: list[tuple[SanType, str]] = [("URI", u) for u in cert.uri_sans]
    sans += [("DNS", d) for d in cert.dns_sans]
    return any(san_matches(m, t, v) for t, v in sans for m in matchers)


# ---- uvicorn ---------------------------------------------------------------------------


def uvicorn_protocol(kind: str = "h11") -> type[Any]:
    """A uvicorn HTTP protocol class (``"h11"`` or ``"httptools"``) that puts the ASGI
    TLS extension (the client certificate) into every scope of a TLS connection."""
    from pymesh import _uvicorn

    return _uvicorn.protocol(kind)


def uvicorn_config(
    app: ASGIApp, *, ssl_context: ssl.SSLContext, http: str = "h11", **kwargs: Any
) -> Any:
    """A ``uvicorn.Config`` serving ``app`` over ``ssl_context`` (e.g.
    ``mesh.server_ssl_context()``) with the TLS extension in each scope.

    Uses uvicorn's ``ssl_context_factory`` and ``http`` protocol-class options
    (uvicorn >= 0.55). ``kwargs`` go to ``uvicorn.Config`` (host, port, log_level, ...);
    ``proxy_headers`` defaults to False here: RBAC's peer address must be the
    connection's (gRFC A41), not one a caller wrote into X-Forwarded-For.
    """
    from pymesh import _uvicorn

    return _uvicorn.config(app, ssl_context=ssl_context, http=http, **kwargs)
