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
threshold of 0 and nothing healthy, P0 gets 100 % and picks find no host.

Degraded tier (EDS ``DEGRADED``): each level also has a degraded availability,
``min(100, factor * degraded / total)``; the normalized total is ``min(100, sum of health
+ sum of degraded)``. Healthy loads are distributed first, and only the load they leave
goes to degraded hosts, level by level, by the same rule; rounding goes to the first
level with healthy hosts, else the first with degraded ones. A level panics when its
healthy plus degraded percentage is below the threshold; total panic gives degraded
hosts no separate load. Example: P0 with 2 healthy and 8 degraded of 10 hosts has
health 28 and degraded availability 100, so 28 % goes to its healthy hosts and 72 % to
its degraded ones.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LevelCounts:
    """One priority level: all hosts, the healthy and the degraded ones (count and weight)."""

    hosts: int
    healthy: int
    weight: int = 0
    healthy_weight: int = 0
    degraded: int = 0
    degraded_weight: int = 0


@dataclass(frozen=True, slots=True)
class PriorityPlan:
    loads: tuple[int, ...]  # percent per priority to its healthy hosts
    panic: tuple[bool, ...]
    #: Percent per priority to its degraded hosts; with ``loads`` it sums to 100.
    degraded_loads: tuple[int, ...] = ()

    def cumulative(self) -> tuple[int, ...]:
        """Running totals of the healthy loads then the degraded loads, the order in
        which Envoy's choosePriority walks them (index ``n + i``: priority i, degraded)."""
        return tuple(itertools.accumulate(self.loads + self.degraded_loads))


def panic_threshold_percent(value: float) -> int:
    """Envoy rounds the Percent to an integer (half away from zero), capped at 100."""
    return min(100, max(0, math.floor(value + 0.5)))


def _distribute(
    availability: Sequence[int], total: int, normalized: int
) -> tuple[list[int], int, int]:
    """Envoy's distributeLoad: each level, highest first, takes ``min(left, availability *
    100 / normalized)``; returns the loads, the first level with any availability (-1 if
    none) and the load left over."""
    loads = []
    first = -1
    for i, a in enumerate(availability):
        if first < 0 and a > 0:
            first = i
        share = min(total, a * 100 // normalized)
        loads.append(share)
        total -= share
    return loads, first, total


def plan_priorities(
    levels: Sequence[LevelCounts],
    overprovisioning_factor: int,
    healthy_panic_threshold: float,
    *,
    weighted_priority_health: bool = False,
    factors: Sequence[int] | None = None,
) -> PriorityPlan:
    """Envoy's recalculatePerPriorityState + recalculatePerPriorityPanic for ``levels``.

    ``factors``: a factor per level instead of ``overprovisioning_factor`` (an aggregate
    cluster's merged levels keep the factor of the assignment each comes from)."""
    n = len(levels)
    if n == 0:
        return PriorityPlan((100,), (False,), (0,))
    health = []
    degraded = []
    for i, lv in enumerate(levels):
        factor = overprovisioning_factor if factors is None else factors[i]
        if weighted_priority_health:
            healthy, deg, total = lv.healthy_weight, lv.degraded_weight, lv.weight
        else:
            healthy, deg, total = lv.healthy, lv.degraded, lv.hosts
        if lv.hosts == 0 or total == 0:
            health.append(0)
            degraded.append(0)
            continue
        health.append(min(100, factor * healthy // total))
        degraded.append(min(100, factor * deg // total))
    normalized_total = min(100, sum(health) + sum(degraded))
    loads = [0] * n
    degraded_loads = [0] * n
    if normalized_total > 0:
        # Healthy hosts first; degraded hosts take only what healthy ones cannot.
        loads, first_healthy, left = _distribute(health, 100, normalized_total)
        degraded_loads, first_degraded, left = _distribute(degraded, left, normalized_total)
        if left:  # rounding: to the first healthy level, else the first degraded one
            if first_healthy >= 0:
                loads[first_healthy] += left
            else:
                degraded_loads[first_degraded] += left

    zeros = (0,) * n
    threshold = panic_threshold_percent(healthy_panic_threshold)
    if threshold == 0 and normalized_total == 0:
        loads = [0] * n
        loads[0] = 100
        return PriorityPlan(tuple(loads), (False,) * n, zeros)

    panic = []
    for lv in levels:
        if normalized_total == 100:
            panic.append(False)
            continue
        usable_percent = 100.0 * (lv.healthy + lv.degraded) / lv.hosts if lv.hosts else 0.0
        panic.append(usable_percent < threshold)
    if all(panic):
        # Total panic: load by host counts, nothing reserved for degraded hosts.
        total_hosts = sum(lv.hosts for lv in levels)
        loads = [0] * n
        degraded_loads = [0] * n
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
    if sum(loads) + sum(degraded_loads) != 100:  # unreachable; keep picks well-defined
        loads = [0] * n
        loads[0] = 100
        degraded_loads = [0] * n
    return PriorityPlan(tuple(loads), tuple(panic), tuple(degraded_loads))


def choose_priority(cumulative: Sequence[int], value: int) -> int:
    """Envoy's choosePriority: ``value % 100 + 1`` against the cumulative loads."""
    x = value % 100 + 1
    for i, c in enumerate(cumulative):
        if x <= c:
            return i
    return 0
