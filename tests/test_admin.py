"""The admin server and the CSDS-shaped config dump, against a real control plane."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _edit import edited_mesh

import pymesh
from pymesh.server import ROUTE_TYPE, ControlPlane
from pymesh.testing import EchoBackend
from pymesh.testing.envoy import free_port

Push = Callable[..., Any]
CLUSTER = "outbound|9080||reviews"
CONFIG = {"services": {"reviews": {"port": 9080, "endpoints": []}}}


def _config(backend: EchoBackend) -> dict[str, Any]:
    return {"services": {"reviews": {"port": 9080, "endpoints": [backend.address]}}}


def _get(admin: pymesh.Mesh, path: str) -> tuple[int, str]:
    assert admin.admin is not None
    url = f"http://{admin.admin.address}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _bad_regex(rc: Any) -> None:
    route = rc.virtual_hosts[0].routes.add()
    route.match.safe_regex.regex = "(unclosed"
    route.route.cluster = CLUSTER


def test_nack_keeps_last_good_version_and_admin_shows_it(
    control_plane: ControlPlane, mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    good = push_mesh(_config(echo_backend), version="v1")
    bad = edited_mesh(_config(echo_backend), route=_bad_regex)
    control_plane.set_snapshot(bad.__class__.of("v2", **_resources(bad)))
    nack = control_plane.wait_for_nack(ROUTE_TYPE, 20, mesh.node_id)
    assert "safe_regex" in nack.message and nack.version == "v2"

    dump = mesh.config_dump()
    [rds] = [c for c in dump["client_config"]["generic_xds_configs"] if c["type_url"] == ROUTE_TYPE]
    assert rds["name"] == "reviews:9080"
    assert rds["client_status"] == "NACKED"
    assert rds["config_status"] == "ERROR"
    assert rds["version_info"] == good.version  # the last good version still serves
    assert "safe_regex" in rds["error_state"]["details"]
    assert dump["client_config"]["node"]["id"] == mesh.node_id
    # The old keys stay.
    assert {"resources", "listeners_in_use", "clusters_in_use"} <= dump.keys()
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        assert client.get("http://reviews:9080/").status_code == 200

    mesh.start_admin()
    status, body = _get(mesh, "/config_dump")
    assert status == 200
    served = json.loads(body)["client_config"]["generic_xds_configs"]
    [rds2] = [c for c in served if c["type_url"] == ROUTE_TYPE]
    assert rds2["client_status"] == "NACKED"
    assert rds2["error_state"]["details"] == rds["error_state"]["details"]

    status, body = _get(mesh, "/stats")
    assert status == 200
    assert (
        f'pymesh_xds_client_nacks_total{{pymesh_xds_resource_type="{ROUTE_TYPE}",'
        f'pymesh_xds_server="{control_plane.address}"}} 1.0' in body.splitlines()
    )
    assert "# TYPE pymesh_circuit_breaker_overflows_total counter" in body

    status, body = _get(mesh, "/clusters")
    assert status == 200
    [ep] = json.loads(body)[CLUSTER]["endpoints"]
    assert ep["address"] == echo_backend.address
    assert ep["ejected"] is False
    assert ep["weight"] == 1

    status, body = _get(mesh, "/ready")
    assert status == 200 and json.loads(body)["ready"] is True


def _resources(snap: Any) -> dict[str, Any]:
    from pymesh.server import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE

    return {
        "listeners": snap.get(LISTENER_TYPE).values(),
        "routes": snap.get(ROUTE_TYPE).values(),
        "clusters": snap.get(CLUSTER_TYPE).values(),
        "endpoints": snap.get(ENDPOINT_TYPE).values(),
    }


def test_ready_is_503_while_a_listener_waits_for_config(mesh: pymesh.Mesh) -> None:
    admin = mesh.start_admin()
    assert mesh.start_admin() is admin  # once per mesh
    mesh.slot("pending:80")  # subscribed; the control plane has no snapshot at all
    status, body = _get(mesh, "/ready")
    assert status == 503
    assert json.loads(body)["listeners"]["pending:80"]["ready"] is False
    assert _get(mesh, "/nope")[0] == 404


def test_explain_endpoint_matches_explain_request(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    from pymesh._explain_cli import explain_request

    push_mesh(_config(echo_backend))
    mesh.start_admin()
    status, body = _get(
        mesh, "/explain?method=POST&url=http://reviews:9080/x&h=x-user:%20a&random=7"
    )
    assert status == 200
    want = explain_request(mesh, "POST", "http://reviews:9080/x", {"x-user": "a"}, random_value=7)
    assert json.loads(body) == json.loads(json.dumps(want, default=str))
    assert _get(mesh, "/explain")[0] == 400


def test_admin_port_env_starts_the_server(
    mesh_bootstrap: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # a free port for the env var (released before use)
    monkeypatch.setenv("PYMESH_ADMIN_PORT", str(port))
    with pymesh.Mesh(bootstrap=mesh_bootstrap) as m:
        assert m.admin is not None and m.admin.port == port
        assert _get(m, "/ready")[0] == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5)


def test_bad_admin_port_env_is_a_typed_error(
    monkeypatch: pytest.MonkeyPatch, mesh_bootstrap: dict[str, Any]
) -> None:
    monkeypatch.setenv("PYMESH_ADMIN_PORT", "eighty")
    with pytest.raises(pymesh.MeshError, match="PYMESH_ADMIN_PORT='eighty' is not a port"):
        pymesh.Mesh(bootstrap=mesh_bootstrap)


def _with_unsupported(config: dict[str, Any], version: str, timeout_ms: int = 250) -> Any:
    """The compiled mesh with cluster fields pymesh warns about (parsed, not applied)."""

    def edit(cluster: Any) -> None:
        cluster.health_checks.add().timeout.FromMilliseconds(timeout_ms)
        cluster.lrs_server.self.SetInParent()

    snap = edited_mesh(config, cluster=edit)
    return snap.__class__.of(version, **_resources(snap))


def test_unsupported_fields_are_counted_in_dump_stats_and_status(
    control_plane: ControlPlane, mesh: pymesh.Mesh, echo_backend: EchoBackend
) -> None:
    from rich.console import Console

    from pymesh._explain_cli import render_status
    from pymesh.testing import push_snapshot

    push_snapshot(control_plane, mesh, _with_unsupported(_config(echo_backend), "w1"))
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        assert client.get("http://reviews:9080/").status_code == 200  # still served
    rows = {(r["type"], r["field"]): r["count"] for r in mesh.config_dump()["unsupported_fields"]}
    assert rows == {("Cluster", "health_checks"): 1, ("Cluster", "lrs_server"): 1}

    # The same bytes again under a new version are not decoded again: no new count.
    push_snapshot(control_plane, mesh, _with_unsupported(_config(echo_backend), "w1b"))
    rows = {(r["type"], r["field"]): r["count"] for r in mesh.config_dump()["unsupported_fields"]}
    assert rows == {("Cluster", "health_checks"): 1, ("Cluster", "lrs_server"): 1}
    # A changed cluster that still sets the fields warns (and counts) again, once.
    push_snapshot(control_plane, mesh, _with_unsupported(_config(echo_backend), "w2", 300))
    rows = {(r["type"], r["field"]): r["count"] for r in mesh.config_dump()["unsupported_fields"]}
    assert rows == {("Cluster", "health_checks"): 2, ("Cluster", "lrs_server"): 2}

    mesh.start_admin()
    status, body = _get(mesh, "/stats")
    assert status == 200
    assert "# TYPE pymesh_xds_client_unsupported_fields_total counter" in body
    assert (
        'pymesh_xds_client_unsupported_fields_total{pymesh_xds_resource_type="Cluster",'
        'pymesh_xds_field="health_checks"} 2' in body.splitlines()
    )
    status, body = _get(mesh, "/config_dump")
    assert {"type": "Cluster", "field": "lrs_server", "count": 2} in json.loads(body)[
        "unsupported_fields"
    ]

    console = Console(record=True, width=200)
    render_status(console, mesh.config_dump())
    text = console.export_text()
    assert "unsupported xDS fields" in text
    assert "health_checks" in text and "lrs_server" in text
