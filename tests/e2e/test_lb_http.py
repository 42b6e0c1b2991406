"""Load balancing through MeshTransport on real backends (Envoy's semantics)."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from _edit import via_aggregate

import pymesh
from pymesh.testing import EchoBackend

Push = Callable[..., Any]


def _svc(endpoints: list[Any], lb: str = "ROUND_ROBIN") -> dict[str, Any]:
    return {
        "services": {
            "reviews": {"port": 9080, "endpoints": endpoints, "traffic_policy": {"lb": lb}}
        }
    }


def _hits(backends: list[EchoBackend]) -> dict[str, int]:
    return {b.name: b.request_count for b in backends}


def test_weighted_round_robin_is_exact_over_full_cycles(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    backends = echo_backends(3, "w")
    push_mesh(
        _svc(
            [{"address": b.address, "weight": w} for b, w in zip(backends, (1, 2, 3), strict=True)]
        )
    )
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        for _ in range(600):  # 100 cycles of total weight 6
            client.get("http://reviews:9080/")
    assert _hits(backends) == {"w-0": 100, "w-1": 200, "w-2": 300}


async def test_least_request_prefers_the_less_loaded(mesh: pymesh.Mesh, push_mesh: Push) -> None:
    fast = EchoBackend("fast").start()
    slow = EchoBackend("slow", delay=0.3).start()
    try:
        push_mesh(_svc([fast.address, slow.address], lb="LEAST_REQUEST"))
        async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh), timeout=30) as c:
            left = 200

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    assert (await c.get("http://reviews:9080/")).status_code == 200

            await asyncio.gather(*(worker() for _ in range(16)))
        # Round robin would give each 100; P2C sees the slow host's queue and avoids it.
        assert fast.request_count + slow.request_count == 200
        assert slow.request_count < 50, _hits([fast, slow])
    finally:
        fast.close()
        slow.close()


def test_priority_spills_over_by_overprovisioning(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    """P0 half healthy, factor 140: P0 gets 70 %, P1 the remaining 30 % (Envoy's formula)."""
    p0_ok, p0_bad, p1 = echo_backends(3, "p")
    push_mesh(
        _svc(
            [
                {"address": p0_ok.address, "priority": 0},
                {"address": p0_bad.address, "priority": 0, "health": "UNHEALTHY"},
                {"address": p1.address, "priority": 1},
            ]
        )
    )
    n = 1000
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        for _ in range(n):
            client.get("http://reviews:9080/")
    assert p0_bad.request_count == 0
    sigma = math.sqrt(n * 0.7 * 0.3)
    assert abs(p0_ok.request_count - 0.7 * n) <= 4.5 * sigma, _hits([p0_ok, p1])
    assert p0_ok.request_count + p1.request_count == n


def test_failover_when_a_priority_turns_unhealthy(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    a, b = echo_backends(2, "f")
    push_mesh(_svc([{"address": a.address, "priority": 0}, {"address": b.address, "priority": 1}]))
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        first = Counter(client.get("http://reviews:9080/").headers["x-backend"] for _ in range(50))
        push_mesh(
            _svc(
                [
                    {"address": a.address, "priority": 0, "health": "UNHEALTHY"},
                    {"address": b.address, "priority": 1},
                ]
            )
        )
        after = Counter(client.get("http://reviews:9080/").headers["x-backend"] for _ in range(50))
    assert first == {"f-0": 50}
    assert after == {"f-1": 50}


def test_panic_mode_uses_every_host(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    """1 of 3 healthy (33 % < the 50 % panic threshold): Envoy balances over all hosts."""
    backends = echo_backends(3, "x")
    push_mesh(
        _svc(
            [
                {"address": backends[0].address},
                {"address": backends[1].address, "health": "UNHEALTHY"},
                {"address": backends[2].address, "health": "UNHEALTHY"},
            ]
        )
    )
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        for _ in range(90):
            client.get("http://reviews:9080/")
    assert all(n > 0 for n in _hits(backends).values()), _hits(backends)


def _aggregate_snapshot(primary: list[dict[str, Any]], fallback: list[dict[str, Any]]) -> Any:
    """reviews:9080 routed to an aggregate cluster [primary, fallback] (not in the mesh
    file: built from its compiled clusters)."""
    from pymesh.server import compile_mesh

    snap = compile_mesh(
        {
            "services": {
                "reviews": {
                    "port": 9080,
                    "versions": {
                        "primary": {"endpoints": primary},
                        "fallback": {"endpoints": fallback},
                    },
                }
            }
        }
    )
    return via_aggregate(snap, ["outbound|9080|primary|reviews", "outbound|9080|fallback|reviews"])


def test_aggregate_cluster_fails_over_to_the_next_leaf(
    mesh: pymesh.Mesh, control_plane: Any, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    """Envoy's aggregate cluster: the first leaf while it has healthy endpoints, the next
    one when it has none (not the first leaf in panic mode)."""
    from pymesh.testing import push_snapshot

    p, f = echo_backends(2, "agg")
    push_snapshot(control_plane, mesh, _aggregate_snapshot([p.address], [f.address]))
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        first = Counter(client.get("http://reviews:9080/").headers["x-backend"] for _ in range(20))
        unhealthy = [{"address": p.address, "health": "UNHEALTHY"}]
        push_snapshot(control_plane, mesh, _aggregate_snapshot(unhealthy, [f.address]))
        after = Counter(client.get("http://reviews:9080/").headers["x-backend"] for _ in range(20))
    assert first == {"agg-0": 20}
    assert after == {"agg-1": 20}
