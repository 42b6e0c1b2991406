"""pymesh.asgi: the RBAC middleware on ASGI scopes, and under a real uvicorn with mTLS."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _asgi_helpers import (
    ANY,
    APP_BODY,
    App,
    UvicornThread,
    client_context,
    get_as,
    identity_is,
    method_is,
    one_policy,
    server_context,
)
from _polling import wait_until
from _sec_helpers import SPIFFE, Pki

from pymesh.asgi import RbacMiddleware, rbac_request, tls_extension
from pymesh.security._rbac import RbacAuthorizer, RbacRoutes
from pymesh.xds.resources.rbac import (
    RbacConfig,
)
from pymesh.xds.resources.route import (
    NonForwardingAction,
    Route,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)

FRONT = SPIFFE + "frontend"


def allow_only(identity: str, *, name: str = "rbac") -> RbacAuthorizer:
    policy = "only-" + identity.rsplit("/", 1)[-1]
    return one_policy("ALLOW", policy, ANY, identity_is(identity), name=name)


def deny_post() -> RbacAuthorizer:
    return one_policy("DENY", "no-post", method_is("POST"), ANY)


def scope(
    *,
    method: str = "GET",
    path: str = "/orders",
    headers: list[tuple[bytes, bytes]] | None = None,
    scheme: str = "http",
    tls: dict[str, Any] | None = None,
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"a=1",
        "headers": headers if headers is not None else [(b"host", b"orders:8443")],
        "scheme": scheme,
        "client": ("10.0.0.5", 50000),
        "server": ("10.0.0.9", 8443),
    }
    if tls is not None:
        s["extensions"] = {"tls": tls}
    return s


async def run(app: Any, s: dict[str, Any]) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    await app(s, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def test_request_view_of_a_scope() -> None:
    s = scope(
        headers=[
            (b"Host", b"orders:8443"),
            (b"X-A", b"1"),
            (b"x-a", b"2"),
            (b"te", b"trailers"),
            (b"connection", b"keep-alive"),
        ]
    )
    r = rbac_request(s)
    assert r.request.authority == "orders:8443"
    assert r.request.path == "/orders?a=1" and r.request.bare_path == "/orders"
    assert r.request.headers == {"x-a": "1,2"}  # joined with ","; hop-by-hop dropped
    assert r.request.repeated == {"x-a": ["1", "2"]}
    assert (r.peer_address, r.local_address, r.local_port) == ("10.0.0.5", "10.0.0.9", 8443)
    assert not r.tls and r.peer_certificate is None


async def test_deny_policy_answers_403_and_app_not_called() -> None:
    app = App()
    mw = RbacMiddleware(app, deny_post())
    assert await run(mw, scope(method="GET")) == (200, APP_BODY)
    assert await run(mw, scope(method="POST")) == (403, b"RBAC: access denied")
    assert app.calls == 1


async def test_identity_from_tls_extension(pki: Pki) -> None:
    app = App()
    mw = RbacMiddleware(app, allow_only(FRONT))
    front = pki.issue("frontend").cert_pem.decode()
    batch = pki.issue("batch").cert_pem.decode()
    ext = {"client_cert_chain": [front]}
    assert await run(mw, scope(scheme="https", tls=ext)) == (200, APP_BODY)
    ext = {"client_cert_chain": [batch]}
    assert (await run(mw, scope(scheme="https", tls=ext)))[0] == 403
    # TLS without a client certificate: authenticated principal_name sees "".
    assert (await run(mw, scope(scheme="https", tls={"client_cert_chain": []})))[0] == 403
    # Plaintext: not authenticated.
    assert (await run(mw, scope(scheme="http")))[0] == 403
    # Not a certificate: refused, never evaluated without an identity.
    bad = {"client_cert_chain": ["-----BEGIN CERTIFICATE-----\nnope\n"]}
    assert (await run(mw, scope(scheme="https", tls=bad)))[0] == 500
    assert app.calls == 1


async def test_tls_is_the_extension_not_the_scheme(pki: Pki) -> None:
    # A proxy-headers middleware may rewrite the scheme from X-Forwarded-Proto; the
    # identity still comes from the connection's TLS extension.
    app = App()
    mw = RbacMiddleware(app, allow_only(FRONT))
    ext = {"client_cert_chain": [pki.issue("frontend").cert_pem.decode()]}
    assert await run(mw, scope(scheme="http", tls=ext)) == (200, APP_BODY)


async def test_tls_without_extension_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    app = App()
    mw = RbacMiddleware(app, deny_post())  # would allow a GET
    status, _ = await run(mw, scope(scheme="https"))
    assert status == 500 and app.calls == 0
    assert "ASGI TLS extension" in caplog.text


async def test_callable_source_and_missing_config() -> None:
    app = App()
    current: list[RbacAuthorizer | None] = [None]
    mw = RbacMiddleware(app, lambda: current[0])
    assert (await run(mw, scope()))[0] == 503  # no config yet: fail closed
    current[0] = deny_post()
    assert (await run(mw, scope(method="POST")))[0] == 403
    current[0] = RbacAuthorizer()  # a listener without RBAC filters
    assert (await run(mw, scope(method="POST")))[0] == 200


async def test_per_route_override_and_no_route() -> None:
    base = deny_post()
    off = {"rbac": RbacConfig(None)}
    rc = RouteConfiguration(
        name="inbound",
        virtual_hosts=(
            VirtualHost(
                name="vh",
                domains=("orders:8443",),
                routes=(
                    Route(
                        RouteMatch(path_kind="prefix", path="/public"),
                        NonForwardingAction(),
                        typed_per_filter_config=off,
                    ),
                    Route(RouteMatch(path_kind="prefix", path="/"), NonForwardingAction()),
                ),
            ),
        ),
    )
    app = App()
    mw = RbacMiddleware(app, RbacRoutes(rc, base))
    assert (await run(mw, scope(method="POST", path="/public/x")))[0] == 200
    assert (await run(mw, scope(method="POST", path="/orders")))[0] == 403
    other = scope(headers=[(b"host", b"elsewhere")])
    assert (await run(mw, other))[0] == 404
    assert app.calls == 1


async def test_lifespan_passes_through() -> None:
    app = App()
    mw = RbacMiddleware(app, deny_post())
    msgs = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return msgs.pop(0)

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    await mw({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


def test_tls_extension_none_without_tls() -> None:
    assert tls_extension(None) is None


# ---- real uvicorn ----------------------------------------------------------------------


@pytest.fixture
def server_files(pki: Pki, tmp_path: Path) -> dict[str, str]:
    return pki.write(tmp_path / "server", pki.issue("orders"))


@pytest.fixture
def served(pki: Pki, server_files: dict[str, str]) -> Iterator[tuple[App, UvicornThread]]:
    app = App()
    with UvicornThread(RbacMiddleware(app, allow_only(FRONT)), server_context(server_files)) as srv:
        yield app, srv


def test_uvicorn_mtls_identity_reaches_rbac(
    served: tuple[App, UvicornThread], pki: Pki, tmp_path: Path
) -> None:
    app, srv = served
    url = f"https://127.0.0.1:{srv.port}/orders"
    assert get_as(pki, tmp_path, "frontend", url) == (200, APP_BODY)
    assert get_as(pki, tmp_path, "batch", url) == (403, b"RBAC: access denied")
    assert app.calls == 1
    # No client certificate: the handshake is refused (the server requires one).
    with (
        httpx.Client(verify=client_context(pki, tmp_path, None), timeout=20) as c,
        pytest.raises(httpx.TransportError),
    ):
        c.get(url)
    assert app.calls == 1


def test_server_certificate_rotation_under_steady_requests(pki: Pki, tmp_path: Path) -> None:
    """New connections get the rotated certificate; no request fails meanwhile."""
    import threading

    from _sec_helpers import atomic_write

    from pymesh.security import FileWatcherProvider, ServerTls, peer_sans

    files = pki.write(tmp_path / "server", pki.issue("orders"))
    provider = FileWatcherProvider("default", files)
    app = App()
    srv = UvicornThread(RbacMiddleware(app, allow_only(FRONT)), ServerTls(provider).ssl_context())
    srv.wait_started()
    url = f"https://127.0.0.1:{srv.port}/orders"
    ctx = client_context(pki, tmp_path, "frontend")
    stop = threading.Event()
    results: list[int | str] = []

    def steady() -> None:
        while not stop.is_set():
            # A new client every few requests: new connections, new handshakes.
            with httpx.Client(verify=ctx, timeout=20) as c:
                for _ in range(3):
                    try:
                        results.append(c.get(url).status_code)
                    except httpx.HTTPError as e:
                        results.append(repr(e))

    def served_sans() -> tuple[tuple[str, str], ...]:
        with (
            socket.create_connection(("127.0.0.1", srv.port), timeout=20) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return peer_sans(der)

    worker = threading.Thread(target=steady, daemon=True)
    worker.start()
    try:
        assert ("URI", SPIFFE + "orders") in served_sans()
        wait_until(lambda: len(results) >= 20, "steady requests before the rotation")
        new = pki.issue("orders-v2")
        atomic_write(Path(files["private_key_file"]), new.key_pem)
        atomic_write(Path(files["certificate_file"]), new.cert_pem)
        provider.refresh()
        wait_until(
            lambda: ("URI", SPIFFE + "orders-v2") in served_sans(),
            "a new connection to see the rotated certificate",
        )
        before = len(results)
        wait_until(lambda: len(results) >= before + 20, "steady requests after the rotation")
    finally:
        stop.set()
        worker.join(30)
        srv.stop()
        provider.close()
    failures = [r for r in results if r != 200]
    assert failures == [], failures[:5]
    assert app.calls == len(results)


class WsApp:
    """Accepts a WebSocket and sends back the caller's SPIFFE id from the TLS extension."""

    def __init__(self) -> None:
        self.accepted = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        await receive()  # websocket.connect
        self.accepted += 1
        await send({"type": "websocket.accept"})
        chain = scope["extensions"]["tls"]["client_cert_chain"]
        await send({"type": "websocket.send", "text": "hello " + str(len(chain))})
        await send({"type": "websocket.close", "code": 1000})


def test_uvicorn_websocket_gets_the_identity_too(
    pki: Pki, server_files: dict[str, str], tmp_path: Path
) -> None:
    """uvicorn builds a separate protocol for upgraded connections; it is wrapped too."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    app = WsApp()
    srv = UvicornThread(RbacMiddleware(app, allow_only(FRONT)), server_context(server_files))
    srv.wait_started()
    try:
        url = f"wss://127.0.0.1:{srv.port}/stream"
        with connect(url, ssl=client_context(pki, tmp_path, "frontend"), open_timeout=20) as ws:
            assert ws.recv(timeout=20) == "hello 1"
        with (
            pytest.raises(InvalidStatus) as denied,
            connect(url, ssl=client_context(pki, tmp_path, "batch"), open_timeout=20),
        ):
            pass
        assert denied.value.response.status_code == 403
        assert app.accepted == 1
    finally:
        srv.stop()
