"""Load-balancing tiers compared with the real Envoy under the same xDS config.

One control plane serves Envoy (a socket listener) and pymesh (the api_listener) the same
clusters and endpoints; each backend counts the requests it gets, first through Envoy,
then (counts reset) through pymesh, and both must show the same distribution: the same
hosts never used, the same hosts taking everything, and shares within binomial bounds
of Envoy's priority-load arithmetic where the split is random.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from _edit import edited_mesh, via_aggregate
from _peers import EnvoyPair, envoy_snapshot

from pymesh.server import Snapshot
from pymesh.testing import EchoBackend


class Pair(EnvoyPair):
    def __init__(self) -> None:
        super().__init__("pymesh-lb", seed=11)

    def serve(self, snap: Snapshot) -> None:
        self.serve_snapshot(snap)

    def counts(self, backends: dict[str, EchoBackend], n: int) -> dict[str, dict[str, int]]:
        """Requests each backend took out of ``n``, through Envoy and through pymesh."""
        out = {}
        for who, client in self.clients().items():
            for b in backends.values():
                b.reset()
            with client:
                for _ in range(n):
                    assert client.get("/lb").status_code == 200
            out[who] = {name: b.request_count for name, b in backends.items()}
        return out


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def _compile(config: dict[str, Any]) -> Snapshot:
    from pymesh.server import compile_mesh

    return compile_mesh(config)


def _service(endpoints: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"services": {"reviews": {"port": 9080, "endpoints": endpoints, **extra}}}


def _same_distribution(seen: dict[str, dict[str, int]], expected: dict[str, float], n: int) -> None:
    """Envoy and pymesh each match ``expected`` (share of ``n`` per backend: exact for
    0 and 1, else within 6 binomial standard deviations), and leave the same hosts
    unused."""
    for who, counts in seen.items():
        for name, share in expected.items():
            if share in (0.0, 1.0):
                assert counts[name] == share * n, (who, counts)
            else:
                sd = (n * share * (1 - share)) ** 0.5
                assert abs(counts[name] - share * n) < 6 * sd, (who, counts)
    unused = {who: {k for k, v in counts.items() if v == 0} for who, counts in seen.items()}
    assert unused["pymesh"] == unused["envoy"], seen


# name -> (priority, health)
Layout = dict[str, tuple[int, str]]

DEGRADED_CASES: dict[str, tuple[Layout, dict[str, float]]] = {
    # 3 of 4 healthy: health min(100, 140*3/4) = 100, the degraded host takes nothing.
    "healthy hosts suffice": (
        {"h1": (0, "HEALTHY"), "h2": (0, "HEALTHY"), "h3": (0, "HEALTHY"), "d": (0, "DEGRADED")},
        {"d": 0.0},
    ),
    # A healthy lower priority is preferred to a degraded higher one.
    "healthy P1 before degraded P0": (
        {"d1": (0, "DEGRADED"), "d2": (0, "DEGRADED"), "h": (1, "HEALTHY")},
        {"h": 1.0},
    ),
    # Nothing healthy: the degraded host takes all (no panic: 50 % usable); the
    # unhealthy one nothing. (Counting DEGRADED as unhealthy would panic onto both.)
    "degraded takes what healthy cannot": (
        {"d": (0, "DEGRADED"), "u": (0, "UNHEALTHY")},
        {"d": 1.0, "u": 0.0},
    ),
    # health 70 and degraded 70 of one priority: 70 % healthy, 30 % degraded.
    "split 70/30": ({"h": (0, "HEALTHY"), "d": (0, "DEGRADED")}, {"d": 0.3}),
}


@pytest.mark.parametrize("case", list(DEGRADED_CASES))
def test_degraded_tier_matches_envoy(pair: Pair, case: str) -> None:
    layout, expected = DEGRADED_CASES[case]
    backends = {name: EchoBackend(name).start() for name in layout}
    try:
        endpoints = [
            {"address": backends[name].address, "priority": priority, "health": health}
            for name, (priority, health) in layout.items()
        ]
        pair.serve(_compile(_service(endpoints)))
        _same_distribution(pair.counts(backends, 300), expected, 300)
    finally:
        for b in backends.values():
            b.close()


# ------------------------------------------------------------------ aggregate clusters


def _aggregate(leaves: dict[str, list[dict[str, Any]]]) -> Snapshot:
    """reviews:9080 routed to an aggregate cluster over one leaf per ``leaves`` entry
    (in order), each leaf a mesh-file version of the service."""
    snap = _compile(
        {
            "services": {
                "reviews": {
                    "port": 9080,
                    "versions": {name: {"endpoints": eps} for name, eps in leaves.items()},
                }
            }
        }
    )
    return via_aggregate(snap, [f"outbound|9080|{v}|reviews" for v in leaves], connect_timeout_s=5)


# leaf -> [(backend, health)]; expected shares as above.
AGGREGATE_CASES: dict[str, tuple[dict[str, list[tuple[str, str]]], dict[str, float]]] = {
    "first leaf healthy": (
        {"primary": [("p", "HEALTHY")], "fallback": [("f", "HEALTHY")]},
        {"p": 1.0, "f": 0.0},
    ),
    "first leaf unhealthy": (
        {"primary": [("p", "UNHEALTHY")], "fallback": [("f", "HEALTHY")]},
        {"p": 0.0, "f": 1.0},
    ),
    # The merged set: primary's P0 has health 70 (1 of 2), so 30 % spills to the next
    # leaf; "the first leaf with a healthy endpoint" would send it all to primary.
    "spill-over across leaves": (
        {"primary": [("p", "HEALTHY"), ("u", "UNHEALTHY")], "fallback": [("f", "HEALTHY")]},
        {"p": 0.7, "f": 0.3, "u": 0.0},
    ),
    # Healthy load first across the whole set: fallback's healthy 70 %, then primary's
    # degraded host the remaining 30 %.
    "degraded first leaf, half-healthy second": (
        {
            "primary": [("d", "DEGRADED"), ("u1", "UNHEALTHY")],
            "fallback": [("f", "HEALTHY"), ("u2", "UNHEALTHY")],
        },
        {"d": 0.3, "f": 0.7, "u1": 0.0, "u2": 0.0},
    ),
}


@pytest.mark.parametrize("case", list(AGGREGATE_CASES))
def test_aggregate_cluster_matches_envoy(pair: Pair, case: str) -> None:
    leaves, expected = AGGREGATE_CASES[case]
    names = [name for members in leaves.values() for name, _ in members]
    backends = {name: EchoBackend(name).start() for name in names}
    try:
        pair.serve(
            _aggregate(
                {
                    leaf: [{"address": backends[n].address, "health": h} for n, h in members]
                    for leaf, members in leaves.items()
                }
            )
        )
        _same_distribution(pair.counts(backends, 300), expected, 300)
    finally:
        for b in backends.values():
            b.close()


# ------------------------------------------------------------------ slow start


def _slow_start_shares(
    pair: Pair, window: int, aggression: float, gap: float, min_percent: float = 10.0
) -> dict[str, Any]:
    """Serve ``old`` alone, wait ``gap`` seconds (the semantics under test is a
    wall-clock window), add ``new``, then count 300 requests through each side."""
    from pymesh.server import ENDPOINT_TYPE
    from pymesh.testing import push_snapshot

    def slow(cluster: Any) -> None:
        ss = cluster.round_robin_lb_config.slow_start_config
        ss.slow_start_window.FromSeconds(window)
        ss.aggression.default_value = aggression
        ss.min_weight_percent.value = min_percent

    backends = {name: EchoBackend(name).start() for name in ("old", "new")}
    try:

        def serve(names: list[str]) -> None:
            snap = edited_mesh(_service([backends[n].address for n in names]), cluster=slow)
            envoy = envoy_snapshot(snap, {"reviews:9080": pair.envoy_port})
            pair.cp.set_snapshot(envoy, "envoy")
            pair.start_envoy()
            pair.cp.wait_for_ack(ENDPOINT_TYPE, snap.version, 30, "envoy")
            push_snapshot(pair.cp, pair.mesh, snap, timeout=30)

        serve(["old"])
        if gap:
            time.sleep(gap)
        serve(["old", "new"])
        return pair.counts(backends, 300)
    finally:
        for b in backends.values():
            b.close()


def test_slow_start_endpoints_that_joined_together_share_equally_as_envoy(pair: Pair) -> None:
    """A 120 s window: ``old`` (first assignment) and ``new`` (a second later) are both
    in slow start at min_weight_percent, so they share equally: Envoy too ramps the
    endpoints of the first assignment (observed with 1.40)."""
    seen = _slow_start_shares(pair, 120, 1.0, 0.0)
    for counts in seen.values():
        assert abs(counts["new"] - 150) <= 10, seen


def test_slow_start_of_an_endpoint_added_later_matches_envoy(pair: Pair) -> None:
    """A 10 s window, aggression 0.1 and min_weight_percent 20: the weight stays at 20 %
    for the first 8.5 s of a window (time_factor^10 < 0.2), so the counts do not depend
    on how fast the requests go. ``old``'s window is over when ``new`` joins; ``new``
    takes 0.2 / 1.2 = 1/6 of the requests (without slow start: 1/2)."""
    seen = _slow_start_shares(pair, 10, 0.1, 10.5, 20.0)
    n = 300
    share = 1 / 6
    sd = (n * share * (1 - share)) ** 0.5
    for counts in seen.values():
        assert abs(counts["new"] - share * n) < 6 * sd, seen
        assert counts["old"] + counts["new"] == n
