"""build_picker: a cluster's endpoints → one immutable per-request Picker.

Order of decisions for a pick, following Envoy's LoadBalancerBase / ZoneAwareLoadBalancerBase:

1. Priority: ``choosePriority(random or hash)`` over the per-priority loads from
   :mod:`pymesh.lb._priority` (overprovisioning spill-over, panic, total panic).
2. Host list inside the priority: in panic, all its hosts; else, with
   ``locality_weighted``, a locality picked by EDF on ``locality_weight * min(1,
   overprovisioning_factor/100 * healthy/total)`` and its healthy hosts; else all the
   priority's healthy hosts, localities flattened (EDS order).
3. The policy picks within that list (:mod:`pymesh.lb._policies`); ring hash and maglev
   instead build one table per priority from normalized weights (:mod:`pymesh.lb._hashing`).

"Healthy" means EDS health HEALTHY or UNKNOWN and not outlier-ejected; "degraded" means
EDS health DEGRADED and not ejected. Envoy's degraded tier (HTTP): a priority's degraded
hosts take the share of its load that healthy hosts cannot (see
:mod:`pymesh.lb._priority`); the host list is then the level's degraded hosts (by
locality with ``locality_weighted``). Ring hash and maglev, as Envoy, build their tables
over healthy hosts only. ``degraded_tier=False`` (gRPC, A27: only HEALTHY and UNKNOWN
endpoints are used) counts DEGRADED hosts as unhealthy.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from operator import attrgetter

from pymesh.lb._edf import Edf
from pymesh.lb._hashing import (
    MaglevTable,
    Ring,
    build_maglev,
    build_ring,
    host_hash_key,
    normalized_weights,
)
from pymesh.lb._policies import EMPTY, HostChooser, make_chooser
from pymesh.lb._priority import (
    LevelCounts,
    PriorityPlan,
    choose_priority,
    panic_threshold_percent,
    plan_priorities,
)
from pymesh.lb._state import EndpointStates
from pymesh.xds.resources.cluster import Cluster, LbPolicy
from pymesh.xds.resources.endpoint import (
    USABLE_HEALTH,
    ClusterLoadAssignment,
    Endpoint,
    Locality,
)

_U64 = (1 << 64) - 1
_weight = attrgetter("weight")  # sum(map(_weight, hosts)): no Python frame per host


@dataclass(frozen=True, slots=True)
class _LocalityHosts:
    locality: Locality
    weight: int  # 0 when unset (no traffic under locality weighting, as Envoy)
    hosts: tuple[Endpoint, ...]
    healthy: tuple[Endpoint, ...]
    degraded: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class _Level:
    hosts: tuple[Endpoint, ...]  # EDS order
    healthy: tuple[Endpoint, ...]
    localities: tuple[_LocalityHosts, ...]  # sorted by (region, zone, sub_zone), as Envoy
    degraded: tuple[Endpoint, ...] = ()


def _split(
    hosts: tuple[Endpoint, ...], ejected: Container[str], degraded_tier: bool
) -> tuple[tuple[Endpoint, ...], tuple[Endpoint, ...]]:
    """The usable hosts of ``hosts`` and those of the degraded tier, in order (one
    comprehension each, no call per host: a 10 000-host level is split on every update)."""
    usable = USABLE_HEALTH
    if ejected:
        healthy = tuple([e for e in hosts if e.health in usable and e.address not in ejected])
    else:
        healthy = tuple([e for e in hosts if e.health in usable])
    if not degraded_tier or len(healthy) == len(hosts):
        return healthy, ()
    return healthy, tuple([e for e in hosts if e.health == "DEGRADED" and e.address not in ejected])


def _levels(
    cla: ClusterLoadAssignment, ejected: Container[str], degraded_tier: bool = True
) -> list[_Level]:
    if not cla.localities:
        return []
    top = max(loc.priority for loc in cla.localities)
    levels = []
    for priority in range(top + 1):
        hosts: list[Endpoint] = []
        by_locality: dict[Locality, tuple[int, list[Endpoint]]] = {}
        for loc in cla.localities:
            if loc.priority != priority:
                continue
            hosts.extend(loc.endpoints)
            weight, members = by_locality.get(loc.locality, (loc.weight or 0, []))
            members.extend(loc.endpoints)
            by_locality[loc.locality] = (weight, members)
        localities = []
        for locality, (weight, members) in sorted(
            by_locality.items(), key=lambda kv: (kv[0].region, kv[0].zone, kv[0].sub_zone)
        ):
            member_hosts = tuple(members)
            localities.append(
                _LocalityHosts(
                    locality, weight, member_hosts, *_split(member_hosts, ejected, degraded_tier)
                )
            )
        level_hosts = tuple(hosts)
        if len(localities) == 1:  # the level's split is its one locality's
            healthy, degraded = localities[0].healthy, localities[0].degraded
        else:
            healthy, degraded = _split(level_hosts, ejected, degraded_tier)
        levels.append(_Level(level_hosts, healthy, tuple(localities), degraded))
    return levels


# --------------------------------------------------------------------------- selectors


class _LevelChooser:
    """Host choice inside one priority for the non-hashing policies."""

    __slots__ = (
        "_all",
        "_degraded",
        "_degraded_choosers",
        "_degraded_edf",
        "_healthy",
        "_locality_choosers",
        "_locality_edf",
        "_panic",
    )

    def __init__(
        self,
        level: _Level,
        panic: bool,
        policy: LbPolicy,
        overprovisioning_factor: int,
        make: Callable[[tuple[Endpoint, ...]], HostChooser],
        rng: random.Random,
    ) -> None:
        self._panic = panic
        self._all = make(level.hosts) if panic else EMPTY
        self._healthy = make(level.healthy)
        self._degraded = make(level.degraded) if level.degraded and not panic else EMPTY
        self._locality_edf: Edf | None = None
        self._locality_choosers: tuple[HostChooser, ...] = ()
        self._degraded_edf: Edf | None = None
        self._degraded_choosers: tuple[HostChooser, ...] = ()
        if policy.locality_weighted and not panic:
            self._locality_edf, self._locality_choosers = _locality_schedule(
                level, False, overprovisioning_factor, make, rng
            )
            if level.degraded:
                self._degraded_edf, self._degraded_choosers = _locality_schedule(
                    level, True, overprovisioning_factor, make, rng
                )

    def direct(self) -> Callable[[], Endpoint | None] | None:
        """The host chooser's own ``choose`` when nothing else is decided at this level
        (no panic, no locality weighting), so a picker can call it directly."""
        if self._panic or self._locality_edf is not None:
            return None
        return self._healthy.choose

    def choose(self) -> Endpoint | None:
        if self._panic:
            return self._all.choose()
        edf = self._locality_edf
        if edf is not None:
            i = edf.pick()
            if i is not None:
                return self._locality_choosers[i].choose()
        return self._healthy.choose()

    def choose_degraded(self) -> Endpoint | None:
        """A host of the level's degraded tier (Envoy's HostAvailability::Degraded)."""
        if self._panic:
            return self._all.choose()
        edf = self._degraded_edf
        if edf is not None:
            i = edf.pick()
            if i is not None:
                return self._degraded_choosers[i].choose()
        return self._degraded.choose()


def _locality_schedule(
    level: _Level,
    degraded: bool,
    overprovisioning_factor: int,
    make: Callable[[tuple[Endpoint, ...]], HostChooser],
    rng: random.Random,
) -> tuple[Edf | None, tuple[HostChooser, ...]]:
    """Envoy's locality EDF for the healthy (or degraded) hosts of a level: effective
    weight ``locality_weight * min(1, factor/100 * usable/total)``."""
    weights = []
    choosers = []
    for loc in level.localities:
        members = loc.degraded if degraded else loc.healthy
        if not loc.hosts or not members or loc.weight <= 0:
            continue
        ratio = len(members) / len(loc.hosts)
        weights.append(loc.weight * min(1.0, overprovisioning_factor / 100.0 * ratio))
        choosers.append(make(members))
    if not weights:
        return None, ()
    return Edf.randomized(weights, rng), tuple(choosers)


class _Selector:
    def choose(self, hash_key: int | None, attempt: int) -> Endpoint | None:
        raise NotImplementedError

    def choose_at(
        self, priority: int, degraded: bool, hash_key: int | None, attempt: int
    ) -> Endpoint | None:
        """A host of ``priority`` (its degraded tier when ``degraded``), the priority
        being chosen by someone else (an aggregate cluster's merged priority set)."""
        raise NotImplementedError

    def direct(self) -> Callable[[], Endpoint | None] | None:
        """A zero-argument chooser equivalent to ``choose`` (which ignores the hash key
        and attempt), or None when there is none."""
        return None


class _PrioritySelector(_Selector):
    __slots__ = ("_cumulative", "_levels", "_rng", "_single")

    def __init__(
        self, levels: tuple[_LevelChooser, ...], plan: PriorityPlan, rng: random.Random
    ) -> None:
        self._levels = levels
        self._cumulative = plan.cumulative()
        self._rng = rng
        # One level whose degraded hosts take no load: no priority to choose.
        self._single = len(levels) == 1 and not any(plan.degraded_loads)

    def direct(self) -> Callable[[], Endpoint | None] | None:
        return self._levels[0].direct() if self._single else None

    def choose(self, hash_key: int | None, attempt: int) -> Endpoint | None:
        levels = self._levels
        if not levels:
            return None
        if self._single:
            return levels[0].choose()
        p = choose_priority(self._cumulative, self._rng.getrandbits(64))
        n = len(levels)
        return levels[p].choose() if p < n else levels[p - n].choose_degraded()

    def choose_at(
        self, priority: int, degraded: bool, hash_key: int | None, attempt: int
    ) -> Endpoint | None:
        if priority >= len(self._levels):
            return None
        level = self._levels[priority]
        return level.choose_degraded() if degraded else level.choose()


class _HashSelector(_Selector):
    """Ring hash / maglev: one table per priority; the hash also picks the priority."""

    __slots__ = ("_cumulative", "_levels", "_rng")

    def __init__(
        self,
        levels: tuple[tuple[Ring | MaglevTable, tuple[Endpoint, ...]], ...],
        plan: PriorityPlan,
        rng: random.Random,
    ) -> None:
        self._levels = levels
        self._cumulative = plan.cumulative()
        self._rng = rng

    def choose(self, hash_key: int | None, attempt: int) -> Endpoint | None:
        if not self._levels:
            return None
        h = self._rng.getrandbits(64) if hash_key is None else hash_key & _U64
        # Degraded loads select a level too (index n + i), whose table, as Envoy's, holds
        # only its healthy hosts (all of them in panic).
        n = len(self._levels)
        p = choose_priority(self._cumulative, h) % n if n > 1 else 0
        table, hosts = self._levels[p]
        i = table.choose(h, attempt)
        return None if i is None else hosts[i]

    def choose_at(
        self, priority: int, degraded: bool, hash_key: int | None, attempt: int
    ) -> Endpoint | None:
        if priority >= len(self._levels):
            return None
        h = self._rng.getrandbits(64) if hash_key is None else hash_key & _U64
        table, hosts = self._levels[priority]
        i = table.choose(h, attempt)
        return None if i is None else hosts[i]


class _PickFirstSelector(_Selector):
    __slots__ = ("_candidates",)

    def __init__(self, candidates: tuple[Endpoint, ...]) -> None:
        self._candidates = candidates

    def choose(self, hash_key: int | None, attempt: int) -> Endpoint | None:
        c = self._candidates
        return c[attempt % len(c)] if c else None

    def choose_at(
        self, priority: int, degraded: bool, hash_key: int | None, attempt: int
    ) -> Endpoint | None:
        return self.choose(hash_key, attempt)


def _hash_level(
    level: _Level, panic: bool, policy: LbPolicy
) -> tuple[Ring | MaglevTable, tuple[Endpoint, ...]]:
    """Envoy's normalizeWeights + createLoadBalancer for one priority."""
    groups: list[tuple[float, list[int]]] = []
    hosts: list[Endpoint] = []
    if policy.locality_weighted and level.localities:
        total = sum(loc.weight for loc in level.localities)
        if total > 0:
            for loc in level.localities:
                if loc.weight == 0:
                    continue
                members = loc.hosts if panic else loc.healthy
                groups.append((loc.weight / total, [e.weight for e in members]))
                hosts.extend(members)
    else:
        members = level.hosts if panic else level.healthy
        groups.append((1.0, [e.weight for e in members]))
        hosts.extend(members)
    weighted, lo, hi = normalized_weights(groups)
    keys = tuple((host_hash_key(hosts[i].host, hosts[i].port), w) for i, w in weighted)
    table: Ring | MaglevTable
    if policy.name == "ring_hash":
        if policy.hash_function != "XX_HASH":
            raise ValueError("ring_hash: only XX_HASH is supported (MURMUR_HASH_2 is not)")
        table = build_ring(keys, lo, policy.min_ring_size, policy.max_ring_size)
    else:
        table = build_maglev(keys, hi, policy.table_size)
    return table, tuple(hosts)


# --------------------------------------------------------------------------- the picker


class Picker:
    """Immutable per-request endpoint chooser for one cluster (see :func:`build_picker`).

    Thread-safe without locks; rebuild it whenever endpoints, health or ejections change.
    """

    __slots__ = (
        "_drops",
        "_selector",
        "cluster_name",
        "direct",
        "has_drops",
        "healthy",
        "level_counts",
        "overprovisioning_factor",
        "panic",
        "policy",
        "priority_loads",
        "refresh_at",
    )

    def __init__(
        self,
        cluster_name: str,
        policy: str,
        plan: PriorityPlan,
        drops: tuple[tuple[str, float], ...],
        selector: _Selector,
        healthy: bool = True,
        level_counts: tuple[LevelCounts, ...] = (),
        overprovisioning_factor: int = 140,
    ) -> None:
        self.cluster_name = cluster_name
        #: Whether any endpoint is healthy or degraded (not counting panic mode).
        self.healthy = healthy
        self.policy = policy
        #: Percent of requests per priority level (sums to 100).
        self.priority_loads = plan.loads
        #: Per priority level: balancing over all hosts regardless of health.
        self.panic = plan.panic
        self._drops = drops
        #: Whether the assignment has drop_overloads (skip :meth:`drop_category` if not).
        self.has_drops = bool(drops)
        self._selector = selector
        #: Per priority level, its host counts: an aggregate cluster merges its leaves'
        #: levels into one priority set (Envoy's AggregateClusterLoadBalancer).
        self.level_counts = level_counts
        self.overprovisioning_factor = overprovisioning_factor
        #: Monotonic time at which slow-start weights have moved on and the picker should
        #: be rebuilt (0.0: never; see :func:`build_picker`'s ``joined``).
        self.refresh_at = 0.0
        #: One priority, no panic, no locality weights (most clusters): the host
        #: chooser itself, a zero-argument equivalent of ``pick()`` (None otherwise);
        #: pick() and admission call it instead of going through the levels.
        self.direct = selector.direct()

    def pick(
        self,
        hash_key: int | None = None,
        exclude: Container[str] = frozenset(),
        *,
        host_selection_retry_max_attempts: int = 1,
    ) -> Endpoint | None:
        """Choose an endpoint, or None when there is no usable one.

        ``hash_key`` (64-bit) drives ring hash / maglev (a random one is used when None;
        other policies ignore it). ``exclude`` holds addresses to avoid (the retry
        policy's previous_hosts predicate): as Envoy, selection is re-attempted up to
        ``host_selection_retry_max_attempts`` more times (Envoy's default is 1), and if
        every attempt lands on an excluded host the last one picked is returned anyway.
        Re-attempts on ring hash move along the ring, on maglev perturb the hash, on the
        other policies are fresh picks.
        """
        direct = self.direct
        selector = self._selector
        host = direct() if direct is not None else selector.choose(hash_key, 0)
        if host is None or not exclude or host.address not in exclude:
            return host
        for attempt in range(1, 1 + max(0, host_selection_retry_max_attempts)):
            host = selector.choose(hash_key, attempt)
            if host is None or host.address not in exclude:
                return host
        return host

    def pick_at(
        self,
        priority: int,
        degraded: bool,
        hash_key: int | None = None,
        exclude: Container[str] = frozenset(),
        *,
        host_selection_retry_max_attempts: int = 1,
    ) -> Endpoint | None:
        """:meth:`pick` within one priority level (its degraded tier when ``degraded``):
        an aggregate cluster chose the level, as Envoy's AggregateLoadBalancerContext
        gives the leaf 100 % load on it. The level's own panic still applies."""
        choose = self._selector.choose_at
        host = choose(priority, degraded, hash_key, 0)
        if host is None or not exclude or host.address not in exclude:
            return host
        for attempt in range(1, 1 + max(0, host_selection_retry_max_attempts)):
            host = choose(priority, degraded, hash_key, attempt)
            if host is None or host.address not in exclude:
                return host
        return host

    def drop_category(self, random_value: float) -> str | None:
        """The drop_overloads category to drop this request for, or None to send it.

        ``random_value`` is uniform in [0, 1). Each category drops its parts-per-million
        share independently and in order (gRPC xds_cluster_impl; Envoy supports one
        category, for which this is the same); one uniform value suffices because the
        remainder after a miss is rescaled into a fresh uniform value.
        """
        u = random_value
        for category, p in self._drops:
            if u < p:
                return category
            u = (u - p) / (1.0 - p)
        return None

    def __repr__(self) -> str:
        return (
            f"<Picker {self.cluster_name!r} {self.policy} loads={list(self.priority_loads)} "
            f"panic={list(self.panic)}>"
        )


def build_picker(
    cluster: Cluster,
    cla: ClusterLoadAssignment,
    *,
    states: EndpointStates,
    ejected: frozenset[str] = frozenset(),
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    weighted_priority_health: bool = False,
    degraded_tier: bool = True,
    joined: Mapping[str, float] | None = None,
) -> Picker:
    """Build the picker for ``cluster`` over ``cla``.

    ``ejected``: outlier-ejected addresses, treated as unhealthy. ``rng``: the source of
    every random choice (seed it in tests). ``clock``: monotonic seconds for peak EWMA.
    ``weighted_priority_health``: Envoy's CLA policy flag of that name (priority health
    from endpoint weights instead of host counts; default off as in Envoy).
    ``degraded_tier``: Envoy's degraded tier for DEGRADED endpoints (HTTP); False counts
    them as unhealthy (gRPC, A27).
    ``joined``: monotonic times at which endpoints joined the cluster after its first
    assignment (address → time). With the policy's slow start, healthy ones still in the
    window get Envoy's weight factor as of ``clock()``; the picker's ``refresh_at`` then
    says when to rebuild it (the weights are fixed per picker, so the request path
    computes nothing: see :meth:`pymesh._upstream.ClusterRuntime.sweep`).
    """
    rng = rng if rng is not None else random.Random()
    policy = cluster.lb_policy
    levels = _levels(cla, ejected, degraded_tier)
    factor = cla.overprovisioning_factor
    counts = tuple(
        LevelCounts(
            len(lv.hosts),
            len(lv.healthy),
            sum(map(_weight, lv.hosts)),
            sum(map(_weight, lv.healthy)),
            len(lv.degraded),
            sum(map(_weight, lv.degraded)),
        )
        for lv in levels
    )
    plan = plan_priorities(
        counts,
        factor,
        cluster.healthy_panic_threshold,
        weighted_priority_health=weighted_priority_health,
    )
    drops = tuple(
        (d.category, min(1_000_000, d.parts_per_million) / 1_000_000)
        for d in cla.drop_overloads
        if d.parts_per_million > 0
    )
    selector: _Selector
    refresh_at = 0.0
    if policy.name == "pick_first":
        candidates = tuple(e for lv in levels for e in lv.healthy)
        if not candidates and panic_threshold_percent(cluster.healthy_panic_threshold) > 0:
            candidates = tuple(e for lv in levels for e in lv.hosts)
        selector = _PickFirstSelector(candidates)
    elif policy.name in ("ring_hash", "maglev"):
        selector = _HashSelector(
            tuple(_hash_level(lv, plan.panic[i], policy) for i, lv in enumerate(levels)),
            plan,
            rng,
        )
    else:
        if policy.name == "peak_ewma" and states.decay_time != policy.decay_time:
            states.set_decay_time(policy.decay_time)
        ramp, refresh_at = _slow_start_ramp(policy, levels, joined, clock)

        def make(hosts: tuple[Endpoint, ...]) -> HostChooser:
            return make_chooser(policy, hosts, states=states, rng=rng, clock=clock, ramp=ramp)

        selector = _PrioritySelector(
            tuple(
                _LevelChooser(lv, plan.panic[i], policy, factor, make, rng)
                for i, lv in enumerate(levels)
            ),
            plan,
            rng,
        )
    healthy = any(lv.healthy or lv.degraded for lv in levels)
    picker = Picker(cluster.name, policy.name, plan, drops, selector, healthy, counts, factor)
    picker.refresh_at = refresh_at
    return picker


def _slow_start_ramp(
    policy: LbPolicy,
    levels: list[_Level],
    joined: Mapping[str, float] | None,
    clock: Callable[[], float],
) -> tuple[dict[str, float] | None, float]:
    """Slow-start weight factors (address → factor) of the healthy endpoints still in
    their window, and when they next need recomputing (0.0: never)."""
    slow = policy.slow_start
    if slow is None or not joined or policy.name not in ("round_robin", "least_request"):
        return None, 0.0
    now = clock()
    ramp: dict[str, float] = {}
    ends = []
    for lv in levels:
        for e in lv.healthy:  # Envoy scales only healthy hosts
            t = joined.get(e.address)
            if t is not None and now - t < slow.window:
                ramp[e.address] = slow.factor(now - t)
                ends.append(t + slow.window)
    if not ramp:
        return None, 0.0
    # Fine enough to follow the curve, coarse enough that rebuilds cost nothing.
    step = max(0.1, min(1.0, slow.window / 50))
    return ramp, min(now + step, min(ends))
