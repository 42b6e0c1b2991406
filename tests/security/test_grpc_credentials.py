"""gRPC: channel credentials from the mesh's providers against a server using
grpc_server_credentials, and the connect-time SAN pre-check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from _sec_helpers import SPIFFE, Pki

import pymesh
from pymesh.errors import TlsConfigError
from pymesh.security import (
    PeerIdentityError,
    check_grpc_peer,
    grpc_channel_credentials,
    provider_server_credentials,
)
from pymesh.security.providers import FileWatcherProvider

Push = Callable[..., Any]
METHOD = "/test.Echo/Echo"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    peer = context.auth_context().get("x509_subject_alternative_name", [b""])
    return request + b"|" + b",".join(peer)


@pytest.fixture
def grpc_server(pki: Pki, tmp_path: Path) -> Iterator[int]:
    provider = FileWatcherProvider("srv", pki.write(tmp_path / "srv", pki.issue("reviews")))
    server = grpc.server(futures.ThreadPoolExecutor(2))
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler}),)
    )
    port = server.add_secure_port("127.0.0.1:0", provider_server_credentials(provider))
    server.start()
    yield port
    server.stop(None).wait(10)
    provider.close()


def _push(push_mesh: Push, port: int, sans: list[str]) -> str:
    push_mesh(
        {
            "services": {
                "reviews": {
                    "port": 50051,
                    "protocol": "grpc",
                    "endpoints": [f"127.0.0.1:{port}"],
                    "traffic_policy": {"tls": {"mode": "ISTIO_MUTUAL", "subject_alt_names": sans}},
                }
            }
        }
    )
    return "outbound|50051||reviews"


def test_channel_credentials_reach_an_mtls_grpc_server(
    mesh: pymesh.Mesh, push_mesh: Push, grpc_server: int
) -> None:
    cluster = _push(push_mesh, grpc_server, [SPIFFE + "reviews"])
    assert ("URI", SPIFFE + "reviews") in check_grpc_peer(mesh, cluster, "127.0.0.1", grpc_server)
    creds = grpc_channel_credentials(mesh, cluster)
    with grpc.secure_channel(f"127.0.0.1:{grpc_server}", creds) as channel:
        reply = channel.unary_unary(METHOD)(b"hi", timeout=10)
    assert reply.startswith(b"hi|")
    assert (SPIFFE + "client").encode() in reply  # the server saw the mesh's identity


def test_precheck_refuses_wrong_identity(
    mesh: pymesh.Mesh, push_mesh: Push, grpc_server: int
) -> None:
    cluster = _push(push_mesh, grpc_server, [SPIFFE + "ratings"])
    with pytest.raises(PeerIdentityError) as info:
        check_grpc_peer(mesh, cluster, "127.0.0.1", grpc_server)
    assert info.value.cluster == cluster


def test_plaintext_cluster_has_no_credentials(mesh: pymesh.Mesh, push_mesh: Push) -> None:
    push_mesh({"services": {"plain": {"port": 8080, "endpoints": ["127.0.0.1:1"]}}})
    with pytest.raises(TlsConfigError, match="plaintext"):
        grpc_channel_credentials(mesh, "outbound|8080||plain")
    with pytest.raises(TlsConfigError, match="no config"):
        grpc_channel_credentials(mesh, "outbound|1||missing")


def test_provider_server_credentials_need_identity_and_roots(client_files: dict[str, str]) -> None:
    roots_only = FileWatcherProvider(
        "r", {"ca_certificate_file": client_files["ca_certificate_file"]}
    )
    with pytest.raises(TlsConfigError, match="serving mTLS needs"):
        provider_server_credentials(roots_only)
