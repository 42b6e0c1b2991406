"""Serving mTLS: mesh.server_ssl_context(), gRPC server credentials, and the xDS stream
itself over mTLS to the embedded control plane."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from _sec_helpers import SPIFFE, Pki, atomic_write

import pymesh
from pymesh.errors import MeshError, TlsConfigError
from pymesh.security import (
    FileWatcherProvider,
    grpc_server_credentials,
    peer_sans,
    provider_server_credentials,
)
from pymesh.server import ControlPlane
from pymesh.testing import EchoBackend, push_mesh


def _client_ctx(pki: Pki, tmp_path: Path, service: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=pki.ca_pem.decode())
    if service is not None:
        leaf = pki.issue(service)
        chain = tmp_path / f"{service}-chain.pem"
        chain.write_bytes(leaf.key_pem + leaf.cert_pem)
        ctx.load_cert_chain(str(chain))
    return ctx


class _TlsEchoServer:
    """Accepts TLS with a given server context and reports the peer's URI SAN."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self._ctx = ctx
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.results: list[str] = []  # client URI, or "error: ..."
        self.cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.settimeout(10)
            try:
                with self._ctx.wrap_socket(conn, server_side=True) as s:
                    cert = s.getpeercert(True)
                    uris = [v for t, v in peer_sans(cert) if t == "URI"] if cert else []
                    result = uris[0] if uris else "none"
                    s.sendall(b"ok")
            except (ssl.SSLError, OSError) as e:
                result = f"error: {e}"
            with self.cond:
                self.results.append(result)
                self.cond.notify_all()

    def wait_results(self, n: int) -> list[str]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.results) >= n, 20)
            return list(self.results)

    def close(self) -> None:
        self._sock.close()


def _handshake(port: int, ctx: ssl.SSLContext) -> tuple[str, str]:
    """(server URI SAN, first bytes) for one connection."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw) as s:
        der = s.getpeercert(True)
        assert der is not None
        uri = next(v for t, v in peer_sans(der) if t == "URI")
        return uri, s.recv(2).decode()


@pytest.fixture
def tls_server(mesh: pymesh.Mesh) -> Iterator[_TlsEchoServer]:
    server = _TlsEchoServer(mesh.server_ssl_context())
    yield server
    server.close()


def test_server_context_requires_client_certs_and_follows_rotation(
    mesh: pymesh.Mesh,
    tls_server: _TlsEchoServer,
    pki: Pki,
    tmp_path: Path,
    client_files: dict[str, str],
) -> None:
    caller = _client_ctx(pki, tmp_path, "ratings")
    assert _handshake(tls_server.port, caller) == (SPIFFE + "client", "ok")
    assert tls_server.wait_results(1) == [SPIFFE + "ratings"]
    # No client certificate: the server refuses (TLS 1.3 reports it on the first read).
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(tls_server.port, _client_ctx(pki, tmp_path, None))
    assert tls_server.wait_results(2)[1].startswith("error:")
    # Rotate the mesh's certificate on disk: the same context serves the new one.
    new = pki.issue("client-v2")
    atomic_write(Path(client_files["certificate_file"]), new.cert_pem)
    atomic_write(Path(client_files["private_key_file"]), new.key_pem)
    mesh.security.server("default").provider.refresh()
    assert _handshake(tls_server.port, caller) == (SPIFFE + "client-v2", "ok")


def test_server_context_needs_a_full_provider(mesh: pymesh.Mesh) -> None:
    with pytest.raises(TlsConfigError, match="'nope'"):
        mesh.server_ssl_context("nope")


def test_grpc_server_credentials_build(mesh: pymesh.Mesh) -> None:
    creds = grpc_server_credentials(mesh)
    assert isinstance(creds, grpc.ServerCredentials)


def _tls_bootstrap(cp: ControlPlane, node: str, config: dict[str, str]) -> dict[str, Any]:
    return {
        "xds_servers": [
            {
                "server_uri": cp.address,
                "channel_creds": [{"type": "tls", "config": config}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node},
    }


@pytest.fixture
def mtls_control_plane(pki: Pki, tmp_path: Path) -> Iterator[ControlPlane]:
    files = pki.write(tmp_path / "istiod", pki.issue("istiod"))
    provider = FileWatcherProvider("istiod", files)
    with ControlPlane(port=0, server_credentials=provider_server_credentials(provider)) as cp:
        yield cp
    provider.close()


def test_xds_stream_over_mtls(
    mtls_control_plane: ControlPlane, client_files: dict[str, str]
) -> None:
    cp = mtls_control_plane
    config = {k: client_files[k] for k in ("ca_certificate_file", "certificate_file")}
    config["private_key_file"] = client_files["private_key_file"]
    with (
        EchoBackend("echo") as echo,
        pymesh.Mesh(bootstrap=_tls_bootstrap(cp, "pymesh-test/xds-mtls", config)) as mesh,
    ):
        push_mesh(cp, mesh, {"services": {"echo": {"port": 8080, "endpoints": [echo.address]}}})
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            assert client.get("http://echo:8080/").status_code == 200
        assert mesh.xds_stats.connected
        assert echo.request_count == 1


def test_xds_stream_without_client_cert_is_refused(
    mtls_control_plane: ControlPlane, client_files: dict[str, str]
) -> None:
    cp = mtls_control_plane
    config = {"ca_certificate_file": client_files["ca_certificate_file"]}  # no identity
    with pymesh.Mesh(bootstrap=_tls_bootstrap(cp, "pymesh-test/no-cert", config)) as mesh:
        # The handshake fails (no client certificate): the listener reports the
        # connection failure instead of config.
        with pytest.raises(MeshError, match="cannot connect to xDS server"):
            mesh.wait_state(mesh.slot("echo:8080"), 20.0)
        assert not mesh.xds_stats.connected
    assert cp.acks == []
