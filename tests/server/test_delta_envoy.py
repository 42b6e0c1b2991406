"""Envoy with ``api_type: DELTA_GRPC`` against pymesh's control plane: zero NACKs, traffic
follows edits and deletions, NOT_FOUND answers are ACKed, and a reconnect with
``initial_resource_versions`` resends nothing Envoy already has."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

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
from pymesh.testing.envoy import ENVOY_NODE, EnvoyProcess, envoy_snapshot, free_port, start_envoy

TIMEOUT = 30.0
ALL_TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)


@pytest.fixture
def backends() -> Iterator[tuple[EchoBackend, EchoBackend, EchoBackend]]:
    with EchoBackend("web-v1") as b1, EchoBackend("web-v2") as b2, EchoBackend("api") as b3:
        yield b1, b2, b3


def mesh(b1: EchoBackend, b2: EchoBackend, b3: EchoBackend, jason_to: str, api: bool) -> Any:
    services: dict[str, Any] = {
        "web": {
            "port": 8080,
            "versions": {"v1": {"endpoints": [b1.address]}, "v2": {"endpoints": [b2.address]}},
            "routes": [
                {"match": {"headers": {"end-user": "jason"}}, "split": jason_to},
                {"split": {"v1": 50, "v2": 50}},
            ],
        }
    }
    if api:
        services["api"] = {"port": 8081, "endpoints": [b3.address]}
    return {"services": services}


def publish(cp: ControlPlane, data: Any, ports: dict[str, int]) -> Snapshot:
    mesh_snap = compile_mesh(data, "test")
    used = {name: port for name, port in ports.items() if name in mesh_snap.get(ROUTE_TYPE)}
    snap = envoy_snapshot(mesh_snap, used)
    cp.set_snapshot(snap, node_id=ENVOY_NODE)
    return snap


def get(client: httpx.Client, port: int, host: str, **headers: str) -> str:
    r = client.get(f"http://127.0.0.1:{port}/x", headers={"host": host, **headers})
    assert r.status_code == 200, (r.status_code, r.text)
    return r.headers["x-backend"]


def wait_for(check: Any, what: str, envoy: EnvoyProcess) -> None:
    """Bounded polling of Envoy (a foreign process) against a deadline."""
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, f"{what}; Envoy log:\n{envoy.log()}"
        time.sleep(0.05)


def listening(envoy: EnvoyProcess, port: int) -> bool:
    status, body = envoy.admin_get("/listeners")
    return status == 200 and f"127.0.0.1:{port}" in body


def test_envoy_delta_follows_edits_and_deletions_with_zero_nacks(
    backends: tuple[EchoBackend, EchoBackend, EchoBackend],
) -> None:
    b1, b2, b3 = backends
    web_port, api_port = free_port(), free_port()
    ports = {"web:8080": web_port, "api:8081": api_port}
    with ControlPlane() as cp:
        snap = publish(cp, mesh(b1, b2, b3, "v2", api=True), ports)
        with (
            start_envoy(cp.port, api_type="DELTA_GRPC") as envoy,
            httpx.Client(timeout=10) as client,
        ):
            for t in ALL_TYPES:
                cp.wait_for_ack(t, snap.version, TIMEOUT, node_id=ENVOY_NODE)
            envoy.wait_listening([web_port, api_port], TIMEOUT)
            assert {get(client, web_port, "web", **{"end-user": "jason"}) for _ in range(10)} == {
                "web-v2"
            }
            split = Counter(get(client, web_port, "web") for _ in range(100))
            assert set(split) == {"web-v1", "web-v2"}  # P(one side absent) ~ 1e-30
            assert get(client, api_port, "api:8081") == "api"

            # An edit: only the changed route config is sent, and Envoy follows it.
            snap2 = publish(cp, mesh(b1, b2, b3, "v1", api=True), ports)
            cp.wait_for_ack(ROUTE_TYPE, snap2.version, TIMEOUT, node_id=ENVOY_NODE)
            wait_for(
                lambda: get(client, web_port, "web", **{"end-user": "jason"}) == "web-v1",
                "Envoy never applied the new route",
                envoy,
            )
            assert {get(client, web_port, "web", **{"end-user": "jason"}) for _ in range(10)} == {
                "web-v1"
            }
            # The listener, cluster and endpoints did not change: not resent, so not ACKed.
            assert not [
                a for a in cp.acks if a.version == snap2.version and a.type_url != ROUTE_TYPE
            ]

            # A deletion: the api service goes; Envoy drops its listener (removed_resources).
            snap3 = publish(cp, mesh(b1, b2, b3, "v1", api=False), ports)
            cp.wait_for_ack(LISTENER_TYPE, snap3.version, TIMEOUT, node_id=ENVOY_NODE)
            cp.wait_for_ack(CLUSTER_TYPE, snap3.version, TIMEOUT, node_id=ENVOY_NODE)
            wait_for(lambda: not listening(envoy, api_port), "api listener not removed", envoy)
            assert get(client, web_port, "web", **{"end-user": "jason"}) == "web-v1"
        assert cp.nacks == []


def test_envoy_delta_reconnect_sends_initial_resource_versions(
    backends: tuple[EchoBackend, EchoBackend, EchoBackend],
) -> None:
    b1, b2, b3 = backends
    web_port = free_port()
    ports = {"web:8080": web_port}
    data = mesh(b1, b2, b3, "v2", api=False)
    first = ControlPlane().start()
    try:
        snap = publish(first, data, ports)
        envoy = start_envoy(first.port, api_type="DELTA_GRPC")
    except BaseException:
        first.stop()
        raise
    with envoy, httpx.Client(timeout=10) as client:
        for t in ALL_TYPES:
            first.wait_for_ack(t, snap.version, TIMEOUT, node_id=ENVOY_NODE)
        envoy.wait_listening([web_port], TIMEOUT)
        port = first.port
        first.stop()
        # A new control plane on the same port, same resources: Envoy reconnects and
        # declares what it has, so nothing needs sending until something changes.
        with ControlPlane(port=port) as second:
            publish(second, data, ports)
            wait_for(lambda: second.stream_count == 1, "Envoy did not reconnect", envoy)
            edited = publish(second, mesh(b1, b2, b3, "v1", api=False), ports)
            second.wait_for_ack(ROUTE_TYPE, edited.version, TIMEOUT, node_id=ENVOY_NODE)
            wait_for(
                lambda: get(client, web_port, "web", **{"end-user": "jason"}) == "web-v1",
                "Envoy never applied the edit after reconnecting",
                envoy,
            )
            # Only the edited route config was ever sent on the new stream.
            assert {(a.type_url, a.version) for a in second.acks} == {(ROUTE_TYPE, edited.version)}
            assert second.nacks == []
    assert first.nacks == []
