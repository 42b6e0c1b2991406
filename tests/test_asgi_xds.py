"""pymesh.asgi.XdsListener: an ASGI app under uvicorn whose mTLS and RBAC come from the
mesh's server Listener (the mesh file's ``inbound`` section served by the embedded
control plane), updated by xDS while it serves."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _asgi_helpers import APP_BODY, App, UvicornThread, client_context
from _polling import wait_until
from _sec_helpers import Pki, file_watcher

import pymesh
from pymesh.asgi import RbacMiddleware, XdsListener
from pymesh.server import ControlPlane, compile_mesh
from pymesh.testing import bootstrap_for

TEMPLATE = "xds.istio.io/grpc/lds/inbound/%s"
PRINCIPAL = "cluster.local/ns/default/sa/"


def mesh_file(port: int, readers: list[str]) -> dict[str, Any]:
    """orders on ``port``: STRICT mTLS; GET by ``readers``, POST by nobody."""
    return {
        "services": {
            "orders": {
                "port": port,
                "endpoints": [f"127.0.0.1:{port}"],
                "inbound": {
                    "mtls": "STRICT",
                    "authorization": [
                        {
                            "name": "readers",
                            "action": "ALLOW",
                            "rules": [
                                {
                                    "from": [
                                        {"source": {"principals": [PRINCIPAL + r for r in readers]}}
                                    ],
                                    "to": [{"operation": {"methods": ["GET"]}}],
                                }
                            ],
                        }
                    ],
                },
            }
        }
    }


@pytest.fixture
def cp() -> Iterator[ControlPlane]:
    with ControlPlane(port=0) as c:
        yield c


@pytest.fixture
def mesh(
    cp: ControlPlane, pki: Pki, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[pymesh.Mesh]:
    files = pki.write(tmp_path / "server", pki.issue("orders"))
    boot = bootstrap_for(cp, node_id=f"asgi/{request.node.name}")
    boot["certificate_providers"] = {
        "default": file_watcher(files),
        "ROOTCA": file_watcher(files),
    }
    boot["server_listener_resource_name_template"] = TEMPLATE
    with pymesh.Mesh(boot) as m:
        yield m


def get(ctx: ssl.SSLContext, url: str, method: str = "GET") -> tuple[int, bytes]:
    with httpx.Client(verify=ctx, timeout=20) as c:
        r = c.request(method, url)
        return r.status_code, r.content


def test_policy_from_the_mesh_and_its_updates(
    cp: ControlPlane, mesh: pymesh.Mesh, pki: Pki, tmp_path: Path
) -> None:
    listener = XdsListener(mesh, "127.0.0.1:0")
    try:
        assert listener.listener_name == TEMPLATE % f"127.0.0.1:{listener.port}"
        cp.set_snapshot(compile_mesh(mesh_file(listener.port, ["frontend"]), "v1"))
        ctx = listener.ssl_context()
        assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED
        app = App()
        srv = UvicornThread(RbacMiddleware(app, listener), ctx, sock=listener.socket())
        srv.wait_started()
        try:
            url = f"https://127.0.0.1:{listener.port}/orders/1"
            front = client_context(pki, tmp_path, "frontend")
            batch = client_context(pki, tmp_path, "batch")
            assert get(front, url) == (200, APP_BODY)
            assert get(front, url, "POST") == (403, b"RBAC: access denied")
            assert get(batch, url) == (403, b"RBAC: access denied")
            assert app.calls == 1
            # A new policy from the control plane applies to the next request.
            cp.set_snapshot(compile_mesh(mesh_file(listener.port, ["frontend", "batch"]), "v2"))
            wait_until(lambda: get(batch, url)[0] == 200, "the v2 policy to allow batch")
            assert get(batch, url, "POST")[0] == 403
        finally:
            srv.stop()
    finally:
        listener.close()


def test_no_listener_yet_is_503(mesh: pymesh.Mesh) -> None:
    listener = XdsListener(mesh, "127.0.0.1:0")
    try:
        mw = RbacMiddleware(App(), listener)
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"host", b"orders")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", listener.port),
            "extensions": {"tls": {"client_cert_chain": []}},
        }
        assert mw.decide(scope) == 503
        with pytest.raises(pymesh.MeshError, match="no valid server Listener"):
            listener.wait_serving(timeout=0.2)
    finally:
        listener.close()


async def test_listener_tls_requirement(cp: ControlPlane, mesh: pymesh.Mesh, pki: Pki) -> None:
    """A plaintext request on a STRICT (TLS) chain is refused with 403 before RBAC; the
    same request with the caller's certificate reaches RBAC and the app."""
    import asyncio

    listener = XdsListener(mesh, "127.0.0.1:0")
    try:
        cp.set_snapshot(compile_mesh(mesh_file(listener.port, ["frontend"]), "v1"))
        await asyncio.to_thread(listener.wait_serving)
        app = App()
        mw = RbacMiddleware(app, listener)

        def scope(tls: dict[str, Any] | None) -> dict[str, Any]:
            s: dict[str, Any] = {
                "type": "http",
                "method": "GET",
                "path": "/orders",
                "headers": [(b"host", b"orders")],
                "client": ("127.0.0.1", 5000),
                "server": ("127.0.0.1", listener.port),
                "scheme": "https" if tls is not None else "http",
            }
            if tls is not None:
                s["extensions"] = {"tls": tls}
            return s

        async def status_of(s: dict[str, Any]) -> tuple[int, bytes]:
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request"}

            async def send(m: dict[str, Any]) -> None:
                sent.append(m)

            await mw(s, receive, send)
            return sent[0]["status"], sent[1].get("body", b"")

        status, body = await status_of(scope(None))
        assert status == 403 and b"TLS requirements" in body
        assert app.calls == 0
        front = {"client_cert_chain": [pki.issue("frontend").cert_pem.decode()]}
        assert await status_of(scope(front)) == (200, APP_BODY)
        batch = {"client_cert_chain": [pki.issue("batch").cert_pem.decode()]}
        assert await status_of(scope(batch)) == (403, b"RBAC: access denied")
        assert app.calls == 1
    finally:
        listener.close()
