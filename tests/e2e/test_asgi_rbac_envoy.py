"""The real Envoy calls an ASGI app served by uvicorn behind pymesh's mTLS context and RBAC
middleware: an allowed client identity gets the app (200), a denied one 403 from RBAC; a
caller without a certificate from the mesh's CA fails the handshake, and a plain HTTP
client gets no byte of the app."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _asgi_helpers import APP_BODY, App, UvicornThread, client_context, front_gets, server_context
from _sec_helpers import SPIFFE, Pki, with_upstream_tls

from pymesh.asgi import RbacMiddleware
from pymesh.server import (
    CLUSTER_TYPE,
    ControlPlane,
    Snapshot,
    compile_mesh,
)
from pymesh.testing.envoy import envoy_snapshot, free_port, start_envoy


def _with_client_cert(snap: Snapshot, files: dict[str, str], version: str) -> Snapshot:
    """Envoy's clusters originate mTLS with ``files`` and check the server's SAN."""
    return with_upstream_tls(snap, files, SPIFFE + "orders", version)


@pytest.fixture
def served(pki: Pki, tmp_path: Path) -> Iterator[tuple[App, UvicornThread]]:
    app = App()
    files = pki.write(tmp_path / "server", pki.issue("orders"))
    with UvicornThread(
        RbacMiddleware(app, front_gets("frontend-reads")), server_context(files)
    ) as srv:
        yield app, srv


def test_envoy_caller_allowed_denied_and_refused(
    served: tuple[App, UvicornThread], pki: Pki, tmp_path: Path
) -> None:
    app, srv = served
    envoy_port = free_port()
    base = compile_mesh(
        {"services": {"orders": {"port": 9080, "endpoints": [f"127.0.0.1:{srv.port}"]}}}
    )
    seen: dict[str, tuple[int, bytes]] = {}
    snaps = {
        service: envoy_snapshot(
            _with_client_cert(base, pki.write(tmp_path / service, pki.issue(service)), service),
            {"orders:9080": envoy_port},
        )
        for service in ("frontend", "batch")
    }
    with ControlPlane(port=0) as cp:
        # Envoy is ready after its first LDS and CDS answers: set them before it starts.
        cp.set_snapshot(snaps["frontend"], "envoy")
        with start_envoy(cp.port, "envoy") as envoy:
            for version in ("frontend", "batch"):
                cp.set_snapshot(snaps[version], "envoy")
                cp.wait_for_ack(CLUSTER_TYPE, version, 30, "envoy")
                envoy.wait_listening([envoy_port])
                with httpx.Client(
                    base_url=f"http://127.0.0.1:{envoy_port}",
                    headers={"host": "orders:9080"},
                    timeout=20,
                ) as via_envoy:
                    r = via_envoy.get("/orders/1")
                    seen[version] = (r.status_code, r.content)
                    if version == "frontend":
                        # The same caller may not POST (the ALLOW policy names GET only).
                        r = via_envoy.post("/orders", content=b"{}")
                        seen["frontend-post"] = (r.status_code, r.content)
    assert seen["frontend"] == (200, APP_BODY)
    assert seen["frontend-post"] == (403, b"RBAC: access denied")
    assert seen["batch"] == (403, b"RBAC: access denied")
    assert app.calls == 1


def test_wrong_or_absent_client_certificate_gets_no_app_byte(
    served: tuple[App, UvicornThread], pki: Pki, tmp_path: Path
) -> None:
    app, srv = served
    url = f"https://127.0.0.1:{srv.port}/orders/1"
    # A certificate from another CA (same SPIFFE name as the allowed caller).
    other = Pki()
    ctx = client_context(pki, tmp_path, None)
    leaf = other.issue("frontend")
    chain = tmp_path / "other-frontend.pem"
    chain.write_bytes(leaf.key_pem + leaf.cert_pem)
    ctx.load_cert_chain(str(chain))
    for verify in (ctx, client_context(pki, tmp_path, None)):
        with httpx.Client(verify=verify, timeout=20) as c, pytest.raises(httpx.TransportError):
            c.get(url)
    # Plain HTTP to the TLS port: whatever comes back, none of it is the app's.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
        s.sendall(b"GET /orders/1 HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except (ConnectionResetError, TimeoutError, ssl.SSLError):
            pass
    assert APP_BODY not in got and b"HTTP/1.1 200" not in got
    assert app.calls == 0


def test_envoy_caller_against_a_server_configured_by_the_mesh(pki: Pki, tmp_path: Path) -> None:
    """One control plane configures both sides: Envoy's client mTLS, and the ASGI server's
    Listener (STRICT mTLS + authorization from a mesh file's inbound section)."""
    from _sec_helpers import file_watcher

    import pymesh
    from pymesh.asgi import XdsListener
    from pymesh.testing import bootstrap_for

    server_files = pki.write(tmp_path / "server", pki.issue("orders"))
    app = App()
    envoy_port = free_port()
    with ControlPlane(port=0) as cp:
        boot = bootstrap_for(cp, node_id="asgi-server")
        boot["certificate_providers"] = {
            "default": file_watcher(server_files),
            "ROOTCA": file_watcher(server_files),
        }
        boot["server_listener_resource_name_template"] = "xds.istio.io/grpc/lds/inbound/%s"
        with pymesh.Mesh(boot) as mesh:
            listener = XdsListener(mesh, "127.0.0.1:0")
            try:
                port = listener.port
                snap = compile_mesh(
                    {
                        "services": {
                            "orders": {
                                "port": port,
                                "endpoints": [f"127.0.0.1:{port}"],
                                "inbound": {
                                    "mtls": "STRICT",
                                    "authorization": [
                                        {
                                            "name": "frontend-reads",
                                            "rules": [
                                                {
                                                    "from": [
                                                        {
                                                            "source": {
                                                                "principals": [
                                                                    "cluster.local/ns/default/"
                                                                    "sa/frontend"
                                                                ]
                                                            }
                                                        }
                                                    ],
                                                    "to": [{"operation": {"methods": ["GET"]}}],
                                                }
                                            ],
                                        }
                                    ],
                                },
                            }
                        }
                    },
                    "v1",
                )
                cp.set_snapshot(snap)  # every node: the server's inbound Listener
                ctx = listener.ssl_context()
                assert ctx is not None
                srv = UvicornThread(RbacMiddleware(app, listener), ctx, sock=listener.socket())
                srv.wait_started()
                try:
                    seen: dict[str, tuple[int, bytes]] = {}
                    envoy_snaps = {
                        who: envoy_snapshot(
                            _with_client_cert(snap, pki.write(tmp_path / who, pki.issue(who)), who),
                            {f"orders:{port}": envoy_port},
                        )
                        for who in ("frontend", "batch")
                    }
                    cp.set_snapshot(envoy_snaps["frontend"], "envoy")
                    with start_envoy(cp.port, "envoy") as envoy:
                        for who in ("frontend", "batch"):
                            cp.set_snapshot(envoy_snaps[who], "envoy")
                            cp.wait_for_ack(CLUSTER_TYPE, who, 30, "envoy")
                            envoy.wait_listening([envoy_port])
                            with httpx.Client(
                                base_url=f"http://127.0.0.1:{envoy_port}",
                                headers={"host": f"orders:{port}"},
                                timeout=20,
                            ) as via_envoy:
                                r = via_envoy.get("/orders/1")
                                seen[who] = (r.status_code, r.content)
                                r = via_envoy.post("/orders", content=b"{}")
                                seen[f"{who}-post"] = (r.status_code, r.content)
                finally:
                    srv.stop()
            finally:
                listener.close()
    assert seen["frontend"] == (200, APP_BODY)
    assert seen["frontend-post"] == (403, b"RBAC: access denied")
    assert seen["batch"] == (403, b"RBAC: access denied")
    assert seen["batch-post"] == (403, b"RBAC: access denied")
    assert app.calls == 1
