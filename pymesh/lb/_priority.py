"""Priority load and panic, exactly as Envoy's LoadBalancerBase computes them.

Per priority level: ``health = min(100, overprovisioning_factor * healthy / total)``
(integer arithmetic; host counts, or weights with ``weighted_priority_health``). The
normalized total availability is ``min(100, sum of health)``; each level, highest first, gets
``min(remaining, health * 100 / normalized_total)`` percent of the load, and rounding
leftovers go to the first level with any health. Example: P0 with half its hosts healthy
and factor 140 has health 70, so it keeps 70 % and P1 (healthy) takes 30 %.

Panic: only when the normalized total availability is below 100, a level whose healthy
percentage (by host count) is below the panic threshold balances over *all* its hosts.
If every level is in panic ("total panic"), load is split by host counts instead. With a
threshold of 0 and nothing healthy, P0 gets 100 % and picks find no host. DEGRADED hosts
are not modelled as Envoy's separate degraded tier: they count as unhealthy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LevelCounts:
    """One priority level: all hosts and the usable ones (count and weight)."""

    hosts: int
    healthy: int
    weight: int = 0
    healthy_weight: int = 0


@dataclass(frozen=True, slots=True)
class PriorityPlan:
    loads: tuple[int, ...]  # percent per priority, sums to 100
    panic: tuple[bool, ...]


def panic_threshold_percent(value: float) -> int:
    """Envoy rounds the Percent to an integer (half away from zero), capped at 100."""
    return min(100, max(0, math.floor(value + 0.5)))


def plan_priorities(
    levels: Sequence[LevelCounts],
    overprovisioning_factor: int,
    healthy_panic_threshold: float,
    *,
    weighted_priority_health: bool = False,
) -> PriorityPlan:
    n = len(levels)
    if n == 0:
        return PriorityPlan((100,), (False,))
    health = []
    for lv in levels:
        if lv.hosts == 0:
            health.append(0)
            continue
        if weighted_priority_health:
            healthy, total = lv.healthy_weight, lv.weight
        else:
            healthy, total = lv.healthy, lv.hosts
        health.append(min(100, overprovisioning_factor * healthy // total) if total else 0)
    normalized_total = min(100, sum(health))
    loads = [0] * n
    if normalized_total > 0:
        remaining = 100
        first = -1
        for i, h in enumerate(health):
            if first < 0 and h > 0:
                first = i
            loads[i] = min(remaining, h * 100 // normalized_total)
            remaining -= loads[i]
        if remaining:
            loads[first] += remaining

    threshold = panic_threshold_percent(healthy_panic_threshold)
    if threshold == 0 and normalized_total == 0:
        loads = [0] * n
        loads[0] = 100
        return PriorityPlan(tuple(loads), (False,) * n)

    panic = []
    for lv in levels:
        if normalized_total == 100:
            panic.append(False)
            continue
        healthy_percent = 100.0 * lv.healthy / lv.hosts if lv.hosts else 0.0
        panic.append(healthy_percent < threshold)
    if all(panic):
        total_hosts = sum(lv.hosts for lv in levels)
        loads = [0] * n
        if total_hosts == 0:
            loads[0] = 100
        else:
            remaining = 100
            first = -1
            for i, lv in enumerate(levels):
                if first < 0 and lv.hosts:
                    first = i
                loads[i] = 100 * lv.hosts // total_hosts
                remaining -= loads[i]
            loads[first] += remaining
    if sum(loads) != 100:  # unreachable by the arithmetic above; keep picks well-defined
        loads = [0] * n
        loads[0] = 100
    return PriorityPlan(tuple(loads), tuple(panic))


def choose_priority(cumulative: Sequence[int], value: int) -> int:
    """Envoy's choosePriority: ``value % 100 + 1`` against the cumulative loads."""
    x = value % 100 + 1
    for i, c in enumerate(cumulative):
        if x <= c:
            return i
    return 0
