"""Slow start (Envoy's SlowStartConfig) for round robin and least request."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pymesh.lb import EndpointStates, build_picker
from pymesh.xds.resources.cluster import Cluster, LbPolicy, SlowStart
from tests.lb._helpers import cla, eps


@pytest.mark.parametrize(
    ("slow", "age", "expected"),
    [
        (SlowStart(10.0), 0.0, 0.1),  # min_weight_percent (10 %) floors 0.0001
        (SlowStart(10.0), 5.0, 0.5),
        (SlowStart(10.0, aggression=2.0), 5.0, 0.5**0.5),
        (SlowStart(10.0, aggression=0.5), 5.0, 0.25),
        (SlowStart(10.0, min_weight_percent=0.0), 0.0, 0.001 / 10),  # at least 1 ms
        (SlowStart(10.0, min_weight_percent=60.0), 5.0, 0.6),
        (SlowStart(10.0), 10.0, 1.0),  # the window is over
    ],
)
def test_envoy_formula(slow: SlowStart, age: float, expected: float) -> None:
    assert slow.factor(age) == pytest.approx(expected)


def _picker(policy: str, joined: dict[str, float], now: float, window: float = 10.0) -> object:
    return build_picker(
        Cluster("c", lb_policy=LbPolicy(name=policy, slow_start=SlowStart(window))),  # type: ignore[arg-type]
        cla((eps("10.0.0", 2), 0)),
        states=EndpointStates(),
        rng=random.Random(5),
        clock=lambda: now,
        joined=joined,
    )


@pytest.mark.parametrize("policy", ["round_robin", "least_request"])
def test_a_new_endpoint_takes_its_ramped_share(policy: str) -> None:
    # 10.0.0.2 joined 5 s into a 10 s window: weight 0.5 against 1.
    pk = _picker(policy, {"10.0.0.2:80": 100.0}, now=105.0)
    n = 3000
    counts = Counter(pk.pick().address for _ in range(n))  # type: ignore[attr-defined]
    assert abs(counts["10.0.0.2:80"] - n / 3) < 0.02 * n  # EDF: deterministic shares
    assert pk.refresh_at == pytest.approx(105.2)  # type: ignore[attr-defined]


def test_endpoints_out_of_their_window_or_never_new_are_not_scaled() -> None:
    pk = _picker("round_robin", {"10.0.0.2:80": 100.0}, now=111.0)
    counts = Counter(pk.pick().address for _ in range(1000))  # type: ignore[attr-defined]
    assert counts == {"10.0.0.1:80": 500, "10.0.0.2:80": 500}
    assert pk.refresh_at == 0.0  # type: ignore[attr-defined]
    assert _picker("round_robin", {}, now=1.0).refresh_at == 0.0  # type: ignore[attr-defined]


def test_refresh_stops_at_the_end_of_the_window() -> None:
    pk = _picker("round_robin", {"10.0.0.2:80": 100.0}, now=109.95)
    assert pk.refresh_at == pytest.approx(110.0)  # type: ignore[attr-defined]


def test_other_policies_ignore_slow_start() -> None:
    pk = _picker("random", {"10.0.0.2:80": 100.0}, now=100.5)
    assert pk.refresh_at == 0.0  # type: ignore[attr-defined]
