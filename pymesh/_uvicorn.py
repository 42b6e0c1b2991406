"""uvicorn glue for :mod:`pymesh.asgi` (imported only when used: uvicorn is optional).

uvicorn (checked: 0.55) does not put the ASGI TLS extension into scopes. Its documented
extension points are the ``http`` option (a protocol class) and ``ssl_context_factory``:
the protocol classes here wrap the app per connection, once the TLS handshake is done
(asyncio calls ``connection_made`` after it), so every scope of the connection carries
``extensions["tls"]`` with the verified client certificate.
"""

from __future__ import annotations

import ssl
from typing import Any

from pymesh.errors import MeshError


def _import_uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MeshError(
            "pymesh.asgi.uvicorn_config needs uvicorn: pip install 'uvicorn>=0.55'"
        ) from exc
    return uvicorn


_classes: dict[object, type[Any]] = {}


def with_tls_scope(base: type[Any]) -> type[Any]:
    """A subclass of the uvicorn protocol ``base`` (HTTP or WebSocket) whose app sees
    ``scope["extensions"]["tls"]`` for every scope of a TLS connection."""
    cls = _classes.get(base)
    if cls is not None:
        return cls
    from pymesh.asgi import tls_extension

    def connection_made(self: Any, transport: Any) -> None:
        base.connection_made(self, transport)
        # asyncio calls connection_made after the TLS handshake: the peer is verified.
        ext = tls_extension(transport.get_extra_info("ssl_object"))
        if ext is None:
            return
        app = self.app

        async def with_tls(scope: Any, receive: Any, send: Any) -> None:
            extensions = scope.get("extensions")
            if extensions is None:
                extensions = scope["extensions"] = {}
            extensions["tls"] = ext
            await app(scope, receive, send)

        self.app = with_tls

    cls = type(f"Tls{base.__name__}", (base,), {"connection_made": connection_made})
    _classes[base] = cls
    return cls


def protocol(kind: str) -> type[Any]:
    """The TLS-extension protocol class for uvicorn's ``kind`` HTTP implementation."""
    _import_uvicorn()
    base: type[Any]
    if kind == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    elif kind == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    else:
        raise MeshError(f"unknown uvicorn http implementation {kind!r}; use h11 or httptools")
    return with_tls_scope(base)


def ws_protocol(ws: Any) -> Any:
    """uvicorn's ``ws`` option with the TLS extension added (None/"none": no WebSocket).

    uvicorn hands an upgraded connection to a WebSocket protocol built from the config's
    app, not the HTTP protocol's, so it needs the same wrapping."""
    if ws is None or ws == "none":
        return ws
    if isinstance(ws, str):
        from uvicorn.config import WS_PROTOCOLS
        from uvicorn.importer import import_from_string

        ws = import_from_string(WS_PROTOCOLS.get(ws, ws))
        if ws is None:
            return "none"  # no WebSocket library installed
    return with_tls_scope(ws)


def config(app: Any, *, ssl_context: ssl.SSLContext, http: str = "h11", **kwargs: Any) -> Any:
    uvicorn = _import_uvicorn()
    # uvicorn trusts X-Forwarded-For/-Proto from 127.0.0.1 by default; a mesh server's
    # RBAC needs the connection's own peer address and scheme.
    kwargs.setdefault("proxy_headers", False)
    kwargs["ws"] = ws_protocol(kwargs.get("ws", "auto"))
    return uvicorn.Config(
        app,
        http=protocol(http),
        ssl_context_factory=lambda _config, _default: ssl_context,
        **kwargs,
    )
