"""pymesh.wsgi: the RBAC middleware on WSGI environs, and behind a real TLS WSGI server."""

from __future__ import annotations

import ssl
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from _asgi_helpers import front_gets, get_as, server_context
from _sec_helpers import SPIFFE, Pki

from pymesh.security import RbacAuthorizer
from pymesh.wsgi import RbacMiddleware, rbac_request
from pymesh.xds.resources.rbac import (
    AnyRule,
    RbacConfig,
    RbacPolicy,
    RbacRules,
)

BODY = b"hello from the wsgi app"


class App:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls += 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [BODY]


def environ(**extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/orders/a b",
        "QUERY_STRING": "x=1",
        "HTTP_HOST": "orders:8443",
        "HTTP_X_A": "1",
        "HTTP_TE": "trailers",
        "CONTENT_TYPE": "text/plain",
        "REMOTE_ADDR": "10.0.0.5",
        "REMOTE_PORT": "5000",
        "SERVER_NAME": "10.0.0.9",
        "SERVER_PORT": "8443",
        "wsgi.url_scheme": "http",
    }
    env.update(extra)
    return env


def call(app: Any, env: dict[str, Any]) -> tuple[str, bytes]:
    seen: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        seen.append(status)

    body = b"".join(app(env, start_response))
    return seen[0], body


def test_request_view_of_an_environ(pki: Pki) -> None:
    r = rbac_request(environ())
    assert r.request.method == "GET" and r.request.authority == "orders:8443"
    assert r.request.path == "/orders/a%20b?x=1"
    assert r.request.headers == {"x-a": "1", "content-type": "text/plain"}  # no te
    assert (r.peer_address, r.peer_port, r.local_port) == ("10.0.0.5", 5000, 8443)
    pem = pki.issue("frontend").cert_pem.decode()
    r = rbac_request(environ(**{"wsgi.url_scheme": "https", "SSL_CLIENT_CERT": pem}))
    assert r.tls and r.peer_certificate is not None
    assert r.peer_certificate.uri_sans == (SPIFFE + "frontend",)
    # nginx's $ssl_client_escaped_cert is URL-escaped.
    escaped = urllib.parse.quote(pem)
    r = rbac_request(environ(**{"wsgi.url_scheme": "https", "SSL_CLIENT_CERT": escaped}))
    assert r.peer_certificate is not None and r.peer_certificate.spiffe_id == SPIFFE + "frontend"


def test_allow_deny_and_fail_closed(pki: Pki) -> None:
    app = App()
    mw = RbacMiddleware(app, front_gets())
    front = pki.issue("frontend").cert_pem.decode()
    batch = pki.issue("batch").cert_pem.decode()
    https = {"wsgi.url_scheme": "https"}
    assert call(mw, environ(**https, SSL_CLIENT_CERT=front)) == ("200 OK", BODY)
    assert call(mw, environ(**https, SSL_CLIENT_CERT=batch)) == (
        "403 Forbidden",
        b"RBAC: access denied",
    )
    post = environ(**https, SSL_CLIENT_CERT=front, REQUEST_METHOD="POST")
    assert call(mw, post)[0] == "403 Forbidden"
    assert call(mw, environ(**https))[0] == "500 Internal Server Error"  # no certificate info
    garbled = environ(**https, SSL_CLIENT_CERT="-----BEGIN CERTIFICATE-----\nnope\n")
    assert call(mw, garbled)[0] == "500 Internal Server Error"
    assert call(mw, environ())[0] == "403 Forbidden"  # plaintext: not authenticated
    assert app.calls == 1
    anyone = RbacAuthorizer.from_config(
        RbacConfig(RbacRules("ALLOW", (("all", RbacPolicy((AnyRule(),), (AnyRule(),))),)))
    )
    current: list[RbacAuthorizer | None] = [None]
    mw2 = RbacMiddleware(app, lambda: current[0])
    assert call(mw2, environ())[0] == "503 Service Unavailable"
    current[0] = anyone
    assert call(mw2, environ()) == ("200 OK", BODY)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _TlsHandler(WSGIRequestHandler):
    """Exports the verified client certificate as Werkzeug's server does."""

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        der = self.connection.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        if der:
            env["SSL_CLIENT_CERT"] = ssl.DER_cert_to_PEM_cert(der)
        env["HTTPS"] = "on"  # wsgiref derives wsgi.url_scheme from it
        return env

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def tls_wsgi(pki: Pki, tmp_path: Path) -> Iterator[tuple[App, int]]:
    app = App()
    files = pki.write(tmp_path / "server", pki.issue("orders"))
    httpd = make_server("127.0.0.1", 0, RbacMiddleware(app, front_gets()), _Server, _TlsHandler)
    ctx = server_context(files)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield app, httpd.server_port
    httpd.shutdown()
    httpd.server_close()


def test_real_tls_wsgi_server(tls_wsgi: tuple[App, int], pki: Pki, tmp_path: Path) -> None:
    app, port = tls_wsgi
    url = f"https://127.0.0.1:{port}/orders"
    assert get_as(pki, tmp_path, "frontend", url) == (200, BODY)
    assert get_as(pki, tmp_path, "batch", url) == (403, b"RBAC: access denied")
    assert app.calls == 1
