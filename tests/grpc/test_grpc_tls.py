"""Sync mesh gRPC channels to TLS clusters: mTLS from xDS, SAN pre-check, rotation.

Real grpc servers requiring client certificates on 127.0.0.1, an embedded control plane
serving ISTIO_MUTUAL clusters, and a bootstrap ``file_watcher`` provider for the client.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from _backend import Backend
from _grpc_tls_helpers import (
    CHAT,
    CLUSTER,
    ECHO,
    SPLIT,
    TARGET,
    AcceptCounter,
    TlsGrpcBackend,
    serial_of,
    tls_service,
    uri_only_leaf,
)
from _sec_helpers import SPIFFE, Pki, file_watcher

import pymesh
import pymesh.grpc
from pymesh.errors import TlsConfigError
from pymesh.grpc._tls import TlsRpcError
from pymesh.grpc._tls_sync import SyncTlsEndpoint
from pymesh.security import PeerIdentityError
from pymesh.server import ControlPlane
from pymesh.testing._push import push_mesh

MakeMesh = Callable[..., pymesh.Mesh]


def test_mtls_calls_succeed_and_server_sees_client_spiffe_id(
    cp: ControlPlane, tls_mesh: MakeMesh, client_files: dict[str, str], backend: TlsGrpcBackend
) -> None:
    mesh = tls_mesh({"default": file_watcher(client_files)})
    push_mesh(cp, mesh, tls_service(backend.address))  # SAN: spiffe://.../sa/echo
    with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
        assert ch.unary_unary(ECHO)(b"hi", timeout=10) == b"echo:hi"
        assert list(ch.unary_stream(SPLIT)(b"2", timeout=10)) == [b"echo:0", b"echo:1"]
        assert list(ch.stream_stream(CHAT)(iter([b"a"]), timeout=10)) == [b"echo:a"]
        assert ch.unary_unary(ECHO).future(b"f", timeout=10).result() == b"echo:f"
        endpoint = ch._subs[backend.address]
    assert isinstance(endpoint, SyncTlsEndpoint)
    assert [s.method for s in backend.seen] == ["Echo", "Split", "Chat", "Echo"]
    assert {s.client_uris for s in backend.seen} == {(SPIFFE + "client",)}


def test_wrong_san_is_refused_and_the_handler_never_runs(
    cp: ControlPlane, tls_mesh: MakeMesh, client_files: dict[str, str], backend: TlsGrpcBackend
) -> None:
    mesh = tls_mesh({"default": file_watcher(client_files)})
    push_mesh(cp, mesh, tls_service(backend.address, [SPIFFE + "ratings"]))
    with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(ECHO)(b"secret", timeout=10)
        stream = ch.unary_stream(SPLIT)(b"2", timeout=10)
        with pytest.raises(grpc.RpcError) as streamed:
            list(stream)
    err = info.value
    assert isinstance(err, TlsRpcError)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    details = err.details()
    assert CLUSTER in details and backend.address in details
    assert SPIFFE + "echo" in details  # the SANs the peer presented
    assert isinstance(err.error, PeerIdentityError)
    assert ("URI", SPIFFE + "echo") in err.error.sans
    assert streamed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert backend.calls() == 0


@pytest.mark.parametrize("problem", ["unknown provider", "unreadable key"])
def test_unsatisfiable_tls_config_fails_closed_without_connecting(
    cp: ControlPlane,
    tls_mesh: MakeMesh,
    client_files: dict[str, str],
    tmp_path: Path,
    problem: str,
) -> None:
    if problem == "unknown provider":
        providers = {"other": file_watcher(client_files)}
        expected = "'default' is not in the bootstrap"
    else:
        broken = {**client_files, "private_key_file": str(tmp_path / "missing-key.pem")}
        providers = {"default": file_watcher(broken)}
        expected = "missing-key.pem"
    mesh = tls_mesh(providers)
    counter = AcceptCounter()
    try:
        push_mesh(cp, mesh, tls_service(counter.address))
        with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as info:
                    ch.unary_unary(ECHO)(b"hi", timeout=10)
                assert info.value.code() is grpc.StatusCode.UNAVAILABLE
            details = info.value.details()
            assert "requires upstream TLS" in details and "refusing plaintext" in details
            assert expected in details and CLUSTER in details
            assert ch._subs == {}  # no sub-channel was even created
    finally:
        counter.close()
    assert counter.accepted == 0


def test_rotation_during_steady_calls_has_no_failures(
    cp: ControlPlane,
    tls_mesh: MakeMesh,
    pki: Pki,
    client_files: dict[str, str],
    tmp_path: Path,
    backend: TlsGrpcBackend,
) -> None:
    mesh = tls_mesh({"default": file_watcher(client_files)})
    push_mesh(cp, mesh, tls_service(backend.address))
    new_leaf = pki.issue("client")
    new_serial = serial_of(new_leaf)
    failures: list[BaseException] = []
    done = threading.Event()
    with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
        echo = ch.unary_unary(ECHO)

        def steady() -> None:
            while not done.is_set():
                try:
                    assert echo(b"x", timeout=10) == b"echo:x"
                except BaseException as exc:  # counted, asserted below
                    failures.append(exc)

        callers = [threading.Thread(target=steady) for _ in range(3)]
        for t in callers:
            t.start()
        try:
            assert backend.wait(lambda: backend.calls() >= 20)
            old_serials = backend.serials()
            pki.write(tmp_path / "client", new_leaf)  # atomic renames, as istio-agent
            assert backend.wait(lambda: new_serial in backend.serials())
            settled = backend.calls()
            assert backend.wait(lambda: backend.calls() >= settled + 20)
        finally:
            done.set()
            for t in callers:
                t.join(20)
        # New calls use the new certificate.
        before = backend.calls()
        echo(b"y", timeout=10)
        assert backend.seen[before].client_serial == new_serial
        endpoint = ch._subs[backend.address]
        assert isinstance(endpoint, SyncTlsEndpoint)
        # The previous generation's channel closed once its calls ended.
        assert len(endpoint.all_channels()) == 1
    assert failures == []
    assert new_serial not in old_serials


def test_uri_only_certificate_cannot_be_used_by_grpcio(
    cp: ControlPlane, tls_mesh: MakeMesh, pki: Pki, client_files: dict[str, str]
) -> None:
    """A SPIFFE-only server certificate passes the SAN check, but grpcio's own host-name
    check needs a DNS/IP SAN or a common name: a typed refusal, no call sent."""
    server = TlsGrpcBackend(pki, uri_only_leaf(pki, "echo"))
    try:
        mesh = tls_mesh({"default": file_watcher(client_files)})
        push_mesh(cp, mesh, tls_service(server.address))
        with (
            pymesh.grpc.insecure_channel(TARGET, mesh) as ch,
            pytest.raises(TlsRpcError) as info,
        ):
            ch.unary_unary(ECHO)(b"hi", timeout=10)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert isinstance(info.value.error, TlsConfigError)
        assert not isinstance(info.value.error, PeerIdentityError)
        assert "no DNS SAN, no IP SAN and no common name" in info.value.details()
        assert server.calls() == 0
    finally:
        server.close()


def test_dns_san_is_what_grpcio_verifies_when_the_matchers_accept_it(
    cp: ControlPlane, tls_mesh: MakeMesh, pki: Pki, client_files: dict[str, str]
) -> None:
    server = TlsGrpcBackend(pki, pki.issue("echo", dns=("echo.default.svc",)))
    try:
        mesh = tls_mesh({"default": file_watcher(client_files)})
        push_mesh(cp, mesh, tls_service(server.address, ["echo.default.svc"]))
        with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
            assert ch.unary_unary(ECHO)(b"hi", timeout=10) == b"echo:hi"
            endpoint = ch._subs[server.address]
            assert isinstance(endpoint, SyncTlsEndpoint)
            (view,) = endpoint._views.values()
            assert view.binding.current.peer.target_name == "echo.default.svc"
    finally:
        server.close()
    assert server.calls() == 1


def test_a_new_tls_config_never_reuses_a_channel_verified_under_the_old_one(
    cp: ControlPlane, tls_mesh: MakeMesh, client_files: dict[str, str], backend: TlsGrpcBackend
) -> None:
    mesh = tls_mesh({"default": file_watcher(client_files)})
    push_mesh(cp, mesh, tls_service(backend.address))
    with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
        echo = ch.unary_unary(ECHO)
        assert echo(b"1", timeout=10) == b"echo:1"
        endpoint = ch._subs[backend.address]
        assert isinstance(endpoint, SyncTlsEndpoint)
        (first,) = endpoint.all_channels()
        push_mesh(cp, mesh, tls_service(backend.address, [SPIFFE + "ratings"]), version="2")
        with pytest.raises(TlsRpcError) as info:
            echo(b"2", timeout=10)
        assert isinstance(info.value.error, PeerIdentityError)
        # The old config's verified channel was closed, not kept for the new config.
        assert first not in endpoint.all_channels()
        push_mesh(cp, mesh, tls_service(backend.address), version="3")
        assert echo(b"3", timeout=10) == b"echo:3"
    assert backend.calls() == 2


def test_endpoint_that_refuses_the_handshake_is_unavailable(
    cp: ControlPlane, tls_mesh: MakeMesh, client_files: dict[str, str]
) -> None:
    counter = AcceptCounter()  # accepts TCP, then hangs up: no TLS
    try:
        mesh = tls_mesh({"default": file_watcher(client_files)})
        push_mesh(cp, mesh, tls_service(counter.address))
        with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
            with pytest.raises(TlsRpcError) as info:
                ch.unary_unary(ECHO)(b"hi", timeout=10)
            # Remembered: the next call fails at once, without another handshake.
            with pytest.raises(TlsRpcError):
                ch.unary_unary(ECHO)(b"hi", timeout=10)
    finally:
        counter.close()
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert isinstance(info.value.error, OSError)  # ssl.SSLError is an OSError too
    assert "TLS handshake with endpoint" in info.value.details()
    assert counter.accepted == 1


def test_a_silent_endpoint_fails_the_call_at_its_deadline(
    cp: ControlPlane, tls_mesh: MakeMesh, client_files: dict[str, str]
) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # never accepts: the handshake hangs
    try:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        mesh = tls_mesh({"default": file_watcher(client_files)})
        push_mesh(cp, mesh, tls_service(address))
        with (
            pymesh.grpc.insecure_channel(TARGET, mesh) as ch,
            pytest.raises(grpc.RpcError) as info,
        ):
            ch.unary_unary(ECHO)(b"hi", timeout=0.5)
    finally:
        silent.close()
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_plaintext_and_tls_clusters_sharing_an_address_never_mix(
    cp: ControlPlane, tls_mesh: MakeMesh, client_files: dict[str, str]
) -> None:
    """One address in a plaintext cluster and in a TLS cluster: TLS calls never reuse the
    plaintext channel (here the server speaks plaintext, so they fail the handshake)."""
    with Backend("plain") as plain:
        config = {
            "services": {
                "echo": {
                    "port": 50051,
                    "protocol": "grpc",
                    "endpoints": [plain.address],
                    "routes": [
                        {"match": {"headers": {"x-tls": "yes"}}, "split": {"secure": 1}},
                        {"match": {"prefix": "/"}},
                    ],
                },
                "secure": {
                    "port": 50052,
                    "protocol": "grpc",
                    "endpoints": [plain.address],
                    "traffic_policy": {"tls": {"mode": "ISTIO_MUTUAL"}},
                },
            }
        }
        mesh = tls_mesh({"default": file_watcher(client_files)})
        push_mesh(cp, mesh, config)
        with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
            echo = ch.unary_unary(ECHO)
            assert echo(b"1", timeout=10) == b"plain:1"
            with pytest.raises(TlsRpcError) as info:
                echo(b"2", timeout=10, metadata=(("x-tls", "yes"),))
            assert "outbound|50052||secure" in info.value.details()
            assert echo(b"3", timeout=10) == b"plain:3"  # the adopted plaintext channel
            assert isinstance(ch._subs[plain.address], SyncTlsEndpoint)
        assert plain.count("Echo") == 2
