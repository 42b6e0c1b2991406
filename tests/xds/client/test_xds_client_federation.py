"""xDS federation (gRFC A47) through one Mesh: two authorities on two real control
planes, an ``xdstp://`` listener (and its routes, clusters, endpoints) on each, used
side by side with the top-level servers' plain names."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
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


def _federated(authority: str, config: dict[str, Any]) -> Snapshot:
    """``compile_mesh(config)`` with every resource renamed into ``authority``'s xdstp
    names (listeners, their RDS names, routes' clusters, EDS service names)."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    snap = compile_mesh(config)
    listeners, routes = list(snap.get(LISTENER_TYPE).values()), list(snap.get(ROUTE_TYPE).values())
    clusters = list(snap.get(CLUSTER_TYPE).values())
    endpoints = list(snap.get(ENDPOINT_TYPE).values())
    for lis in listeners:
        lis.name = _xdstp(authority, LISTENER_TYPE, lis.name)
        hcm = hcm_pb2.HttpConnectionManager()
        lis.api_listener.api_listener.Unpack(hcm)
        hcm.rds.route_config_name = _xdstp(authority, ROUTE_TYPE, hcm.rds.route_config_name)
        lis.api_listener.api_listener.Pack(hcm)
    for rc in routes:
        rc.name = _xdstp(authority, ROUTE_TYPE, rc.name)
        for vh in rc.virtual_hosts:
            for route in vh.routes:
                route.route.cluster = _xdstp(authority, CLUSTER_TYPE, route.route.cluster)
    for cluster in clusters:
        eds = cluster.eds_cluster_config.service_name or cluster.name
        cluster.name = _xdstp(authority, CLUSTER_TYPE, cluster.name)
        cluster.eds_cluster_config.service_name = _xdstp(authority, ENDPOINT_TYPE, eds)
    for cla in endpoints:
        cla.cluster_name = _xdstp(authority, ENDPOINT_TYPE, cla.cluster_name)
    return Snapshot.of(
        f"{authority}-1", listeners=listeners, routes=routes, clusters=clusters, endpoints=endpoints
    )


def _services(http: EchoBackend, grpc_backend: str) -> dict[str, Any]:
    return {
        "services": {
            "reviews": {"port": 9080, "endpoints": [http.address]},
            "echo": {"port": 50051, "protocol": "grpc", "endpoints": [grpc_backend]},
        }
    }


class GrpcEcho:
    """A real gRPC server whose unary ``/fed.Echo/Echo`` answers with its name."""

    def __init__(self, name: str) -> None:
        import grpc

        handler = grpc.method_handlers_generic_handler(
            "fed.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda r, c: name.encode())}
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        self.server.add_generic_rpc_handlers((handler,))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)


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
    ga, gb = GrpcEcho("grpc-a"), GrpcEcho("grpc-b")
    try:
        with EchoBackend("from-a") as ea, EchoBackend("from-b") as eb, EchoBackend("plain") as ep:
            plain = compile_mesh({"services": {"plain": {"port": 80, "endpoints": [ep.address]}}})
            fed_a = _federated("a.example", _services(ea, ga.address))
            a.set_snapshot(
                Snapshot.of(
                    "a-1",
                    **{
                        kind: [*fed_a.get(t).values(), *plain.get(t).values()] for kind, t in _KINDS
                    },
                )
            )
            b.set_snapshot(_federated("b.example", _services(eb, gb.address)))
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
                # httpx: a transport per authority, the same host name on each.
                for authority, backend in (("a.example", "from-a"), ("b.example", "from-b")):
                    transport = pymesh.MeshTransport(mesh, xds_authority=authority)
                    with httpx.Client(transport=transport) as client:
                        resp = client.get("http://reviews:9080/", timeout=30)
                    assert resp.headers["x-backend"] == backend
                # gRPC: xds://authority/target, as grpcio spells it.
                for authority, backend in (("a.example", b"grpc-a"), ("b.example", b"grpc-b")):
                    channel = pymesh.grpc.insecure_channel(f"xds://{authority}/echo:50051", mesh)
                    with channel:
                        assert channel.unary_unary("/fed.Echo/Echo")(b"", timeout=30) == backend
                # Plain names beside them, from the top-level server.
                with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
                    assert (
                        client.get("http://plain:80/", timeout=30).headers["x-backend"] == "plain"
                    )
                # One stream per server: b's client is a second one, on the same thread.
                dump = mesh.config_dump()
                by_server = {
                    (r["server_uri"], r["name"].split("/")[2])
                    for r in dump["resources"]
                    if r["name"].startswith("xdstp://")
                }
                assert (b.address, "b.example") in by_server
                assert (a.address, "a.example") in by_server
                assert not any(s == a.address and n == "b.example" for s, n in by_server)
                assert [f["server_uri"] for f in dump["federation"]] == [b.address]
    finally:
        ga.close()
        gb.close()


_KINDS = (
    ("listeners", LISTENER_TYPE),
    ("routes", ROUTE_TYPE),
    ("clusters", CLUSTER_TYPE),
    ("endpoints", ENDPOINT_TYPE),
)


def test_unknown_xds_authority_is_a_typed_error(
    planes: tuple[ControlPlane, ControlPlane],
) -> None:
    a, _ = planes
    bootstrap = {"xds_servers": [_server(a)], "node": {"id": "federated-2"}}
    with pymesh.Mesh(bootstrap=bootstrap) as mesh, pytest.raises(BootstrapError) as info:
        mesh.slot("reviews:9080", xds_authority="nowhere.example")
    assert "nowhere.example" in info.value.field and "authorities" in info.value.reason
