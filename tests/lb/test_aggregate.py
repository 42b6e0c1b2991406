"""An aggregate cluster's merged priority set (pymesh.lb._aggregate), as Envoy's."""

from __future__ import annotations

import random
from collections import Counter

from pymesh.lb._aggregate import AggregatePicker
from tests.lb._helpers import cla, eps, picker


def _shares(agg: AggregatePicker, n: int) -> Counter[str]:
    out: Counter[str] = Counter()
    for _ in range(n):
        choice = agg.choose()
        assert choice is not None
        _, level = choice
        host = level.pick()
        out[host.host if host is not None else "-"] += 1
    return out


def test_levels_are_merged_in_leaf_order() -> None:
    a = picker(cla((eps("10.0.0", 1, health="HEALTHY") + eps("10.0.1", 1, health="UNHEALTHY"), 0)))
    b = picker(cla((eps("10.1.0", 2), 0), (eps("10.1.1", 2), 1)))
    agg = AggregatePicker([a, b], 50.0, random.Random(1))
    # a's P0 health 70, b's P0 100 (capped by what is left), b's P1 nothing.
    assert agg.plan.loads == (70, 30, 0)
    assert agg.plan.degraded_loads == (0, 0, 0)
    n = 20000
    shares = _shares(agg, n)
    assert shares["10.0.1.1"] == 0  # unhealthy, no panic
    b_share = shares["10.1.0.1"] + shares["10.1.0.2"]
    assert abs(b_share - 0.3 * n) < 6 * (n * 0.21) ** 0.5
    assert not any(h.startswith("10.1.1.") for h in shares)


def test_each_level_keeps_its_own_overprovisioning_factor() -> None:
    half = eps("10.0.0", 1, health="HEALTHY") + eps("10.0.1", 1, health="UNHEALTHY")
    a = picker(cla((half, 0), factor=100))
    b = picker(cla((eps("10.1.0", 1), 0)))
    assert AggregatePicker([a, b], 50.0, random.Random(1)).plan.loads == (50, 50)


def test_degraded_hosts_of_the_first_leaf_wait_for_the_second_leafs_healthy_ones() -> None:
    a = picker(cla((eps("10.0.0", 1, health="DEGRADED") + eps("10.0.1", 1, health="UNHEALTHY"), 0)))
    b = picker(cla((eps("10.1.0", 1, health="HEALTHY") + eps("10.1.1", 1, health="UNHEALTHY"), 0)))
    agg = AggregatePicker([a, b], 50.0, random.Random(1))
    assert (agg.plan.loads, agg.plan.degraded_loads) == ((0, 70), (30, 0))
    shares = _shares(agg, 4000)
    assert set(shares) == {"10.0.0.1", "10.1.0.1"}


def test_missing_leaves_are_skipped_and_no_leaf_means_no_choice() -> None:
    b = picker(cla((eps("10.1.0", 1), 0)))
    agg = AggregatePicker([None, b], 50.0, random.Random(1))
    assert agg.plan.loads == (100,)
    choice = agg.choose()
    assert choice is not None and choice[0] == 1
    assert AggregatePicker([None, None], 50.0, random.Random(1)).choose() is None


def test_total_panic_over_the_merged_set_uses_each_leafs_own_panic() -> None:
    a = picker(cla((eps("10.0.0", 2, health="UNHEALTHY"), 0)))
    b = picker(cla((eps("10.1.0", 2, health="UNHEALTHY"), 0)))
    agg = AggregatePicker([a, b], 50.0, random.Random(1))
    assert agg.plan.panic == (True, True)
    assert agg.plan.loads == (50, 50)
    assert len(_shares(agg, 2000)) == 4  # every host of both leaves, as Envoy in panic


def test_exclusion_re_picks_within_the_chosen_level() -> None:
    a = picker(cla((eps("10.0.0", 2), 0)))
    agg = AggregatePicker([a], 50.0, random.Random(1))
    choice = agg.choose()
    assert choice is not None
    _, level = choice
    for _ in range(50):
        host = level.pick(None, {"10.0.0.1:80"}, host_selection_retry_max_attempts=5)
        assert host is not None and host.address == "10.0.0.2:80"
