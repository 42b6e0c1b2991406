"""A client whose listener name resolves to a *server* Listener (gRFC A36: no api_listener)
fails closed with a ResourceInvalid naming api_listener: the Listener is ACKed (a server
on the same control plane uses it), it is just not a client's, and the request never
passes through to the address."""

from __future__ import annotations

import httpx
import pytest

import pymesh
from pymesh.server import ControlPlane, Snapshot, compile_mesh
from pymesh.testing import EchoBackend


def test_a_server_listener_is_no_client_listener(
    mesh: pymesh.Mesh, control_plane: ControlPlane, echo_backend: EchoBackend
) -> None:
    port = echo_backend.address.rsplit(":", 1)[1]
    inbound = {
        "mtls": "DISABLE",
        "listen": [echo_backend.address],
        # Named as a client would ask for the backend's own address, so a passthrough
        # would reach it.
        "listener_name_template": "%s",
    }
    snap = compile_mesh({"services": {"echo": {"port": int(port), "inbound": inbound}}}, "test")
    server_listeners = [
        lis
        for name, lis in snap.get("type.googleapis.com/envoy.config.listener.v3.Listener").items()
        if name == echo_backend.address
    ]
    assert len(server_listeners) == 1
    control_plane.set_snapshot(Snapshot.of(listeners=server_listeners))
    with (
        httpx.Client(transport=pymesh.MeshTransport(mesh)) as client,
        pytest.raises(pymesh.MeshError) as info,
    ):
        client.get(f"{echo_backend.url}/x", timeout=30)
    assert "api_listener" in str(info.value)
    assert echo_backend.request_count == 0
    assert control_plane.nacks == []
