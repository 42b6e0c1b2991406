"""Against a real control plane: unsupported fields warned once per resource version, and
a NACKed version reported in the CSDS dump's error_state while the last good one serves."""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

import httpx
import pytest
from _edit import edited_mesh
from envoy.service.status.v3 import csds_pb2
from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]

import pymesh
from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
    Snapshot,
)
from pymesh.testing import EchoBackend, push_snapshot

TIMEOUT = 30.0
REVIEWS = "reviews:9080"
RATINGS = "ratings:9080"


def _snapshot(
    backend: EchoBackend, version: str, header: str, *, bad_route: bool = False
) -> Snapshot:
    """Both services; every route config carries the unsupported ``cors`` field and the
    response header ``x-rc: <header>``; ``bad_route`` adds a route with an invalid regex."""

    def edit(rc: Any) -> None:
        vh = rc.virtual_hosts[0]
        vh.cors.SetInParent()
        add = rc.response_headers_to_add.add()
        add.header.key, add.header.value = "x-rc", header
        if bad_route:
            route = vh.routes.add()
            route.match.safe_regex.regex = "(unclosed"
            route.route.cluster = vh.routes[0].route.cluster

    config = {
        "services": {
            "reviews": {"port": 9080, "endpoints": [backend.address]},
            "ratings": {"port": 9080, "endpoints": [backend.address]},
        }
    }
    snap = edited_mesh(config, route=edit)
    return Snapshot.of(
        version,
        listeners=snap.get(LISTENER_TYPE).values(),
        routes=snap.get(ROUTE_TYPE).values(),
        clusters=snap.get(CLUSTER_TYPE).values(),
        endpoints=snap.get(ENDPOINT_TYPE).values(),
    )


def _cors_warnings(caplog: pytest.LogCaptureFixture, rc_name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pymesh.xds"
        and r.levelno == logging.WARNING
        and r.getMessage().startswith(f"RouteConfiguration {rc_name!r} version ")
        and "virtual_hosts[0].cors" in r.getMessage()
    ]


def _rds_entry(client_config: dict[str, Any], name: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [
        c
        for c in client_config["generic_xds_configs"]
        if c["type_url"] == ROUTE_TYPE and c["name"] == name
    ]
    assert len(entries) == 1, entries
    return entries[0]


def test_warn_once_per_version_and_nacked_version_in_csds(
    control_plane: ControlPlane,
    mesh: pymesh.Mesh,
    echo_backend: EchoBackend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pymesh.xds")

    # Version 1, only the reviews listener subscribed: one warning.
    control_plane.set_snapshot(_snapshot(echo_backend, "1", "1"))
    reviews = mesh.slot(REVIEWS)
    control_plane.wait_for_ack(ROUTE_TYPE, "1", TIMEOUT, mesh.node_id)
    mesh.wait_state(reviews, TIMEOUT)
    [first] = _cors_warnings(caplog, REVIEWS)
    assert first.startswith("RouteConfiguration 'reviews:9080' version '1': field ")
    assert "virtual_hosts[0].cors is set but not supported by pymesh; it is ignored" in first

    # Subscribing the ratings listener makes the server re-send RDS version 1, with the
    # reviews route config in it again (SotW: every subscribed resource): no new warning
    # for reviews; ratings, parsed for the first time, warns once.
    ratings = mesh.slot(RATINGS)
    mesh.wait_state(ratings, TIMEOUT)
    assert len(_cors_warnings(caplog, REVIEWS)) == 1
    assert len(_cors_warnings(caplog, RATINGS)) == 1

    # Version 2 still carries the field: one more warning each, naming version 2.
    push_snapshot(control_plane, mesh, _snapshot(echo_backend, "2", "2"), timeout=TIMEOUT)
    logs = _cors_warnings(caplog, REVIEWS)
    assert len(logs) == 2 and "version '2'" in logs[1]
    assert len(_cors_warnings(caplog, RATINGS)) == 2
    good = _rds_entry(mesh.config_dump()["client_config"], REVIEWS)
    assert good["client_status"] == "ACKED" and "error_state" not in good

    # Version 3 is invalid: NACKed; nothing of it is warned; version 2 keeps serving.
    control_plane.set_snapshot(_snapshot(echo_backend, "3", "3", bad_route=True))
    nack = control_plane.wait_for_nack(ROUTE_TYPE, TIMEOUT, mesh.node_id)
    assert nack.version == "3" and "safe_regex" in nack.message
    assert len(_cors_warnings(caplog, REVIEWS)) == 2

    dump = mesh.config_dump()
    rds = _rds_entry(dump["client_config"], REVIEWS)
    assert rds["client_status"] == "NACKED" and rds["config_status"] == "ERROR"
    assert rds["version_info"] == "2"  # the last good version
    assert rds["last_updated"] == good["last_updated"]  # ... and when it was accepted
    state = rds["error_state"]
    assert state["version_info"] == "3"  # the rejected version
    assert "virtual_hosts[0].routes[1].match.safe_regex" in state["details"]
    assert state["last_update_attempt"] >= rds["last_updated"]
    # Proto field names and values: the dict reads back into a CSDS ClientConfig.
    parsed = json_format.ParseDict(dump["client_config"], csds_pb2.ClientConfig())
    [msg] = [
        c for c in parsed.generic_xds_configs if c.type_url == ROUTE_TYPE and c.name == REVIEWS
    ]
    assert msg.error_state.version_info == "3" and msg.version_info == "2"
    assert msg.error_state.last_update_attempt.ToDatetime() >= msg.last_updated.ToDatetime()

    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        resp = client.get(f"http://{REVIEWS}/")
    assert resp.status_code == 200 and resp.headers["x-rc"] == "2"

    # The admin server serves the same dump.
    admin = mesh.start_admin()
    with urllib.request.urlopen(f"http://{admin.address}/config_dump", timeout=10) as r:
        served = json.loads(r.read())["client_config"]
    assert _rds_entry(served, REVIEWS)["error_state"] == state

    # The real CSDS service (gRFC A40), with resource bodies: the NACKed route config's
    # body is the last good version (2), its error_state the rejected one (3).
    import grpc
    from envoy.admin.v3 import config_dump_shared_pb2
    from envoy.config.route.v3 import route_pb2
    from envoy.service.status.v3 import csds_pb2_grpc

    from pymesh._explain_cli import run_status_csds

    port = mesh.start_csds()
    assert mesh.start_csds() == port  # once
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        response = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=TIMEOUT)
    [config] = response.config
    assert config.node.id == mesh.node_id
    [entry] = [
        c for c in config.generic_xds_configs if c.type_url == ROUTE_TYPE and c.name == REVIEWS
    ]
    assert config_dump_shared_pb2.ClientResourceStatus.Name(entry.client_status) == "NACKED"
    assert entry.version_info == "2" and entry.error_state.version_info == "3"
    body = route_pb2.RouteConfiguration()
    assert entry.xds_config.Unpack(body)
    [header] = [h for h in body.response_headers_to_add if h.header.key == "x-rc"]
    assert header.header.value == "2"
    listeners = [c for c in config.generic_xds_configs if c.type_url == LISTENER_TYPE]
    assert listeners and all(c.xds_config.type_url for c in listeners)
    # `pymesh status --csds` reads it, and exits 1: a resource is NACKED.
    assert run_status_csds(csds=f"127.0.0.1:{port}", as_json=False, timeout=TIMEOUT) == 1
