from __future__ import annotations

from collections import Counter

import pytest

from pymesh.lb._priority import LevelCounts, choose_priority, plan_priorities
from tests.lb._helpers import cla, eps, picker


def test_all_healthy_p0_takes_everything() -> None:
    plan = plan_priorities([LevelCounts(4, 4), LevelCounts(4, 4)], 140, 50)
    assert plan.loads == (100, 0)
    assert plan.panic == (False, False)


def test_half_healthy_p0_keeps_70_percent_with_factor_140() -> None:
    plan = plan_priorities([LevelCounts(10, 5), LevelCounts(10, 10)], 140, 50)
    assert plan.loads == (70, 30)
    assert plan.panic == (False, False)


def test_factor_100_spills_proportionally() -> None:
    plan = plan_priorities([LevelCounts(10, 8), LevelCounts(10, 10)], 100, 50)
    assert plan.loads == (80, 20)


def test_insufficient_total_scales_and_panics_only_low_levels() -> None:
    # health: P0 = 140*6//10 = 84, P1 = 140*1//10 = 14 → normalized total 98 < 100.
    plan = plan_priorities([LevelCounts(10, 6), LevelCounts(10, 1)], 140, 50)
    assert plan.loads == (86, 14)  # 84*100//98 = 85 (+1 rounding to first), 14*100//98 = 14
    assert plan.panic == (False, True)  # P1 has 10 % healthy < 50 %


def test_every_level_in_panic_is_total_panic() -> None:
    plan = plan_priorities([LevelCounts(10, 2), LevelCounts(10, 1)], 140, 50)
    assert plan.panic == (True, True)
    assert plan.loads == (50, 50)  # by host counts, not health


def test_total_panic_splits_by_host_count() -> None:
    plan = plan_priorities([LevelCounts(3, 0), LevelCounts(1, 0)], 140, 50)
    assert plan.panic == (True, True)
    assert plan.loads == (75, 25)


def test_no_panic_when_total_availability_is_full() -> None:
    # P0 only 10 % healthy (health 14) but P1 fully healthy: total 100 → nobody panics.
    plan = plan_priorities([LevelCounts(10, 1), LevelCounts(10, 10)], 140, 50)
    assert plan.panic == (False, False)
    assert plan.loads == (14, 86)


def test_panic_disabled_and_nothing_healthy() -> None:
    plan = plan_priorities([LevelCounts(3, 0), LevelCounts(3, 0)], 140, 0)
    assert plan.loads == (100, 0)
    assert plan.panic == (False, False)


def test_weighted_priority_health_uses_weights() -> None:
    levels = [LevelCounts(2, 1, weight=4, healthy_weight=1), LevelCounts(2, 2, 2, 2)]
    assert plan_priorities(levels, 100, 50).loads == (50, 50)
    assert plan_priorities(levels, 100, 50, weighted_priority_health=True).loads == (25, 75)


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (69, 0), (70, 1), (99, 1), (170, 1)])
def test_choose_priority_uses_hash_mod_100(value: int, expected: int) -> None:
    assert choose_priority((70, 100), value) == expected


def test_failover_traffic_split_matches_plan() -> None:
    p0 = eps("10.0.0", 5, health="HEALTHY") + eps("10.0.1", 5, health="UNHEALTHY")
    p1 = eps("10.1.0", 4)
    pk = picker(cla((p0, 0), (p1, 1)), seed=7)
    assert pk.priority_loads == (70, 30)
    n = 20000
    counts = Counter(pk.pick().host.startswith("10.1.") for _ in range(n))  # type: ignore[union-attr]
    # binomial(n, 0.3): sd ~ 65; allow 6 sd.
    assert abs(counts[True] - 0.3 * n) < 6 * (n * 0.3 * 0.7) ** 0.5
    # Unhealthy P0 hosts never picked outside panic.
    hosts = {pk.pick().host for _ in range(2000)}  # type: ignore[union-attr]
    assert not any(h.startswith("10.0.1.") for h in hosts)


def test_ejected_hosts_count_as_unhealthy() -> None:
    p0 = eps("10.0.0", 2)
    p1 = eps("10.1.0", 2)
    pk = picker(cla((p0, 0), (p1, 1)), ejected=frozenset({"10.0.0.1:80"}))
    assert pk.priority_loads == (70, 30)
    assert {pk.pick().address for _ in range(500)} >= {"10.0.0.2:80", "10.1.0.1:80"}  # type: ignore[union-attr]
    assert "10.0.0.1:80" not in {pk.pick().address for _ in range(500)}  # type: ignore[union-attr]


# ------------------------------------------------------------------ the degraded tier


def test_envoy_comment_example_healthy_and_degraded_loads() -> None:
    # Envoy's recalculatePerPriorityState comment: health 10/20/10 and degraded 20/10/0
    # give healthy loads 16/28/14 and degraded loads 28/14/0 (factor 100 here).
    levels = [LevelCounts(10, 1, degraded=2), LevelCounts(10, 2, degraded=1), LevelCounts(10, 1)]
    plan = plan_priorities(levels, 100, 0)
    assert plan.loads == (16, 28, 14)
    assert plan.degraded_loads == (28, 14, 0)


def test_degraded_hosts_take_nothing_while_healthy_ones_suffice() -> None:
    plan = plan_priorities([LevelCounts(4, 3, degraded=1)], 140, 50)
    assert (plan.loads, plan.degraded_loads) == ((100,), (0,))


def test_degraded_takes_what_healthy_cannot() -> None:
    # 2 healthy, 8 degraded: health 28, degraded min(100, 112); total capped at 100.
    plan = plan_priorities([LevelCounts(10, 2, degraded=8)], 140, 50)
    assert (plan.loads, plan.degraded_loads, plan.panic) == ((28,), (72,), (False,))


def test_healthy_lower_priority_before_degraded_higher_one() -> None:
    plan = plan_priorities([LevelCounts(2, 0, degraded=2), LevelCounts(1, 1)], 140, 50)
    assert (plan.loads, plan.degraded_loads) == ((0, 100), (0, 0))


def test_panic_counts_healthy_plus_degraded() -> None:
    # 1 degraded of 4 (25 % usable) panics; 2 of 4 (50 %) does not.
    assert plan_priorities([LevelCounts(4, 0, degraded=1)], 140, 50).panic == (True,)
    plan = plan_priorities([LevelCounts(4, 0, degraded=2)], 140, 50)
    assert (plan.panic, plan.loads, plan.degraded_loads) == ((False,), (0,), (100,))


def test_rounding_goes_to_first_degraded_level_without_healthy_ones() -> None:
    # degraded availability 33 and 33 (factor 100, 1 of 3): 50 + 50 after normalizing 66.
    plan = plan_priorities([LevelCounts(3, 0, degraded=1), LevelCounts(3, 0, degraded=1)], 100, 0)
    assert sum(plan.loads) + sum(plan.degraded_loads) == 100
    assert plan.degraded_loads[0] >= plan.degraded_loads[1]


def test_picker_sends_degraded_share_to_degraded_hosts() -> None:
    p0 = eps("10.0.0", 1, health="HEALTHY") + eps("10.0.1", 1, health="DEGRADED")
    pk = picker(cla((p0, 0)), seed=3)
    assert pk.priority_loads == (70,)
    n = 20000
    degraded = sum(pk.pick().host == "10.0.1.1" for _ in range(n))  # type: ignore[union-attr]
    assert abs(degraded - 0.3 * n) < 6 * (n * 0.3 * 0.7) ** 0.5


def test_degraded_tier_off_counts_degraded_as_unhealthy() -> None:
    import random

    from pymesh.lb import EndpointStates, build_picker
    from pymesh.xds.resources.cluster import Cluster

    p0 = eps("10.0.0", 1, health="HEALTHY") + eps("10.0.1", 1, health="DEGRADED")
    pk = build_picker(
        Cluster("c"),
        cla((p0, 0)),
        states=EndpointStates(),
        rng=random.Random(1),
        degraded_tier=False,
    )
    assert {pk.pick().host for _ in range(2000)} == {"10.0.0.1"}  # type: ignore[union-attr]


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_hash_policies_choose_degraded_priority_but_hash_healthy_hosts(policy: str) -> None:
    # As Envoy: the degraded load selects the level; its table holds its healthy hosts.
    p0 = eps("10.0.0", 1, health="HEALTHY") + eps("10.0.1", 1, health="DEGRADED")
    pk = picker(cla((p0, 0)), policy)
    assert {pk.pick(h).host for h in range(0, 2**64, 2**58)} == {"10.0.0.1"}  # type: ignore[union-attr]
