"""The control plane misbehaves under live traffic: it dies and comes back, or it sends
wrong types, garbage bytes, invalid and oversize resources. Requests keep flowing on the
last good config (gRFC A57/A88), and the mesh never leaves it for DNS.

``pymesh serve`` runs as a real child process that is SIGKILLed; the hostile server is
the scripted ADS server (tests/_ads_server.py), a real gRPC server on 127.0.0.1.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _ads_server import AdsServer
from _polling import wait_until
from _procs import Traffic, control_plane, write_mesh
from google.protobuf import any_pb2

import pymesh
from pymesh.server import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, compile_mesh
from pymesh.testing import EchoBackend, bootstrap_for

pytestmark = pytest.mark.timeout(300)


def _service(*backends: EchoBackend, port: int = 9080) -> dict[str, Any]:
    return {
        "services": {
            "reviews": {
                "port": port,
                "versions": {b.name: {"endpoints": [b.address]} for b in backends},
            }
        }
    }


@pytest.fixture
def backends() -> Iterator[list[EchoBackend]]:
    bs = [EchoBackend(f"b{i}").start() for i in range(2)]
    yield bs
    for b in bs:
        b.close()


def test_control_plane_killed_and_restarted_under_load(
    tmp_path: Path, backends: list[EchoBackend]
) -> None:
    mesh_file = write_mesh(tmp_path / "mesh.yaml", _service(*backends))
    cp = control_plane(mesh_file)
    assert cp.match is not None
    address = cp.match[1]
    port = int(address.rsplit(":", 1)[1])
    with (
        pymesh.Mesh(bootstrap=bootstrap_for(address, "chaos-restart"), seed=1) as mesh,
        httpx.Client(transport=pymesh.MeshTransport(mesh, passthrough=False)) as client,
    ):
        assert client.get("http://reviews:9080/warm", timeout=30).status_code == 200
        acks_before = sum(mesh.xds_stats.acks.values())
        with Traffic(lambda: client.get("http://reviews:9080/", timeout=30)) as traffic:
            traffic.wait_for(50)
            cp.kill()
            wait_until(lambda: mesh.xds_stats.connected == 0, "the mesh to see the stream fail")
            traffic.wait_for(200)  # served from the cached config while the server is gone
            assert mesh.config_dump()["connected"] is False
            cp = control_plane(mesh_file, port=port)
            wait_until(
                lambda: (
                    mesh.xds_stats.connected == 1
                    and sum(mesh.xds_stats.acks.values()) > acks_before
                ),
                "the mesh to reconnect and ACK the restarted control plane",
            )
            traffic.wait_for(50)
        cp.kill()
    assert not traffic.failures, traffic.failures
    assert set(traffic.answered_by) == {b.name for b in backends}
    assert mesh.xds_stats.stream_failures >= 1


def _resources(config: dict[str, Any]) -> dict[str, list[Any]]:
    snap = compile_mesh(config)
    return {t: list(snap.get(t).values()) for t in (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE)} | {
        ENDPOINT_TYPE: list(snap.get(ENDPOINT_TYPE).values())
    }


def _wrong_type() -> any_pb2.Any:
    from envoy.config.listener.v3 import listener_pb2

    a = any_pb2.Any()
    a.Pack(listener_pb2.Listener(name="a-listener-in-a-cluster-response"))
    return a


def _garbage(type_url: str) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=b"\x0a\xff\xff\xff\xff\x0f")


def test_hostile_control_plane_changes_nothing_that_serves(
    backends: list[EchoBackend],
) -> None:
    server = AdsServer()
    good = _resources(_service(*backends))
    try:
        mesh = pymesh.Mesh(
            bootstrap=bootstrap_for(server.address, "chaos-hostile"),
            seed=1,
            passthrough=False,
            xds_max_message_bytes=256 * 1024,
        )
        served = threading.Event()

        def serve_good(version: str) -> None:
            for type_url in (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE):
                server.wait_request(lambda r, t=type_url: r.type_url == t, since=mark)
                server.send(type_url, good[type_url], version)
            served.set()

        with mesh, httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            mark = server.mark()
            feeder = threading.Thread(target=serve_good, args=("1",), daemon=True)
            feeder.start()
            assert client.get("http://reviews:9080/", timeout=30).status_code == 200
            assert served.wait(30)
            with Traffic(lambda: client.get("http://reviews:9080/", timeout=30)) as traffic:
                traffic.wait_for(20)
                hostile = [
                    (CLUSTER_TYPE, [_wrong_type()]),
                    (CLUSTER_TYPE, [_garbage(CLUSTER_TYPE)]),
                    (LISTENER_TYPE, [_garbage(LISTENER_TYPE)]),
                    (ROUTE_TYPE, [_invalid_route(good[ROUTE_TYPE][0])]),
                    (ENDPOINT_TYPE, [_garbage(ENDPOINT_TYPE)]),
                ]
                for i, (type_url, resources) in enumerate(hostile):
                    nonce = server.send(type_url, resources, f"bad-{i}")
                    nack = server.wait_request(
                        lambda r, t=type_url, n=nonce: (
                            r.type_url == t and r.response_nonce == n and r.HasField("error_detail")
                        )
                    )
                    assert nack.version_info == "1", nack
                    traffic.wait_for(20)
                # Oversize: the stream fails (no NACK is possible), the cache serves.
                streams = mesh.xds_stats.streams_started
                big = [_big_assignment(good[ENDPOINT_TYPE][0])]
                server.send(ENDPOINT_TYPE, big, "big")
                wait_until(lambda: mesh.xds_stats.oversize_responses >= 1, "the oversize response")
                wait_until(lambda: mesh.xds_stats.streams_started > streams, "a new stream")
                traffic.wait_for(50)
        assert not traffic.failures, traffic.failures
        assert set(traffic.answered_by) == {b.name for b in backends}
        assert "max_message_bytes" in (mesh.config_dump()["last_stream_error"] or "")
    finally:
        server.stop()


def _invalid_route(rc: Any) -> Any:
    bad = type(rc)()
    bad.CopyFrom(rc)
    bad.virtual_hosts[0].routes[0].match.ClearField("prefix")
    bad.virtual_hosts[0].routes[0].match.safe_regex.regex = "(unclosed"
    return bad


def _big_assignment(cla: Any) -> Any:
    big = type(cla)()
    big.CopyFrom(cla)
    locality = big.endpoints.add()
    for i in range(20_000):
        ep = locality.lb_endpoints.add()
        ep.endpoint.address.socket_address.address = f"10.9.{i >> 8 & 255}.{i & 255}"
        ep.endpoint.address.socket_address.port_value = 1
    return big


def test_concurrent_first_requests_stay_inside_the_mesh(tmp_path: Path) -> None:
    # Defect 1: 8 threads making their first request to 8 services on `pymesh serve`
    # got DOES_NOT_EXIST (UnknownHostError, or DNS with passthrough on) for most of them.
    backends = [EchoBackend(f"svc{i}").start() for i in range(8)]
    try:
        config = {
            "services": {
                f"svc{i}": {"port": 9080, "endpoints": [b.address]} for i, b in enumerate(backends)
            }
        }
        with control_plane(write_mesh(tmp_path / "mesh.yaml", config)) as cp:
            assert cp.match is not None
            for passthrough in (False, True):
                _first_requests_from_8_threads(cp.match[1], passthrough)
    finally:
        for b in backends:
            b.close()


def _first_requests_from_8_threads(address: str, passthrough: bool) -> None:
    """Each of 8 threads makes the process's first request to all 8 services at once;
    each must reach the service's own backend (a passthrough would fail: the host
    names resolve nowhere)."""
    node = f"first-requests-{passthrough}"
    with (
        pymesh.Mesh(bootstrap=bootstrap_for(address, node), seed=1) as mesh,
        httpx.Client(transport=pymesh.MeshTransport(mesh, passthrough=passthrough)) as c,
    ):
        results: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(8)

        def first_requests(offset: int) -> None:
            start.wait(60)
            for k in range(8):
                i = (offset + k) % 8
                try:
                    resp = c.get(f"http://svc{i}:9080/", timeout=60)
                    got = resp.headers.get("x-backend", f"HTTP {resp.status_code}")
                except Exception as e:
                    got = f"{type(e).__name__}: {e}"
                with lock:
                    results.append(got if got == f"svc{i}" else f"svc{i} -> {got}")

        threads = [threading.Thread(target=first_requests, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(results) == sorted(f"svc{i}" for i in range(8) for _ in range(8))
        assert mesh.xds_stats.does_not_exist == 0
