"""Per-policy behaviour of built pickers: weights, load, localities, drops, exclude."""

from __future__ import annotations

import math
import random
import threading
from collections import Counter

from pymesh.lb import EndpointStates
from pymesh.xds.resources.endpoint import DropOverload, Endpoint
from tests.lb._helpers import cla, eps, picker


def _within(count: int, n: int, p: float, sds: float = 6.0) -> bool:
    return bool(abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p)))


def test_round_robin_equal_weights_is_a_rotation() -> None:
    endpoints = eps("10.0.0", 5)
    pk = picker(cla((endpoints, 0)), seed=3)
    first = [pk.pick() for _ in range(5)]
    assert set(first) == set(endpoints)
    assert [pk.pick() for _ in range(5)] == first
    starts = {picker(cla((endpoints, 0)), seed=s).pick() for s in range(40)}
    assert len(starts) > 1  # randomised start offset


def test_weighted_round_robin_exact_over_full_cycles() -> None:
    endpoints = (
        Endpoint("10.0.0.1", 80, weight=1),
        Endpoint("10.0.0.2", 80, weight=2),
        Endpoint("10.0.0.3", 80, weight=3),
        Endpoint("10.0.0.4", 80, weight=4),
    )
    pk = picker(cla((endpoints, 0)), seed=11)
    for _ in range(3):
        counts = Counter(pk.pick().weight for _ in range(10 * 100))  # type: ignore[union-attr]
        assert counts == {1: 100, 2: 200, 3: 300, 4: 400}


def test_weighted_round_robin_is_smooth() -> None:
    endpoints = (Endpoint("10.0.0.1", 80, weight=1), Endpoint("10.0.0.2", 80, weight=3))
    pk = picker(cla((endpoints, 0)), seed=2)
    seq = [pk.pick().weight for _ in range(400)]  # type: ignore[union-attr]
    for i in range(0, 400 - 4):
        assert seq[i : i + 4].count(1) <= 2  # never a burst of the light host


def test_random_is_uniform_and_ignores_weights_like_envoy() -> None:
    endpoints = (Endpoint("10.0.0.1", 80, weight=1), Endpoint("10.0.0.2", 80, weight=9))
    pk = picker(cla((endpoints, 0)), "random", seed=4)
    counts = Counter(pk.pick().weight for _ in range(10000))  # type: ignore[union-attr]
    assert _within(counts[1], 10000, 0.5)


def test_least_request_p2c_prefers_less_loaded() -> None:
    states = EndpointStates()
    endpoints = eps("10.0.0", 10)
    for i, e in enumerate(endpoints):
        states.get_or_create(e.address).active_requests = i  # host i has i requests
    pk = picker(cla((endpoints, 0)), "least_request", states=states, seed=5)
    counts = Counter(pk.pick() for _ in range(20000))
    # Distinct P2C: the most loaded host is never chosen; load order is respected.
    assert counts[endpoints[-1]] == 0
    per_host = [counts[e] for e in endpoints[:-1]]
    assert per_host == sorted(per_host, reverse=True)
    # P(host i) = 2 * (n-1-i) / (n (n-1)) for distinct pairs: host 0 gets 9/45.
    assert _within(counts[endpoints[0]], 20000, 9 / 45)


def test_least_request_full_scan_when_few_hosts() -> None:
    states = EndpointStates()
    endpoints = eps("10.0.0", 2)
    states.get_or_create(endpoints[0].address).active_requests = 3
    pk = picker(cla((endpoints, 0)), "least_request", states=states)
    assert {pk.pick() for _ in range(200)} == {endpoints[1]}
    states.get_or_create(endpoints[0].address).active_requests = 0
    assert {pk.pick() for _ in range(200)} == set(endpoints)  # ties broken at random


def test_least_request_weighted_uses_active_request_bias() -> None:
    states = EndpointStates()
    light, heavy = Endpoint("10.0.0.1", 80, weight=1), Endpoint("10.0.0.2", 80, weight=3)
    pk = picker(cla(((light, heavy), 0)), "least_request", states=states, seed=6)
    counts = Counter(pk.pick() for _ in range(4000))
    assert abs(counts[heavy] - 3000) <= 2 and abs(counts[light] - 1000) <= 2
    # heavy with 2 in flight: 3 / (2 + 1) = 1 → as attractive as light.
    states.get_or_create(heavy.address).active_requests = 2
    pk = picker(cla(((light, heavy), 0)), "least_request", states=states, seed=6)
    counts = Counter(pk.pick() for _ in range(4000))
    assert abs(counts[heavy] - 2000) <= 2
    # bias 0: plain weighted round robin regardless of load.
    pk = picker(cla(((light, heavy), 0)), "least_request", states=states, active_request_bias=0.0)
    counts = Counter(pk.pick() for _ in range(4000))
    assert abs(counts[heavy] - 3000) <= 2


def test_peak_ewma_avoids_slow_and_probes_new_hosts() -> None:
    states = EndpointStates(decay_time=10.0)
    fast, slow, new = eps("10.0.0", 3)
    states.get_or_create(fast.address).observe(0.010, now=0.0)
    states.get_or_create(slow.address).observe(0.500, now=0.0)
    # A fixed clock one second after the samples: the test must not depend on the machine's
    # uptime (with time.monotonic() the EWMAs decay to 0 on a host up for hours, and tie).
    pk = picker(cla(((fast, slow), 0)), "peak_ewma", states=states, seed=1, clock=lambda: 1.0)
    assert {pk.pick() for _ in range(50)} == {fast}
    # A host with no samples costs nothing while idle: it gets picked over a measured one...
    pk = picker(cla(((fast, new), 0)), "peak_ewma", states=states, seed=1, clock=lambda: 1.0)
    assert pk.pick() == new
    # ...but is heavily penalised while its first request is in flight.
    states.get_or_create(new.address).on_start()
    assert {pk.pick() for _ in range(20)} == {fast}


def test_panic_balances_over_all_hosts() -> None:
    healthy = eps("10.0.0", 1)
    sick = eps("10.0.1", 3, health="UNHEALTHY")
    pk = picker(cla((healthy + sick, 0)))
    assert pk.panic == (True,)
    assert {pk.pick() for _ in range(40)} == set(healthy + sick)
    no_panic = picker(cla((healthy + sick, 0)), panic=0)
    assert {no_panic.pick() for _ in range(40)} == set(healthy)
    dead = picker(cla((sick, 0)), panic=0)
    assert dead.pick() is None


def test_no_endpoints_picks_none() -> None:
    for policy in ("round_robin", "least_request", "random", "ring_hash", "maglev", "pick_first"):
        assert picker(cla(), policy).pick() is None


def test_locality_weighted_picks_localities_by_effective_weight() -> None:
    a = eps("10.0.0", 2)
    b = eps("10.0.1", 4)
    pk = picker(cla((a, 0, 1, "a"), (b, 0, 3, "b")), locality_weighted=True, seed=8)
    counts = Counter(pk.pick().host.startswith("10.0.1") for _ in range(4000))  # type: ignore[union-attr]
    assert abs(counts[True] - 3000) <= 2
    # Half of b unhealthy: effective weight 3 * min(1, 1.4 * 0.5) = 2.1.
    b_half = eps("10.0.1", 2) + eps("10.0.2", 2, health="UNHEALTHY")
    pk = picker(cla((a, 0, 1, "a"), (b_half, 0, 3, "b")), locality_weighted=True, seed=8)
    counts = Counter(pk.pick().host.startswith("10.0.1") for _ in range(3100))  # type: ignore[union-attr]
    assert abs(counts[True] - 2100) <= 2
    # Without locality weighting, localities are flattened (host counts decide).
    flat = picker(cla((a, 0, 1, "a"), (b, 0, 3, "b")), seed=8)
    counts = Counter(flat.pick().host.startswith("10.0.1") for _ in range(600))  # type: ignore[union-attr]
    assert counts[True] == 400


def test_locality_without_weight_gets_no_traffic_when_weighted() -> None:
    a = eps("10.0.0", 2)
    b = eps("10.0.1", 2)
    pk = picker(cla((a, 0, 1, "a"), (b, 0, None, "b")), locality_weighted=True)
    assert {pk.pick() for _ in range(100)} == set(a)


def test_drop_overloads_rate_within_binomial_bounds() -> None:
    drops = (DropOverload("lb", 100_000), DropOverload("throttle", 200_000))
    pk = picker(cla((eps("10.0.0", 2), 0), drops=drops))
    rng = random.Random(9)
    n = 50000
    counts = Counter(pk.drop_category(rng.random()) for _ in range(n))
    assert _within(counts["lb"], n, 0.1)
    assert _within(counts["throttle"], n, 0.9 * 0.2)  # independent, after "lb"
    assert picker(cla((eps("10.0.0", 1), 0))).drop_category(0.0) is None
    full = picker(cla((eps("10.0.0", 1), 0), drops=(DropOverload("all", 1_000_000),)))
    assert full.drop_category(0.999999) == "all"


def test_exclude_retries_selection_then_gives_up_like_envoy() -> None:
    endpoints = eps("10.0.0", 3)
    pk = picker(cla((endpoints, 0)), seed=12)
    avoid = frozenset(e.address for e in endpoints[:2])
    for _ in range(30):
        assert pk.pick(exclude=avoid, host_selection_retry_max_attempts=2) == endpoints[2]
    everything = frozenset(e.address for e in endpoints)
    assert pk.pick(exclude=everything) in endpoints  # all excluded: a host anyway


def test_exclude_on_hash_policies_moves_off_the_excluded_host() -> None:
    endpoints = eps("10.0.0", 3)
    for policy in ("ring_hash", "maglev"):
        pk = picker(cla((endpoints, 0)), policy)
        for k in [random.Random(13).getrandbits(64) for _ in range(200)]:
            first = pk.pick(k)
            assert first is not None
            other = pk.pick(k, exclude={first.address}, host_selection_retry_max_attempts=30)
            assert other is not None and other != first
            assert pk.pick(k, exclude={"10.9.9.9:80"}) == first


def test_pick_first() -> None:
    endpoints = eps("10.0.0", 1, health="UNHEALTHY") + eps("10.0.1", 3)
    pk = picker(cla((endpoints, 0)), "pick_first")
    assert {pk.pick() for _ in range(10)} == {endpoints[1]}
    assert pk.pick(exclude={endpoints[1].address}) == endpoints[2]


def test_concurrent_picks_do_not_break_pickers() -> None:
    endpoints = tuple(Endpoint(f"10.0.0.{i}", 80, weight=i) for i in range(1, 9))
    states = EndpointStates()
    pickers = [
        picker(cla((endpoints, 0)), name, states=states)
        for name in ("round_robin", "least_request", "peak_ewma", "maglev")
    ]
    errors: list[BaseException] = []
    counts: Counter[str] = Counter()
    start = threading.Barrier(4)

    def work() -> None:
        try:
            start.wait(timeout=60)
            local: Counter[str] = Counter()
            for i in range(5000):
                for pk in pickers:
                    e = pk.pick(i)
                    assert e is not None
                    local[e.address] += 1
            counts.update(local)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=100)
    assert not errors
    assert sum(counts.values()) == 4 * 5000 * len(pickers)
