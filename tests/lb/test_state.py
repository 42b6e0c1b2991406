from __future__ import annotations

import math
import threading

from pymesh.lb import EndpointState, EndpointStates


def test_registry_get_or_create_is_shared_and_retained() -> None:
    states = EndpointStates(decay_time=5.0)
    a = states.get_or_create("10.0.0.1:80")
    assert states.get_or_create("10.0.0.1:80") is a
    assert a.decay_time == 5.0
    assert list(states) == ["10.0.0.1:80"] and states["10.0.0.1:80"] is a
    states.retain(frozenset())
    assert len(states) == 0


def test_registry_race_yields_one_state() -> None:
    states = EndpointStates()
    seen: list[EndpointState] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait(timeout=60)
        seen.append(states.get_or_create("x:1"))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len({id(s) for s in seen}) == 1


def test_peak_ewma_jumps_up_and_decays_down() -> None:
    s = EndpointState("a:1", decay_time=10.0)
    s.observe(0.1, now=0.0)
    assert s.ewma_latency == 0.1
    s.observe(0.5, now=1.0)  # a peak replaces the estimate immediately
    assert s.ewma_latency == 0.5
    s.observe(0.1, now=11.0)  # 10 s later: weight e^-1 on the old value
    assert math.isclose(s.ewma_latency, 0.5 * math.exp(-1) + 0.1 * (1 - math.exp(-1)))
    assert math.isclose(s.latency_estimate(21.0), s.ewma_latency * math.exp(-1))


def test_active_requests_and_cost() -> None:
    s = EndpointState("a:1")
    assert s.cost(0.0) == 0.0  # new and idle: free
    s.on_start()
    assert s.cost(0.0) > 1e9  # new with a request in flight: penalised
    s.on_finish(0.2, now=1.0)
    assert s.active_requests == 0
    s.on_start()
    assert math.isclose(s.cost(1.0), 0.2 * 2)
    s.on_finish()
    s.on_finish()
    assert s.active_requests == 0  # never negative


def test_peak_ewma_picker_applies_cluster_decay_time() -> None:
    from tests.lb._helpers import cla, eps, picker

    states = EndpointStates()
    existing = states.get_or_create("10.0.0.1:80")
    picker(cla((eps("10.0.0", 2), 0)), "peak_ewma", states=states, decay_time=2.5)
    assert existing.decay_time == 2.5
    assert states.get_or_create("10.0.0.2:80").decay_time == 2.5
