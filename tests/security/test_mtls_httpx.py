"""mTLS from xDS through the httpx transports, against a real mTLS backend."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _sec_helpers import SPIFFE, MtlsBackend, Pki, server_context

import pymesh
from pymesh.errors import TlsConfigError
from pymesh.security import PeerIdentityError
from pymesh.server import ControlPlane
from pymesh.testing import bootstrap_for

Push = Callable[..., Any]
CLUSTER = "outbound|9080||reviews"  # the mesh file's Istio-style cluster name


def _config(backend: MtlsBackend, sans: list[str] | None = None, **tls: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"mode": "ISTIO_MUTUAL", **tls}
    if sans is not None:
        spec["subject_alt_names"] = sans
    return {
        "services": {
            "reviews": {
                "port": 9080,
                "endpoints": [backend.address],
                "traffic_policy": {"tls": spec},
            }
        }
    }


def test_mtls_request_succeeds_and_server_sees_client_spiffe_id(
    mesh: pymesh.Mesh, push_mesh: Push, backend: MtlsBackend
) -> None:
    push_mesh(_config(backend))  # default SAN: spiffe://cluster.local/ns/default/sa/reviews
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        r = client.get("http://reviews:9080/hello")
    assert r.status_code == 200
    assert r.headers["x-peer"] == SPIFFE + "client"
    assert backend.records[0].handshake_ok
    assert backend.records[0].client_uris == (SPIFFE + "client",)


async def test_async_mtls_request_succeeds(
    mesh: pymesh.Mesh, push_mesh: Push, backend: MtlsBackend
) -> None:
    push_mesh(_config(backend))
    async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)) as client:
        r = await client.get("http://reviews:9080/hello")
    assert r.status_code == 200
    assert r.headers["x-peer"] == SPIFFE + "client"


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_wrong_san_is_refused_before_any_request_byte(
    mesh: pymesh.Mesh, push_mesh: Push, backend: MtlsBackend, asynchronous: bool
) -> None:
    push_mesh(_config(backend, [SPIFFE + "ratings"]))
    with pytest.raises(PeerIdentityError) as info:
        if asynchronous:
            async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)) as ac:
                await ac.get("http://reviews:9080/secret")
        else:
            with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
                client.get("http://reviews:9080/secret")
    err = info.value
    assert isinstance(err, TlsConfigError)
    assert err.cluster == CLUSTER
    assert ("URI", SPIFFE + "reviews") in err.sans
    # The handshake completed, then the client hung up: the server read nothing.
    assert backend.wait(lambda: bool(backend.records) and backend.records[0].closed)
    assert backend.records[0].handshake_ok
    assert all(r.bytes_after_handshake == 0 for r in backend.records)
    assert backend.ok_requests() == 0


def test_san_prefix_and_ip_matchers(
    mesh: pymesh.Mesh, push_mesh: Push, backend: MtlsBackend
) -> None:
    """Typed matchers from raw xDS: IP SAN exact, URI prefix (Envoy semantics)."""
    push_mesh(_config(backend, ["spiffe://cluster.local/ns/default/sa/reviews"]))
    rt = mesh.clusters()[CLUSTER]
    assert rt.cluster is not None and rt.cluster.tls is not None
    from pymesh.xds.resources.matchers import StringMatcher
    from pymesh.xds.resources.tls import SanMatcher

    tls = mesh.security.client(CLUSTER, rt.cluster.tls)
    der = _server_der(backend, tls.context())
    ok = [
        SanMatcher("IP_ADDRESS", StringMatcher.make("exact", "127.0.0.1")),
        SanMatcher("URI", StringMatcher.make("prefix", "spiffe://cluster.local/")),
        SanMatcher("ANY", StringMatcher.make("suffix", "/sa/reviews")),
        SanMatcher("URI", StringMatcher.make("safe_regex", r"spiffe://[^/]+/ns/default/sa/\w+")),
    ]
    from pymesh.security import check_peer_identity

    for m in ok:
        check_peer_identity(der, [m], cluster="reviews")
    bad = [
        SanMatcher("DNS", StringMatcher.make("suffix", "/sa/reviews")),  # wrong SAN type
        SanMatcher("IP_ADDRESS", StringMatcher.make("exact", "127.0.0.2")),
    ]
    for m in bad:
        with pytest.raises(PeerIdentityError):
            check_peer_identity(der, [m], cluster="reviews")


def _server_der(backend: MtlsBackend, ctx: ssl.SSLContext) -> bytes:
    raw = socket.create_connection(("127.0.0.1", backend.port), timeout=10)
    with ctx.wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_backend_rejects_plaintext_and_unauthenticated_clients(
    pki: Pki, backend: MtlsBackend, tmp_path: Path
) -> None:
    # Plaintext: the "handshake" fails on the HTTP bytes; no request is served.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{backend.address}/", timeout=10)
    # TLS without a client certificate: refused by the server.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=pki.ca_pem.decode())
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"https://{backend.address}/", verify=ctx, timeout=10)
    # A client certificate from another CA: refused too.
    other = Pki()
    leaf = other.issue("client")
    chain = tmp_path / "other.pem"
    chain.write_bytes(leaf.key_pem + leaf.cert_pem)
    ctx.load_cert_chain(str(chain))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"https://{backend.address}/", verify=ctx, timeout=10)
    assert backend.wait(
        lambda: len(backend.records) == 3 and all(r.closed for r in backend.records)
    )
    assert all(r.error and r.bytes_after_handshake == 0 for r in backend.records)
    assert backend.ok_requests() == 0


def test_rotation_during_steady_traffic(
    mesh: pymesh.Mesh,
    push_mesh: Push,
    pki: Pki,
    tmp_path: Path,
    client_files: dict[str, str],
) -> None:
    """Files replaced atomically while a thread sends requests: new connections present
    the new certificate, and no request fails."""
    backend = MtlsBackend(
        server_context(pki, pki.issue("reviews"), tmp_path / "server"), close_each=True
    )
    try:
        push_mesh(_config(backend))
        peers: list[str] = []
        failures: list[BaseException] = []
        stop = threading.Event()
        saw_new = threading.Event()

        def traffic() -> None:
            with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=10) as client:
                while not stop.is_set():
                    try:
                        r = client.get("http://reviews:9080/")
                        r.raise_for_status()
                        peers.append(r.headers["x-peer"])
                        if r.headers["x-peer"] == SPIFFE + "client-v2":
                            saw_new.set()
                    except BaseException as e:  # any failure fails the test
                        failures.append(e)
                        stop.set()

        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            assert backend.wait(lambda: backend.ok_requests() >= 5)
            new = pki.issue("client-v2")
            directory = Path(client_files["certificate_file"]).parent
            pki.write(directory, new)  # cert, then key, then CA: each os.replace'd
            assert saw_new.wait(20), "the new certificate was never presented"
            count = len(peers)
            assert backend.wait(lambda: backend.ok_requests() >= count + 5)
        finally:
            stop.set()
            thread.join(20)
        assert failures == []
        assert peers[0] == SPIFFE + "client"
        # Once rotated, every later connection uses the new certificate.
        first_new = peers.index(SPIFFE + "client-v2")
        assert set(peers[first_new:]) == {SPIFFE + "client-v2"}
    finally:
        backend.close()


def test_unknown_provider_fails_closed(control_plane: ControlPlane, backend: MtlsBackend) -> None:
    boot = bootstrap_for(control_plane, node_id="pymesh-test/unknown-provider")  # no providers
    from pymesh.testing import push_mesh

    with pymesh.Mesh(bootstrap=boot, seed=0) as mesh:
        push_mesh(control_plane, mesh, _config(backend))
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            for _ in range(2):
                with pytest.raises(TlsConfigError) as info:
                    client.get("http://reviews:9080/")
                assert CLUSTER in str(info.value)
                assert "'default'" in str(info.value)
                assert "certificate_providers" in str(info.value)
    assert backend.accepted == 0  # no connection was ever opened


def test_unreadable_key_fails_closed(
    control_plane: ControlPlane, backend: MtlsBackend, client_files: dict[str, str]
) -> None:
    files = {**client_files, "private_key_file": client_files["private_key_file"] + ".missing"}
    boot = bootstrap_for(control_plane, node_id="pymesh-test/unreadable-key")
    boot["certificate_providers"] = {"default": {"plugin_name": "file_watcher", "config": files}}
    from pymesh.testing import push_mesh

    with pymesh.Mesh(bootstrap=boot, seed=0) as mesh:
        push_mesh(control_plane, mesh, _config(backend))
        with (
            httpx.Client(transport=pymesh.MeshTransport(mesh)) as client,
            pytest.raises(TlsConfigError) as info,
        ):
            client.get("http://reviews:9080/")
    msg = str(info.value)
    assert f"cluster {CLUSTER!r}" in msg and "'default'" in msg and "private_key_file" in msg
    assert backend.accepted == 0


def test_unknown_plugin_names_it(
    control_plane: ControlPlane, backend: MtlsBackend, client_files: dict[str, str]
) -> None:
    boot = bootstrap_for(control_plane, node_id="pymesh-test/unknown-plugin")
    boot["certificate_providers"] = {"default": {"plugin_name": "meshca", "config": {}}}
    from pymesh.testing import push_mesh

    with pymesh.Mesh(bootstrap=boot, seed=0) as mesh:
        push_mesh(control_plane, mesh, _config(backend))
        with (
            httpx.Client(transport=pymesh.MeshTransport(mesh)) as client,
            pytest.raises(TlsConfigError, match="unknown plugin 'meshca'"),
        ):
            client.get("http://reviews:9080/")
    assert backend.accepted == 0


def test_plaintext_cluster_is_unchanged(mesh: pymesh.Mesh, push_mesh: Push) -> None:
    """A cluster without TLS still talks plaintext through the same backend."""
    from pymesh.testing import EchoBackend

    with EchoBackend("plain") as echo:
        push_mesh({"services": {"plain": {"port": 8080, "endpoints": [echo.address]}}})
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            assert client.get("http://plain:8080/").status_code == 200
        assert echo.request_count == 1
