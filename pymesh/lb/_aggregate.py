"""An aggregate cluster's leaves as ONE merged priority set, as Envoy's aggregate cluster.

Envoy's AggregateClusterLoadBalancer linearizes the priority levels of its clusters, in
the aggregate's order (cluster A's P0, P1, ..., then cluster B's P0, ...), computes the
priority loads over that merged set exactly as for one cluster (healthy and degraded
load, each level with its own assignment's overprovisioning factor, the aggregate's
panic threshold), chooses a level with a random draw, and lets the leaf cluster pick a
host within that level (with the leaf's own policy and panic state). gRPC (A37) flattens
the aggregate into a priority list too; pymesh uses the same merged set for both.

:class:`AggregatePicker` is immutable and built from the leaves' pickers; the request
path rebuilds it lazily when a leaf's picker is replaced (see :func:`aggregate_picker`).
"""

from __future__ import annotations

import random
from collections.abc import Container, Sequence

from pymesh.lb._picker import Picker
from pymesh.lb._priority import PriorityPlan, choose_priority, plan_priorities
from pymesh.xds.resources.endpoint import Endpoint


class LevelPicker:
    """One level of a leaf's picker, with the interface :func:`pymesh.call.admit` uses
    (``pick``, ``has_drops``, ``drop_category``): the leaf's drops still apply."""

    __slots__ = ("_degraded", "_picker", "_priority", "has_drops")
    #: No zero-argument chooser (see Picker.direct): a level picks through pick().
    direct = None

    def __init__(self, picker: Picker, priority: int, degraded: bool) -> None:
        self._picker = picker
        self._priority = priority
        self._degraded = degraded
        self.has_drops = picker.has_drops

    def pick(
        self,
        hash_key: int | None = None,
        exclude: Container[str] = frozenset(),
        *,
        host_selection_retry_max_attempts: int = 1,
    ) -> Endpoint | None:
        return self._picker.pick_at(
            self._priority,
            self._degraded,
            hash_key,
            exclude,
            host_selection_retry_max_attempts=host_selection_retry_max_attempts,
        )

    def drop_category(self, random_value: float) -> str | None:
        return self._picker.drop_category(random_value)

    def __repr__(self) -> str:
        tier = "degraded" if self._degraded else "healthy"
        return f"<LevelPicker {self._picker.cluster_name!r} P{self._priority} {tier}>"


class AggregatePicker:
    """The merged priority set of an aggregate cluster's leaves (see the module doc)."""

    __slots__ = ("_choices", "_cumulative", "_rng", "leaves", "plan")

    def __init__(
        self,
        leaves: Sequence[Picker | None],
        healthy_panic_threshold: float,
        rng: random.Random,
    ) -> None:
        #: The leaf pickers it was built from (None: a leaf with no picker, skipped as
        #: Envoy skips a cluster it does not have).
        self.leaves = tuple(leaves)
        counts = []
        factors = []
        owners: list[tuple[int, Picker, int]] = []
        for i, leaf in enumerate(leaves):
            if leaf is None:
                continue
            for priority, c in enumerate(leaf.level_counts):
                counts.append(c)
                factors.append(leaf.overprovisioning_factor)
                owners.append((i, leaf, priority))
        self._rng = rng
        if not owners:
            self.plan = PriorityPlan((100,), (False,), (0,))
            self._cumulative: tuple[int, ...] = ()
            self._choices: tuple[tuple[int, LevelPicker], ...] = ()
            return
        self.plan = plan_priorities(counts, 140, healthy_panic_threshold, factors=factors)
        self._cumulative = self.plan.cumulative()
        # Index n + i of the cumulative loads is level i's degraded tier.
        self._choices = tuple(
            (i, LevelPicker(leaf, priority, degraded))
            for degraded in (False, True)
            for i, leaf, priority in owners
        )

    def choose(self) -> tuple[int, LevelPicker] | None:
        """The leaf (its index) and the level to pick from, by a random draw on the
        merged loads (Envoy draws at random here, not from the request's hash)."""
        if not self._choices:
            return None
        return self._choices[choose_priority(self._cumulative, self._rng.getrandbits(64))]

    def __repr__(self) -> str:
        return (
            f"<AggregatePicker loads={list(self.plan.loads)} "
            f"degraded={list(self.plan.degraded_loads)} panic={list(self.plan.panic)}>"
        )
