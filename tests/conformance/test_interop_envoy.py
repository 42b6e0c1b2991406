"""Envoy as the reference client of pymesh's control plane: zero NACKs, same routing."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _peers import ENVOY_NODE, EnvoyProcess, HttpBackend, envoy_snapshot, free_port, start_envoy

from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
    Snapshot,
    compile_mesh,
)

TIMEOUT = 30.0


def mesh(b1: HttpBackend, b2: HttpBackend, b3: HttpBackend, jason_to: str) -> dict[str, Any]:
    return {
        "services": {
            "web": {
                "port": 8080,
                "versions": {"v1": {"endpoints": [b1.address]}, "v2": {"endpoints": [b2.address]}},
                "routes": [
                    {
                        "match": {"prefix": "/", "headers": {"end-user": "jason"}},
                        "split": {jason_to: 100},
                        "timeout": "5s",
                        "retries": {"attempts": 2, "on": "5xx,reset,connect-failure"},
                    },
                    {"match": {"prefix": "/"}, "split": {"v1": 50, "v2": 50}},
                ],
                "traffic_policy": {
                    "lb": "LEAST_REQUEST",
                    "outlier_detection": {"consecutive_5xx": 5, "interval": "10s"},
                    "circuit_breakers": {"max_requests": 100},
                },
            },
            "api": {"port": 8081, "endpoints": [b3.address]},
        }
    }


@pytest.fixture
def backends() -> Iterator[tuple[HttpBackend, HttpBackend, HttpBackend]]:
    with HttpBackend("web-v1") as b1, HttpBackend("web-v2") as b2, HttpBackend("api") as b3:
        yield b1, b2, b3


def publish(cp: ControlPlane, snap: Snapshot, ports: dict[str, int]) -> Snapshot:
    envoy_snap = envoy_snapshot(snap, ports)
    cp.set_snapshot(snap)  # what proxyless clients would get (api_listeners)
    cp.set_snapshot(envoy_snap, node_id=ENVOY_NODE)
    return envoy_snap


def get(client: httpx.Client, port: int, host: str, path: str = "/x", **headers: str) -> str:
    r = client.get(f"http://127.0.0.1:{port}{path}", headers={"host": host, **headers})
    assert r.status_code == 200, (r.status_code, r.text)
    return r.headers["x-backend"]


def test_envoy_routes_as_configured_with_zero_nacks(
    backends: tuple[HttpBackend, HttpBackend, HttpBackend],
) -> None:
    b1, b2, b3 = backends
    web_port, api_port = free_port(), free_port()
    ports = {"web:8080": web_port, "api:8081": api_port}
    with ControlPlane() as cp:
        snap = publish(cp, compile_mesh(mesh(b1, b2, b3, "v2"), "test"), ports)
        envoy: EnvoyProcess
        with start_envoy(cp.port) as envoy, httpx.Client(timeout=10) as client:
            for t in (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE):
                cp.wait_for_ack(t, snap.version, TIMEOUT, node_id=ENVOY_NODE)
            envoy.wait_listening([web_port, api_port], TIMEOUT)

            # Header route: jason always reaches v2.
            assert {
                get(client, web_port, "web:8080", **{"end-user": "jason"}) for _ in range(20)
            } == {"web-v2"}
            # Weighted split 50/50 over 200 requests: both sides get a fair share
            # (P(one side < 60) is about 1e-8).
            split = Counter(get(client, web_port, "web") for _ in range(200))
            assert set(split) == {"web-v1", "web-v2"}
            assert min(split.values()) >= 60, split
            # Virtual host domains include host:port; the second service has its own cluster.
            assert {get(client, api_port, "api:8081") for _ in range(5)} == {"api"}
            assert b3.total == 5

            # Push a change: jason now goes to v1. Envoy ACKs it and follows it.
            snap2 = publish(cp, compile_mesh(mesh(b1, b2, b3, "v1"), "test"), ports)
            assert snap2.version != snap.version
            cp.wait_for_ack(ROUTE_TYPE, snap2.version, TIMEOUT, node_id=ENVOY_NODE)
            deadline = time.monotonic() + TIMEOUT
            while get(client, web_port, "web", **{"end-user": "jason"}) != "web-v1":
                assert time.monotonic() < deadline, "Envoy never applied the new routes"
            assert {get(client, web_port, "web", **{"end-user": "jason"}) for _ in range(20)} == {
                "web-v1"
            }
        assert cp.nacks == []
        envoy_acks = {a.type_url for a in cp.acks if a.node_id == ENVOY_NODE}
        assert envoy_acks == {LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE}


def test_envoy_accepts_every_mesh_feature(
    backends: tuple[HttpBackend, HttpBackend, HttpBackend],
) -> None:
    """The full mesh-file vocabulary (faults, hashing, TLS-free policies) is valid to Envoy."""
    b1, b2, _ = backends
    data = {
        "services": {
            "shop": {
                "port": 9000,
                "protocol": "http",
                "endpoints": [{"address": b1.address, "locality": "us/east/a", "weight": 2}],
                "versions": {"canary": {"endpoints": [{"address": b2.address, "priority": 0}]}},
                "routes": [
                    {
                        "name": "faulty",
                        "match": {"path": "/fault", "query": {"debug": "present"}},
                        "fault": {
                            "abort": {"status": 503, "percent": 100},
                            "delay": {"fixed": "1ms", "percent": 0.5},
                        },
                    },
                    {
                        "match": {"regex": "/re/[a-z]+", "headers": {"x-h": {"prefix": "a"}}},
                        "split": "canary",
                        "retries": {
                            "attempts": 3,
                            "per_try_timeout": "500ms",
                            "backoff": {"base": "25ms", "max": "250ms"},
                        },
                    },
                    {"split": {"canary": 1, "shop": 3}},
                ],
                "traffic_policy": {
                    "lb": "RING_HASH",
                    "hash_on": {"header": "x-user"},
                    "outlier_detection": {
                        "consecutive_5xx": 3,
                        "base_ejection_time": "30s",
                        "max_ejection_percent": 50,
                    },
                    "circuit_breakers": {
                        "max_connections": 10,
                        "max_pending_requests": 10,
                        "max_retries": 3,
                    },
                },
            },
            # Every LB policy, so Envoy validates each compiled form.
            **{
                f"lb-{lb.lower().replace('_', '-')}": {
                    "port": 9000,
                    "endpoints": [b1.address],
                    "traffic_policy": {"lb": lb},
                }
                for lb in ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV")
            },
        }
    }
    port = free_port()
    with ControlPlane() as cp:
        snap = publish(cp, compile_mesh(data, "test"), {"shop:9000": port})
        with start_envoy(cp.port) as envoy, httpx.Client(timeout=10) as client:
            for t in (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE):
                cp.wait_for_ack(t, snap.version, TIMEOUT, node_id=ENVOY_NODE)
            envoy.wait_listening([port], TIMEOUT)
            r = client.get(f"http://127.0.0.1:{port}/fault?debug=1", headers={"host": "shop"})
            assert r.status_code == 503  # the fault filter aborted it
            # The regex + header route goes to the canary version only.
            canary = {get(client, port, "shop", "/re/abc", **{"x-h": "abc"}) for _ in range(10)}
            assert canary == {"web-v2"}
        assert cp.nacks == []
