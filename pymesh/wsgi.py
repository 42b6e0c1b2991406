"""WSGI servers in the mesh: the same RBAC as :mod:`pymesh.asgi`, for WSGI apps.

:class:`RbacMiddleware` wraps a WSGI app and answers ``403 RBAC: access denied`` before
the app runs when the policies deny a request; its ``rbac`` source is the same as the
ASGI middleware's (an :class:`~pymesh.asgi.XdsListener`, an
:class:`~pymesh.security.RbacAuthorizer`, an :class:`~pymesh.security.RbacRoutes` or a
callable returning one).

The client certificate is read from ``environ["SSL_CLIENT_CERT"]`` (PEM), the
convention of Apache mod_ssl (``SSLOptions +ExportCertData``) that Werkzeug's server sets
too (``run_simple(..., ssl_context=mesh.server_ssl_context())``); nginx's URL-escaped
form (``$ssl_client_escaped_cert``) is accepted. WSGI has no standard place for the
connection's local address: ``SERVER_NAME`` / ``SERVER_PORT`` stand in for it. An
``https`` request without ``SSL_CLIENT_CERT`` is refused with 500 (fail closed, one error
log): a server that does not pass the certificate cannot run identity policies.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pymesh.asgi import (
    HOP_BY_HOP,
    LOCAL_REPLIES,
    XdsListener,
    authorize,
    peer_certificate_from_pem,
)
from pymesh.routing._request import RequestInfo
from pymesh.security._rbac import (
    PeerCertificate,
    RbacAuthorizer,
    RbacDecision,
    RbacRequest,
    RbacRoutes,
)

__all__ = ["RbacMiddleware", "rbac_request"]

logger = logging.getLogger("pymesh.wsgi")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Source = RbacAuthorizer | RbacRoutes | XdsListener

_STATUS = {
    403: "403 Forbidden",
    404: "404 Not Found",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


class _MissingCert(Exception):
    pass


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def rbac_request(environ: Mapping[str, Any], cert_key: str = "SSL_CLIENT_CERT") -> RbacRequest:
    """What RBAC reads from a WSGI environ."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key.replace("_", "-").lower()
        else:
            continue
        if name in HOP_BY_HOP or name == "host" or not value:
            continue
        headers[name] = str(value)
    authority = environ.get("HTTP_HOST") or (
        f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    )
    # The raw request target when the server gives it (not percent-decoded, as Envoy
    # sees the path); else PATH_INFO re-quoted.
    path = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if not path:
        path = urllib.parse.quote(
            str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")) or "/"
        )
        query = environ.get("QUERY_STRING")
        if query:
            path = f"{path}?{query}"
    tls = environ.get("wsgi.url_scheme") == "https"
    cert: PeerCertificate | None = None
    if tls:
        pem = environ.get(cert_key)
        if pem is None:
            raise _MissingCert
        if pem:
            text = str(pem)
            if "%" in text:
                text = urllib.parse.unquote(text)
            try:
                cert = peer_certificate_from_pem(text)
            except ValueError:  # not a certificate: refuse rather than guess
                raise _MissingCert from None
    return RbacRequest(
        RequestInfo(str(environ.get("REQUEST_METHOD", "GET")), authority, path, headers),
        peer_address=str(environ.get("REMOTE_ADDR", "")),
        peer_port=_int(environ.get("REMOTE_PORT")),
        local_address=str(environ.get("SERVER_NAME", "")),
        local_port=_int(environ.get("SERVER_PORT")),
        tls=tls,
        peer_certificate=cert,
    )


class RbacMiddleware:
    """Apply RBAC to every request before the WSGI ``app`` runs (see the module docs).

    Denied: ``403 RBAC: access denied``; no route: 404; no config yet (or the Listener
    is not serving): 503; ``https`` without ``SSL_CLIENT_CERT``: 500.
    """

    def __init__(
        self,
        app: WSGIApp,
        rbac: Source | Callable[[], Source | None],
        *,
        cert_key: str = "SSL_CLIENT_CERT",
    ) -> None:
        self.app = app
        self.cert_key = cert_key
        if isinstance(rbac, (RbacAuthorizer, RbacRoutes, XdsListener)):
            fixed: Source = rbac
            self._source: Callable[[], Source | None] = lambda: fixed
        else:
            self._source = rbac
        self._warned = False

    def decide(self, environ: Mapping[str, Any]) -> RbacDecision | int:
        """The decision for one request, or the status of a local reply."""
        source = self._source()
        if source is None:
            return 503
        try:
            req = rbac_request(environ, self.cert_key)
        except _MissingCert:
            if not self._warned:
                self._warned = True
                logger.error(
                    "RBAC: an https request carries no %s in its WSGI environ, so the "
                    "client certificate is unknown; refusing requests with 500",
                    self.cert_key,
                )
            return 500
        return authorize(source, req)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        decision = self.decide(environ)
        if isinstance(decision, int):
            status, body = decision, LOCAL_REPLIES[decision]
        elif not decision.allowed:
            status, body = 403, b"RBAC: access denied"
        else:
            return self.app(environ, start_response)
        start_response(
            _STATUS[status],
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]
