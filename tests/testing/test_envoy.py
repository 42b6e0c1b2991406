"""pymesh.testing.envoy: a real Envoy routes by the same resources as pymesh."""

from __future__ import annotations

import socket

import httpx

import pymesh
from pymesh.server import ControlPlane, compile_mesh
from pymesh.testing import EchoBackend, bootstrap_for, push_snapshot
from pymesh.testing.envoy import envoy_snapshot, free_port, start_envoy


def test_envoy_and_pymesh_route_the_same_config() -> None:
    with EchoBackend("v1") as v1, EchoBackend("v2") as v2, ControlPlane() as cp:
        snap = compile_mesh(
            {
                "services": {
                    "reviews": {
                        "port": 9080,
                        "versions": {
                            "v1": {"endpoints": [v1.address]},
                            "v2": {"endpoints": [v2.address]},
                        },
                        "routes": [
                            {"match": {"headers": {"end-user": "jason"}}, "split": "v2"},
                            {"split": "v1"},
                        ],
                    }
                }
            }
        )
        port = free_port()
        cp.set_snapshot(envoy_snapshot(snap, {"reviews:9080": port}), node_id="envoy")
        with start_envoy(cp.port, "envoy") as envoy:
            envoy.wait_listening([port])
            status, clusters = envoy.admin_get("/clusters")
            assert status == 200 and "outbound|9080|v2|reviews" in clusters
            via_envoy: dict[str, str] = {}
            with httpx.Client(headers={"host": "reviews:9080"}) as c:
                for user in ("jason", "ann"):
                    r = c.get(f"http://127.0.0.1:{port}/", headers={"end-user": user})
                    via_envoy[user] = r.headers["x-backend"]
        assert envoy.proc.poll() is not None  # stopped by the context manager
        with pymesh.Mesh(bootstrap=bootstrap_for(cp, "pymesh")) as mesh:
            push_snapshot(cp, mesh, snap)
            with httpx.Client(transport=pymesh.MeshTransport(mesh)) as c:
                via_pymesh = {
                    user: c.get("http://reviews:9080/", headers={"end-user": user}).headers[
                        "x-backend"
                    ]
                    for user in ("jason", "ann")
                }
        assert via_envoy == via_pymesh == {"jason": "v2", "ann": "v1"}


def test_free_port_lies_below_the_ports_connections_take_and_is_bindable() -> None:
    """A port the OS could hand to an outgoing connection can be taken before Envoy
    binds it; free_port's ports cannot."""
    from pymesh.testing.envoy import _ephemeral_range_start

    ports = {free_port() for _ in range(20)}
    start = _ephemeral_range_start()
    assert all(p < start for p in ports), (sorted(ports), start)
    assert len(ports) > 1  # random picks, apart from other processes'
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free for a listener
