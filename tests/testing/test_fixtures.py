"""The pymesh.testing fixtures and helpers, against a real control plane and real backends."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import pymesh
from pymesh.server import ControlPlane, Snapshot
from pymesh.testing import EchoBackend, bootstrap_for, push_mesh, start_echo_backends


def _service(*backends: EchoBackend, **extra: Any) -> dict[str, Any]:
    return {
        "services": {"echo": {"port": 8080, "endpoints": [b.address for b in backends], **extra}}
    }


def test_echo_backend_answers_with_its_name(echo_backend: EchoBackend) -> None:
    r = httpx.post(echo_backend.url + "/hello?x=1", content=b"payload", headers={"x-t": "1"})
    assert r.status_code == 200
    assert r.text == "echo"
    assert r.headers["x-backend"] == "echo"
    (seen,) = echo_backend.requests
    assert (seen.method, seen.path, seen.body, seen.status) == (
        "POST",
        "/hello?x=1",
        b"payload",
        200,
    )
    assert seen.header("X-T") == "1"


def test_echo_backend_fail_next_then_recovers(echo_backend: EchoBackend) -> None:
    echo_backend.fail_next(2, status=502)
    with httpx.Client() as c:
        codes = [c.get(echo_backend.url).status_code for _ in range(4)]
    assert codes == [502, 502, 200, 200]
    assert echo_backend.status_counts() == Counter({502: 2, 200: 2})


def test_echo_backend_fail_rate_is_seeded() -> None:
    def run() -> list[int]:
        with EchoBackend("f", fail_rate=0.5, seed=3) as b, httpx.Client() as c:
            return [c.get(b.url).status_code for _ in range(40)]

    first = run()
    assert first == run()
    assert 5 < first.count(503) < 35
    assert set(first) == {200, 503}


def test_echo_backend_rejects_bad_fail_rate() -> None:
    with pytest.raises(ValueError, match="fail_rate"):
        EchoBackend(fail_rate=1.5)


def test_wait_for_requests_times_out_with_a_message(echo_backend: EchoBackend) -> None:
    with pytest.raises(TimeoutError, match="saw 0 requests"):
        echo_backend.wait_for_requests(1, timeout=0.2)


def test_start_echo_backends_names_and_ports() -> None:
    backends = start_echo_backends(3, "svc")
    try:
        assert [b.name for b in backends] == ["svc-0", "svc-1", "svc-2"]
        assert len({b.port for b in backends}) == 3
        assert all(httpx.get(b.url).text == b.name for b in backends)
    finally:
        for b in backends:
            b.close()
    assert "stopped" in repr(backends[0])


def test_fixtures_route_through_the_mesh(
    mesh: pymesh.Mesh,
    push_mesh: Callable[..., Snapshot],
    echo_backends: Callable[..., list[EchoBackend]],
    control_plane: ControlPlane,
) -> None:
    a, b = echo_backends(2, "echo")
    snap = push_mesh(_service(a, b))
    assert control_plane.nacks == []
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        served = Counter(client.get("http://echo:8080/").headers["x-backend"] for _ in range(20))
    assert served == Counter({"echo-0": 10, "echo-1": 10})  # round robin
    versions = {t["version_info"] for t in mesh.config_dump()["types"].values()}
    assert versions == {snap.version}


def test_push_mesh_waits_for_the_new_config(
    mesh: pymesh.Mesh,
    push_mesh: Callable[..., Snapshot],
    echo_backends: Callable[..., list[EchoBackend]],
) -> None:
    a, b = echo_backends(2, "echo")
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        push_mesh(_service(a), version="one")
        assert {client.get("http://echo:8080/").text for _ in range(5)} == {"echo-0"}
        push_mesh(_service(b), version="two")
        # No polling: once push_mesh returns, every request sees the new endpoints.
        assert {client.get("http://echo:8080/").text for _ in range(5)} == {"echo-1"}


def test_mesh_bootstrap_points_at_the_control_plane(
    mesh_bootstrap: dict[str, Any], control_plane: ControlPlane
) -> None:
    assert mesh_bootstrap["xds_servers"][0]["server_uri"] == control_plane.address
    assert mesh_bootstrap["node"]["id"].startswith("pymesh-test/")


def test_helpers_work_without_pytest_fixtures() -> None:
    with (
        ControlPlane() as cp,
        EchoBackend("solo") as solo,
        pymesh.Mesh(bootstrap=bootstrap_for(cp, "plain")) as m,
    ):
        snap = push_mesh(cp, m, _service(solo))
        assert (
            cp.wait_for_ack(
                "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", snap.version
            ).node_id
            == "plain"
        )
        with httpx.Client(transport=pymesh.MeshTransport(m)) as client:
            assert client.get("http://echo:8080/").headers["x-backend"] == "solo"


def test_push_mesh_times_out_when_the_mesh_is_gone() -> None:
    with ControlPlane() as cp, EchoBackend("x") as x:
        m = pymesh.Mesh(bootstrap=bootstrap_for(cp, "gone"))
        push_mesh(cp, m, _service(x))
        m.close()
        with pytest.raises(TimeoutError, match="no ACK"):
            push_mesh(cp, m, _service(x, routes=[{"timeout": "3s"}]), timeout=0.5)
