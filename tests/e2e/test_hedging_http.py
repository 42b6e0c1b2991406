"""Hedging (Envoy's hedge_policy.hedge_on_per_try_timeout) through the httpx transports,
against real backends: a per-try timeout starts another attempt without cancelling the
first, the first good answer wins, and retriable answers are dropped while others run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _edit import edited_mesh

import pymesh
from pymesh.testing import EchoBackend, push_snapshot

Push = Callable[..., Any]


def _hedged(
    control_plane: Any,
    mesh: pymesh.Mesh,
    backends: list[EchoBackend],
    *,
    hedge: bool = True,
    on: str = "5xx",
    attempts: int = 1,
) -> None:
    config = {
        "services": {
            "reviews": {
                "port": 9080,
                "endpoints": [b.address for b in backends],
                "routes": [
                    {
                        "timeout": "10s",
                        "retries": {"attempts": attempts, "on": on, "per_try_timeout": "200ms"},
                    }
                ],
            }
        }
    }

    def with_hedging(rc: Any) -> None:
        for route in rc.virtual_hosts[0].routes:
            route.route.hedge_policy.hedge_on_per_try_timeout = hedge

    push_snapshot(control_plane, mesh, edited_mesh(config, route=with_hedging))


def _breakers_idle(mesh: pymesh.Mesh) -> bool:
    (rt,) = mesh.clusters().values()
    breaker = rt.breaker
    assert breaker is not None
    return (breaker.active_requests, breaker.active_retries) == (0, 0)


@pytest.fixture
def slowish() -> Any:
    with EchoBackend("slowish", delay=0.6) as a, EchoBackend("slower", delay=2.5) as b:
        yield a, b


def test_the_first_attempt_keeps_going_and_wins(
    mesh: pymesh.Mesh, control_plane: Any, slowish: tuple[EchoBackend, EchoBackend]
) -> None:
    a, b = slowish
    _hedged(control_plane, mesh, [a, b])
    with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=30) as client:
        responses = [client.get("http://reviews:9080/") for _ in range(2)]
    # Whichever host round robin tried first, its per-try timeout (200 ms) hedged to the
    # other one and "slowish" (600 ms) answered before "slower" (2.5 s). Without hedging
    # the first try would be cancelled at 200 ms and the retry time out too: 504.
    assert [(r.status_code, r.headers["x-backend"]) for r in responses] == [(200, "slowish")] * 2
    assert len(b.wait_for_requests(2, timeout=20)) == 2  # the hedges did reach "slower"
    assert _breakers_idle(mesh)


def test_without_hedging_the_per_try_timeout_cancels(
    mesh: pymesh.Mesh, control_plane: Any, slowish: tuple[EchoBackend, EchoBackend]
) -> None:
    a, b = slowish
    _hedged(control_plane, mesh, [a, b], hedge=False)
    with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=30) as client:
        statuses = [client.get("http://reviews:9080/").status_code for _ in range(2)]
    assert statuses == [504, 504]  # the contrast that shows the hedged test means something


async def test_async_first_good_answer_wins_and_losers_are_cancelled(
    mesh: pymesh.Mesh, control_plane: Any, slowish: tuple[EchoBackend, EchoBackend]
) -> None:
    a, b = slowish
    _hedged(control_plane, mesh, [a, b])
    async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh), timeout=30) as client:
        t0 = time.monotonic()
        responses = [await client.get("http://reviews:9080/") for _ in range(2)]
        took = time.monotonic() - t0
    assert [(r.status_code, r.headers["x-backend"]) for r in responses] == [(200, "slowish")] * 2
    # Each answer came from "slowish" well before "slower" (2.5 s) could have answered.
    assert took < 2 * 2.5
    assert _breakers_idle(mesh)


@pytest.mark.parametrize("transport", ["sync", "async"])
async def test_a_retriable_answer_is_dropped_while_another_attempt_runs(
    mesh: pymesh.Mesh, control_plane: Any, transport: str
) -> None:
    with EchoBackend("failing", fail_rate=1.0) as bad, EchoBackend("good", delay=0.6) as good:
        _hedged(control_plane, mesh, [bad, good])
        # Either order: good first -> hedged at 200 ms to "failing", whose 503 has no
        # retry left and is dropped while "good" runs; failing first -> its 503 is
        # retried on "good". Both ways the caller gets good's 200, never the 503.
        if transport == "sync":
            with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=30) as client:
                responses = [client.get("http://reviews:9080/") for _ in range(4)]
        else:
            async with httpx.AsyncClient(
                transport=pymesh.AsyncMeshTransport(mesh), timeout=30
            ) as client:
                responses = [await client.get("http://reviews:9080/") for _ in range(4)]
        assert [(r.status_code, r.headers["x-backend"]) for r in responses] == [(200, "good")] * 4
        assert bad.request_count == 4
        assert _breakers_idle(mesh)
