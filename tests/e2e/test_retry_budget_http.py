"""Retry budget (circuit_breakers.thresholds.retry_budget) holds when every endpoint fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from _edit import edited_mesh

import pymesh
from pymesh.server import ControlPlane
from pymesh.testing import EchoBackend, push_snapshot


def _budget(cluster: Any) -> None:
    threshold = cluster.circuit_breakers.thresholds.add()
    threshold.retry_budget.budget_percent.value = 20.0
    threshold.retry_budget.min_retry_concurrency.value = 3


async def test_all_endpoints_failing_attempts_stay_within_budget(
    mesh: pymesh.Mesh, control_plane: ControlPlane
) -> None:
    failing = [EchoBackend(f"f{i}", fail_rate=1.0, delay=0.2).start() for i in range(3)]
    try:
        config = {
            "services": {
                "reviews": {
                    "port": 9080,
                    "endpoints": [b.address for b in failing],
                    "routes": [{"retries": {"attempts": 1, "on": "5xx"}}],
                }
            }
        }
        push_snapshot(control_plane, mesh, edited_mesh(config, cluster=_budget))
        n = 50
        async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh), timeout=30) as c:
            resps = await asyncio.gather(*(c.get("http://reviews:9080/") for _ in range(n)))
        # Every request fails (all hosts answer 503), and the budget caps the retries:
        # at most 20 % of the active and pending upstream requests retry at once, never
        # below 3. As in Envoy those include retries' own requests and a failed one
        # until its answer is dropped: at most two per call, so at most 0.2 * 2n = 0.4n
        # retries. Without a budget, each of the 50 would retry (100 attempts).
        assert [r.status_code for r in resps] == [503] * n
        attempts = sum(b.request_count for b in failing)
        assert n < attempts <= 1.4 * n + 3, attempts
        overflow = mesh.clusters()["outbound|9080||reviews"].breaker
        assert overflow is not None and overflow.overflow.retries > 0
    finally:
        for b in failing:
            b.close()


def test_sequential_requests_retry_fully_under_min_concurrency(
    mesh: pymesh.Mesh, control_plane: ControlPlane, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    """One request at a time: min_retry_concurrency (3) lets each use its 2 retries."""
    failing = EchoBackend("f", fail_rate=1.0).start()
    try:
        config = {
            "services": {
                "reviews": {
                    "port": 9080,
                    "endpoints": [failing.address],
                    "routes": [{"retries": {"attempts": 2, "on": "5xx"}}],
                }
            }
        }
        push_snapshot(control_plane, mesh, edited_mesh(config, cluster=_budget))
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            statuses = [client.get("http://reviews:9080/").status_code for _ in range(10)]
        assert statuses == [503] * 10
        assert failing.request_count == 30
    finally:
        failing.close()
