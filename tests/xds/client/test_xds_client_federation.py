"""xDS federation (gRFC A47) through one Mesh: two authorities on two real control
planes, an ``xdstp://`` listener (and its routes, clusters, endpoints) on each, used
side by side with the top-level servers' plain names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import pymesh
from pymesh.errors import BootstrapError
from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
    Snapshot,
    compile_mesh,
)
from pymesh.testing import EchoBackend


def _xdstp(authority: str, type_url: str, name: str) -> str:
    return f"xdstp://{authority}/{type_url.rsplit('/', 1)[-1]}/{name}"


def _federated(authority: str, backend: EchoBackend) -> Snapshot:
    """``reviews:9080`` with every resource renamed into ``authority``'s xdstp names."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    snap = compile_mesh({"services": {"reviews": {"port": 9080, "endpoints": [backend.address]}}})
    [lis] = snap.get(LISTENER_TYPE).values()
    [rc] = snap.get(ROUTE_TYPE).values()
    [cluster] = snap.get(CLUSTER_TYPE).values()
    [cla] = snap.get(ENDPOINT_TYPE).values()
    rc_name = _xdstp(authority, ROUTE_TYPE, rc.name)
    cluster_name = _xdstp(authority, CLUSTER_TYPE, cluster.name)
    eds_name = _xdstp(authority, ENDPOINT_TYPE, cla.cluster_name)
    lis.name = _xdstp(authority, LISTENER_TYPE, lis.name)
    hcm = hcm_pb2.HttpConnectionManager()
    lis.api_listener.api_listener.Unpack(hcm)
    hcm.rds.route_config_name = rc_name
    lis.api_listener.api_listener.Pack(hcm)
    rc.name = rc_name
    for vh in rc.virtual_hosts:
        for route in vh.routes:
            route.route.cluster = cluster_name
    cluster.name = cluster_name
    cluster.eds_cluster_config.service_name = eds_name
    cla.cluster_name = eds_name
    return Snapshot.of(
        f"{authority}-1", listeners=[lis], routes=[rc], clusters=[cluster], endpoints=[cla]
    )


@pytest.fixture
def planes() -> Iterator[tuple[ControlPlane, ControlPlane]]:
    with ControlPlane(port=0) as a, ControlPlane(port=0) as b:
        yield a, b


def _server(cp: ControlPlane) -> dict[str, Any]:
    return {"server_uri": cp.address, "channel_creds": [{"type": "insecure"}]}


def test_two_authorities_on_two_servers_from_one_mesh(
    planes: tuple[ControlPlane, ControlPlane],
) -> None:
    a, b = planes
    with EchoBackend("from-a") as ea, EchoBackend("from-b") as eb, EchoBackend("plain") as ep:
        a.set_snapshot(_federated("a.example", ea))
        b.set_snapshot(_federated("b.example", eb))
        bootstrap = {
            # Plain names go to the top-level servers (here: a's server too).
            "xds_servers": [_server(a)],
            "node": {"id": "federated"},
            "authorities": {
                "a.example": {},  # no servers of its own: the top-level ones
                "b.example": {"xds_servers": [_server(b)]},
            },
        }
        with pymesh.Mesh(bootstrap=bootstrap, seed=1) as mesh:
            states = {}
            for authority in ("a.example", "b.example"):
                slot = mesh.slot("reviews:9080", xds_authority=authority)
                state = mesh.wait_state(slot, 30)
                assert state is not None
                states[authority] = state
            # Each listener's routes, clusters and endpoints came from its own server.
            for authority, backend in (("a.example", ea), ("b.example", eb)):
                [cc] = states[authority].config.clusters.values()
                assert cc.name.startswith(f"xdstp://{authority}/")
                assert cc.endpoints is not None
                [ep_] = [e for loc in cc.endpoints.localities for e in loc.endpoints]
                assert ep_.address == backend.address
            # One stream per server: b's client is a second one, on the same thread.
            dump = mesh.config_dump()
            servers = {r["server_uri"] for r in dump["resources"]}
            assert servers == {a.address, b.address}
            assert [f["server_uri"] for f in dump["federation"]] == [b.address]
            # Plain names still work beside them, from the top-level server.
            a.set_snapshot(
                Snapshot.of(
                    "mixed",
                    **{
                        k: [*_federated("a.example", ea).get(t).values(), *plain.get(t).values()]
                        for k, t, plain in [
                            (k, t, compile_mesh(
                                {"services": {"plain": {"port": 80, "endpoints": [ep.address]}}}
                            ))
                            for k, t in (
                                ("listeners", LISTENER_TYPE),
                                ("routes", ROUTE_TYPE),
                                ("clusters", CLUSTER_TYPE),
                                ("endpoints", ENDPOINT_TYPE),
                            )
                        ]
                    },
                )
            )  # fmt: skip
            with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
                assert client.get("http://plain:80/", timeout=30).headers["x-backend"] == "plain"


def test_unknown_xds_authority_is_a_typed_error(
    planes: tuple[ControlPlane, ControlPlane],
) -> None:
    a, _ = planes
    bootstrap = {"xds_servers": [_server(a)], "node": {"id": "federated-2"}}
    with pymesh.Mesh(bootstrap=bootstrap) as mesh, pytest.raises(BootstrapError) as info:
        mesh.slot("reviews:9080", xds_authority="nowhere.example")
    assert "nowhere.example" in info.value.field and "authorities" in info.value.reason
