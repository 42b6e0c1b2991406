"""Shared by the pymesh.asgi tests: a counting ASGI app, uvicorn in a thread with
pymesh's mTLS context, and client TLS contexts from the test PKI."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _sec_helpers import SPIFFE, Pki

from pymesh.asgi import uvicorn_config
from pymesh.security import RbacAuthorizer
from pymesh.xds.resources.matchers import HeaderMatcher, StringMatcher
from pymesh.xds.resources.rbac import (
    AnyRule,
    AuthenticatedRule,
    HeaderRule,
    RbacAction,
    RbacConfig,
    RbacPolicy,
    RbacRule,
    RbacRules,
)

APP_BODY = b"hello from the app"


class App:
    """A tiny ASGI app that counts the requests it saw."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": APP_BODY})


class UvicornThread:
    """uvicorn serving ``app`` on 127.0.0.1 (port 0) in a thread."""

    def __init__(
        self, app: Any, ssl_context: ssl.SSLContext, sock: socket.socket | None = None
    ) -> None:
        import uvicorn

        self.sock = sock if sock is not None else socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn_config(app, ssl_context=ssl_context, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True
        )
        self.thread.start()

    def wait_started(self) -> None:
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)  # polling a flag, not a synchronisation by sleep

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    def __enter__(self) -> UvicornThread:
        self.wait_started()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_context(files: dict[str, str]) -> ssl.SSLContext:
    from pymesh.security import FileWatcherProvider, ServerTls

    return ServerTls(FileWatcherProvider("default", files)).ssl_context()


def client_context(pki: Pki, tmp_path: Path, service: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=pki.ca_pem.decode())
    ctx.check_hostname = False
    if service is not None:
        leaf = pki.issue(service)
        chain = tmp_path / f"{service}.pem"
        chain.write_bytes(leaf.key_pem + leaf.cert_pem)
        ctx.load_cert_chain(str(chain))
    return ctx


def get_as(pki: Pki, tmp_path: Path, service: str, url: str) -> tuple[int, bytes]:
    """GET ``url`` over mTLS as ``service`` (a certificate from ``pki``): status, body."""
    with httpx.Client(verify=client_context(pki, tmp_path, service), timeout=20) as c:
        r = c.get(url)
        return r.status_code, r.content


def one_policy(
    action: RbacAction,
    policy: str,
    permission: RbacRule,
    principal: RbacRule,
    *,
    name: str = "rbac",
) -> RbacAuthorizer:
    """One RBAC filter ``name`` with one policy of one permission and one principal."""
    rules = RbacRules(action, ((policy, RbacPolicy((permission,), (principal,))),))
    return RbacAuthorizer.from_config(RbacConfig(rules), name=name)


def method_is(method: str) -> HeaderRule:
    return HeaderRule(HeaderMatcher(":method", StringMatcher("exact", method)))


def identity_is(identity: str) -> AuthenticatedRule:
    return AuthenticatedRule(StringMatcher("exact", identity))


def front_gets(policy: str = "front-gets") -> RbacAuthorizer:
    """GETs by sa/frontend only."""
    return one_policy("ALLOW", policy, method_is("GET"), identity_is(SPIFFE + "frontend"))


ANY = AnyRule()
