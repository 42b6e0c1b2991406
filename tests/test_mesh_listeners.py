"""How a Mesh decides between "unknown host" (may pass through) and "config missing"
(fails closed), against the real embedded control plane and real backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest

import pymesh
from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ControlPlane,
    Snapshot,
    compile_mesh,
)
from pymesh.testing import EchoBackend
from pymesh.xds.client import LDS, RDS

Push = Callable[..., Any]


def _listener(name: str, rds_name: str) -> Any:
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    hcm = hcm_pb2.HttpConnectionManager()
    hcm.rds.route_config_name = rds_name
    hcm.rds.config_source.ads.SetInParent()
    router = hcm.http_filters.add(name="envoy.filters.http.router")
    router.typed_config.Pack(router_pb2.Router())
    msg = listener_pb2.Listener(name=name)
    msg.api_listener.api_listener.Pack(hcm)
    return msg


def test_listener_whose_route_configuration_is_missing_fails_closed(
    mesh: pymesh.Mesh, control_plane: ControlPlane, echo_backend: EchoBackend
) -> None:
    # Defect 3 of the fail-open issue: the listener exists (ACKED) but its route
    # configuration does not; the request went to DNS / the address directly. The
    # listener is named after the backend's own address, so a passthrough would reach it.
    # The cache takes it as an inconsistent foreign control plane would serve it
    # (ControlPlane.set_snapshot itself refuses a dangling reference).
    control_plane.cache.set_snapshot(
        Snapshot.of("v1", listeners=[_listener(echo_backend.address, "no-such-routes")])
    )
    with (
        httpx.Client(transport=pymesh.MeshTransport(mesh)) as client,
        pytest.raises(pymesh.ResourceDoesNotExistError) as info,
    ):
        client.get(f"{echo_backend.url}/x", timeout=30)
    assert info.value.type_url == RDS and info.value.resource_name == "no-such-routes"
    assert echo_backend.request_count == 0
    channel = pymesh.grpc.insecure_channel(f"xds:///{echo_backend.address}", mesh=mesh)
    with channel, pytest.raises(grpc.RpcError) as rpc:
        channel.unary_unary("/s/M")(b"", timeout=30)
    assert rpc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no-such-routes" in (rpc.value.details() or "")
    assert echo_backend.request_count == 0


def _reviews(backend: EchoBackend, port: int = 9080) -> dict[str, Any]:
    return {
        "services": {
            "reviews": {"port": port, "versions": {backend.name: {"endpoints": [backend.address]}}}
        }
    }


def test_deleted_listener_fails_requests_instead_of_serving_stale_config(
    mesh: pymesh.Mesh, control_plane: ControlPlane, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(_reviews(echo_backend))
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        assert client.get("http://reviews:9080/a").status_code == 200
        served = echo_backend.request_count
        snap = compile_mesh(_reviews(echo_backend))
        without = Snapshot.of(
            "v-deleted",
            clusters=snap.get(CLUSTER_TYPE).values(),
            endpoints=snap.get(ENDPOINT_TYPE).values(),
        )
        control_plane.set_snapshot(without)
        control_plane.wait_for_ack(LISTENER_TYPE, "v-deleted", 30, mesh.node_id)
        with pytest.raises(pymesh.ResourceDoesNotExistError) as info:
            client.get("http://reviews:9080/b")
    assert info.value.type_url == LDS and info.value.resource_name == "reviews:9080"
    assert echo_backend.request_count == served
    channel = pymesh.grpc.insecure_channel("xds:///reviews:9080", mesh=mesh)
    with channel, pytest.raises(grpc.RpcError) as rpc:
        channel.unary_unary("/s/M")(b"", timeout=30)
    assert rpc.value.code() == grpc.StatusCode.UNAVAILABLE
    # Served again when the control plane brings it back.
    push_mesh(_reviews(echo_backend), version="v-back")
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        assert client.get("http://reviews:9080/c").status_code == 200


def test_portless_host_resolves_with_one_subscription_left(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(_reviews(echo_backend, port=80))
    with httpx.Client(transport=pymesh.MeshTransport(mesh, passthrough=False)) as client:
        for path in ("/a", "/b", "/c"):
            assert client.get(f"http://reviews{path}").headers["x-backend"] == echo_backend.name
    dump = mesh.config_dump()
    listeners = {r["name"] for r in dump["resources"] if r["type_url"] == LDS}
    assert listeners == {"reviews:80"}  # the portless name is no longer subscribed
    assert set(dump["listeners_in_use"]) == {"reviews:80"}


def test_with_ignore_resource_deletion_a_deleted_listener_and_cluster_keep_serving(
    control_plane: ControlPlane, echo_backend: EchoBackend
) -> None:
    from pymesh.testing import bootstrap_for, push_mesh

    bootstrap = bootstrap_for(
        control_plane, "ignore-deletions", features=("ignore_resource_deletion",)
    )
    with pymesh.Mesh(bootstrap=bootstrap, seed=1) as mesh:
        push_mesh(control_plane, mesh, _reviews(echo_backend))
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            assert client.get("http://reviews:9080/a").status_code == 200
            # The control plane drops everything (a bad push): listener and cluster gone.
            control_plane.set_snapshot(Snapshot.of("empty"))
            control_plane.wait_for_ack(LISTENER_TYPE, "empty", 30, mesh.node_id)
            control_plane.wait_for_ack(CLUSTER_TYPE, "empty", 30, mesh.node_id)
            assert client.get("http://reviews:9080/b").status_code == 200
        assert mesh.xds_stats.deletions_ignored >= 2  # the listener and the cluster
        statuses = {(r["type_url"], r["status"]) for r in mesh.config_dump()["resources"]}
        assert (LDS, "ACKED") in statuses and (CLUSTER_TYPE, "ACKED") in statuses


def test_fail_on_data_errors_drops_a_nacked_route_configuration(
    control_plane: ControlPlane, echo_backend: EchoBackend
) -> None:
    # gRFC A88: with the server feature, a NACKed update of a cached resource drops it
    # (requests fail with XdsDataError naming it); without it, the last good one serves
    # (tests/telemetry/test_csds_versions.py shows that side).
    from pymesh.server import ROUTE_TYPE
    from pymesh.testing import bootstrap_for, push_mesh

    bootstrap = bootstrap_for(
        control_plane, "fail-on-data-errors", features=("fail_on_data_errors",)
    )
    with pymesh.Mesh(bootstrap=bootstrap, seed=1) as mesh:
        good = push_mesh(control_plane, mesh, _reviews(echo_backend))
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            assert client.get("http://reviews:9080/a").status_code == 200
            routes = []
            for rc in good.get(ROUTE_TYPE).values():
                bad = type(rc)()
                bad.CopyFrom(rc)
                bad.virtual_hosts[0].routes[0].match.safe_regex.regex = "(unclosed"
                routes.append(bad)
            control_plane.cache.set_snapshot(
                Snapshot.of(
                    "bad",
                    listeners=good.get(LISTENER_TYPE).values(),
                    routes=routes,
                    clusters=good.get(CLUSTER_TYPE).values(),
                    endpoints=good.get(ENDPOINT_TYPE).values(),
                )
            )
            nack = control_plane.wait_for_nack(ROUTE_TYPE, 30, mesh.node_id)
            assert nack.version == "bad"
            with pytest.raises(pymesh.XdsDataError) as info:
                client.get("http://reviews:9080/b")
        assert info.value.resource_name == "reviews:9080" and "safe_regex" in str(info.value)
