"""Resilience counts compared with the real Envoy under the same xDS config: attempts per
request with retries, and requests a failing host takes before consecutive-5xx ejection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _peers import envoy_snapshot, free_port, start_envoy

import pymesh
from pymesh.server import ControlPlane, compile_mesh
from pymesh.testing import EchoBackend, bootstrap_for


class Pair:
    """One control plane serving Envoy (socket listener) and pymesh (api_listener)."""

    def __init__(self) -> None:
        self.cp = ControlPlane().start()
        self.envoy_port = free_port()
        self.envoy: Any = None
        self.mesh = pymesh.Mesh(bootstrap=bootstrap_for(self.cp, "pymesh-resilience"))

    def serve(self, config: dict[str, Any]) -> None:
        snap = compile_mesh(config)
        self.cp.set_snapshot(snap)
        self.cp.set_snapshot(envoy_snapshot(snap, {"reviews:9080": self.envoy_port}), "envoy")
        if self.envoy is None:
            self.envoy = start_envoy(self.cp.port, "envoy")
        self.envoy.wait_listening([self.envoy_port])
        from pymesh.server import ROUTE_TYPE

        self.cp.wait_for_ack(ROUTE_TYPE, snap.version, 30, "envoy")

    def clients(self) -> dict[str, httpx.Client]:
        return {
            "envoy": httpx.Client(
                base_url=f"http://127.0.0.1:{self.envoy_port}",
                headers={"host": "reviews:9080"},
                timeout=20,
            ),
            "pymesh": httpx.Client(
                base_url="http://reviews:9080",
                transport=pymesh.MeshTransport(self.mesh),
                timeout=20,
            ),
        }

    def close(self) -> None:
        self.mesh.close()
        if self.envoy is not None:
            self.envoy.stop()
        self.cp.stop()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def test_retry_attempts_per_request_match_envoy(pair: Pair) -> None:
    backend = EchoBackend("flaky").start()
    try:
        pair.serve(
            {
                "services": {
                    "reviews": {
                        "port": 9080,
                        "endpoints": [backend.address],
                        "routes": [
                            {
                                "retries": {
                                    "attempts": 3,
                                    "on": "5xx",
                                    "backoff": {"base": "1ms", "max": "2ms"},
                                }
                            }
                        ],
                    }
                }
            }
        )
        counts: dict[str, list[tuple[int, int]]] = {}
        for who, client in pair.clients().items():
            with client:
                rows = []
                for fails in (0, 1, 2, 3, 5):
                    backend.reset()
                    backend.fail_next(fails)
                    status = client.get("/r").status_code
                    rows.append((status, backend.request_count))
                counts[who] = rows
        # Attempts = 1 + min(failures, 3); the 4th failure is what the caller sees.
        assert counts["envoy"] == [(200, 1), (200, 2), (200, 3), (200, 4), (503, 4)]
        assert counts["pymesh"] == counts["envoy"]
    finally:
        backend.close()


def test_consecutive_5xx_ejection_count_matches_envoy(pair: Pair) -> None:
    good = [EchoBackend(f"good{i}").start() for i in range(2)]
    bad = EchoBackend("bad", fail_rate=1.0).start()
    try:
        pair.serve(
            {
                "services": {
                    "reviews": {
                        "port": 9080,
                        "endpoints": [b.address for b in [*good, bad]],
                        "traffic_policy": {
                            "outlier_detection": {
                                "consecutive_5xx": 5,
                                "interval": "30s",
                                "base_ejection_time": "60s",
                                "max_ejection_percent": 100,
                            }
                        },
                    }
                }
            }
        )
        seen = {}
        for who, client in pair.clients().items():
            with client:
                bad.reset()
                for _ in range(60):
                    client.get("/e")
                seen[who] = bad.request_count
        assert seen["envoy"] == 5
        assert seen["pymesh"] == seen["envoy"]
    finally:
        for b in [*good, bad]:
            b.close()
