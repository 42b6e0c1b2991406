"""Peak-EWMA picker behaviour on a fixed clock: what each addition to the policy buys."""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter

from pymesh.lb import EndpointStates
from tests.lb._helpers import cla, eps, picker


def _states(t: list[float]) -> EndpointStates:
    return EndpointStates(decay_time=10.0, clock=lambda: t[0])


def test_host_that_stopped_answering_is_avoided_before_its_answer_arrives() -> None:
    t = [0.0]
    states = _states(t)
    stalled, busy = eps("10.0.0", 2)
    for h in (stalled, busy):
        states.get_or_create(h.address).observe(0.020, now=0.0)
    states.get_or_create(stalled.address).on_start(now=0.0)  # sent, never answered yet
    t[0] = 0.005
    for _ in range(2):  # the other host is busier: two fresh requests in flight
        states.get_or_create(busy.address).on_start()
    pk = picker(cla(((stalled, busy), 0)), "peak_ewma", states=states, seed=3, clock=lambda: t[0])
    # 5 ms in, the stalled host looks like any host with one request: it is the cheaper.
    assert pk.pick() == stalled
    # 100 ms in (the busy host has answered its two and has two new ones in flight) the
    # stalled request has waited 5x its estimate: 0.1 * 2 > 0.02 * 3, though the estimate
    # is unchanged (classic peak EWMA would still pick it: 0.04 < 0.06).
    b = states.get_or_create(busy.address)
    for _ in range(2):
        b.on_finish(0.020, now=0.025)
    for _ in range(2):
        b.on_start(now=0.095)
    t[0] = 0.1
    assert {pk.pick() for _ in range(20)} == {busy}
    # It answers (slowly): the answer is a peak, and it stays avoided.
    states.get_or_create(stalled.address).on_finish(0.1, now=0.1)
    assert {pk.pick() for _ in range(20)} == {busy}


def test_fast_failing_host_is_avoided_once_failures_are_reported() -> None:
    t = [0.0]
    states = _states(t)
    good, broken = eps("10.0.0", 2)
    for h in (good, broken):
        states.get_or_create(h.address).observe(0.020, now=0.0)
    pk = picker(cla(((good, broken), 0)), "peak_ewma", states=states, seed=4, clock=lambda: t[0])
    b = states.get_or_create(broken.address)
    for i in range(3):  # three connections refused within a millisecond each
        b.on_start(now=0.01 * i)
        b.on_failure(0.0005, now=0.01 * i + 0.0005)
    t[0] = 0.05
    states.get_or_create(good.address).on_start()  # even with a request in flight...
    assert {pk.pick() for _ in range(20)} == {good}  # ...the good host is the cheaper


def test_equal_costs_split_evenly() -> None:
    # P2C draws two distinct hosts uniformly and keeps the first on a tie, so equal hosts
    # share the load evenly (Envoy's least request and Finagle's P2C do the same).
    states = _states([1.0])
    hosts = eps("10.0.0", 4)
    for h in hosts:
        states.get_or_create(h.address).observe(0.020, now=1.0)
    pk = picker(cla((hosts, 0)), "peak_ewma", states=states, seed=5, clock=lambda: 1.0)
    counts = Counter(pk.pick() for _ in range(8000))
    assert set(counts) == set(hosts)
    assert all(abs(c - 2000) <= 6 * math.sqrt(8000 * 0.25 * 0.75) for c in counts.values())


def _slow_host_requests(policy: str, seed: int, n: int = 3000) -> list[float]:
    """Closed-loop simulation on a virtual clock (as ``lb_quality.py --simulate``): 8
    clients, 11 hosts at 20 ms plus ~4 ms of client jitter, host 0 ten times slower for
    the middle half. Returns when (after the slowdown) host 0 was sent a request."""
    rng = random.Random(seed)
    t = [0.0]
    states = EndpointStates(decay_time=2.0, clock=lambda: t[0])
    hosts = eps("10.0.0", 11)
    pk = picker(cla((hosts, 0)), policy, states=states, seed=seed, clock=lambda: t[0])
    pk_index = {h: i for i, h in enumerate(hosts)}
    events: list[tuple[float, int, int, float]] = []
    sent_to_slow: list[float] = []
    issued = 0
    slow_at = 0.0

    def issue() -> None:
        nonlocal issued, slow_at
        issued += 1
        if issued == n // 4:
            slow_at = t[0]
        slow = n // 4 <= issued < 3 * n // 4
        ep = pk.pick()
        assert ep is not None
        i = pk_index[ep]
        states.get_or_create(ep.address).on_start()
        if i == 0 and slow:
            sent_to_slow.append(t[0] - slow_at)
        took = 0.020 * (10 if i == 0 and slow else 1) + rng.expovariate(250.0)
        heapq.heappush(events, (t[0] + took, issued, i, t[0]))

    for _ in range(8):
        issue()
    while events:
        end, _, i, started = heapq.heappop(events)
        t[0] = end
        states.get_or_create(hosts[i].address).on_finish(end - started, end)
        if issued < n:
            issue()
    return sent_to_slow


def test_simulated_slowdown_costs_a_first_request_and_a_few_probes() -> None:
    runs = [_slow_host_requests("peak_ewma", seed) for seed in (1, 2, 3)]
    for sent in runs:
        first = sent[0]
        # Nothing more once the first request is overdue, until its answer is back...
        assert not [s for s in sent if first + 0.1 < s < first + 0.2]
        # ...then a probe every ~1.5 s (decay_time 2 s) over the ~4.5 s slow phase.
        assert len(sent) <= 5
    assert sum(map(len, runs)) <= 12
    least = [_slow_host_requests("least_request", seed) for seed in (1, 2, 3)]
    assert all(len(sent) > 30 for sent in least)  # the same traffic, latency-blind
