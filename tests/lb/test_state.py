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


# --- requests in flight count as evidence (pymesh's addition to peak EWMA) ---------------


def test_unanswered_for_is_zero_when_idle_and_counts_from_the_start() -> None:
    s = EndpointState("a:1")
    assert s.unanswered_for(5.0) == 0.0
    s.on_start(now=1.0)
    assert math.isclose(s.unanswered_for(1.25), 0.25)
    s.on_finish(0.3, now=1.3)
    assert s.unanswered_for(2.0) == 0.0  # idle again


def test_unanswered_for_restarts_at_each_end_and_bounds_the_oldest_age() -> None:
    s = EndpointState("a:1")
    s.on_start(now=0.0)
    s.on_start(now=0.1)
    s.on_finish(0.2, now=0.2)  # the first ends; the second (age 0.4 at t=0.5) is in flight
    s.on_start(now=0.3)
    waited = s.unanswered_for(0.5)
    assert math.isclose(waited, 0.3)  # since the last end...
    assert waited <= 0.5 - 0.1  # ...never more than the oldest request's age


def test_on_start_without_now_reads_the_state_clock() -> None:
    t = [10.0]
    states = EndpointStates(clock=lambda: t[0])
    s = states.get_or_create("a:1")
    assert s.clock() == 10.0
    s.on_start()
    t[0] = 10.5
    s.on_finish()  # no latency: an end still restarts the count, at the clock's time
    s.on_start()
    t[0] = 10.75
    assert math.isclose(s.unanswered_for(t[0]), 0.25)


def test_cost_rises_with_an_unanswered_request_before_its_answer_arrives() -> None:
    s = EndpointState("a:1", decay_time=math.inf)  # no decay: isolate the in-flight term
    s.observe(0.02, now=0.0)
    s.on_start(now=1.0)
    # While the request is younger than the estimate, the cost is plain peak EWMA...
    assert math.isclose(s.cost(1.01), 0.02 * 2)
    # ...once it has waited longer, the wait is the latency: 100 ms unanswered -> 0.1 * 2.
    assert math.isclose(s.cost(1.1), 0.1 * 2)
    assert s.cost(1.3) > s.cost(1.2)  # and it keeps rising until the host answers
    s.on_finish(0.4, now=1.4)
    assert math.isclose(s.cost(1.4), 0.4)  # the answer: a peak, nothing in flight


def test_direct_counter_updates_do_not_start_the_in_flight_clock() -> None:
    # The gRPC channel bumps active_requests itself: cost stays plain peak EWMA then.
    s = EndpointState("a:1", decay_time=math.inf)
    s.observe(0.02, now=0.0)
    s.active_requests += 1
    assert math.isclose(s.cost(100.0), 0.02 * 2)


def test_lost_end_is_forgotten_after_four_decay_windows() -> None:
    s = EndpointState("a:1", decay_time=2.0)
    s.observe(0.02, now=0.0)
    s.on_start(now=0.0)  # its end is never reported
    assert s.cost(7.9) > 7.0  # unanswered for 7.9 s: very expensive
    assert s.unanswered_for(8.1) == 0.0  # past 4 * decay_time: taken for lost bookkeeping
    assert s.cost(8.2) < 1.0
    s.on_finish()
    s.on_finish()
    assert s.active_requests == 0 and s.unanswered_for(9.0) == 0.0


def test_failure_counts_as_at_least_its_time_and_ten_times_the_estimate() -> None:
    s = EndpointState("a:1", decay_time=math.inf)
    s.observe(0.02, now=0.0)
    s.on_start(now=1.0)
    s.on_failure(0.001, now=1.001)  # refused at once: ServiceTalk's 10x penalty
    assert math.isclose(s.ewma_latency, 0.2)
    assert s.active_requests == 0 and s.unanswered_for(1.001) == 0.0
    s.on_start(now=2.0)
    s.on_failure(5.0, now=7.0)  # timed out after 5 s: Finagle's elapsed time, a new peak
    assert math.isclose(s.ewma_latency, 5.0)
    fresh = EndpointState("b:1")
    fresh.on_start(now=0.0)
    fresh.on_failure(0.5, now=0.5)  # no estimate yet: the elapsed time
    assert math.isclose(fresh.ewma_latency, 0.5)


def test_overdue_after_follows_rfc6298_over_the_samples() -> None:
    s = EndpointState("a:1", decay_time=math.inf)
    s.observe(0.02, now=0.0)  # first sample: srtt = 0.02, rttvar = 0.01
    assert math.isclose(s.overdue_after(), 0.02 + 4 * 0.01)
    s.observe(0.04, now=1.0)  # rttvar += (|0.02 - 0.04| - 0.01) / 4; srtt += 0.02 / 8
    assert math.isclose(s.overdue_after(), 0.0225 + 4 * 0.0125)


def test_a_wait_within_the_jitter_of_the_host_is_not_evidence() -> None:
    steady = EndpointState("a:1", decay_time=math.inf)
    jittery = EndpointState("b:1", decay_time=math.inf)
    for i, (x, y) in enumerate([(0.02, 0.01), (0.02, 0.05), (0.02, 0.01), (0.02, 0.05)]):
        steady.observe(x, now=float(i))
        jittery.observe(y, now=float(i))
    for s in (steady, jittery):
        s.on_start(now=10.0)
    # 80 ms unanswered: overdue for the steady host (threshold ~0.037 s), within the
    # jittery host's spread (threshold ~0.089 s), whose cost stays its 50 ms peak.
    assert steady.overdue_after() < 0.08 < jittery.overdue_after()
    assert math.isclose(steady.cost(10.08), 0.08 * 2)
    assert math.isclose(jittery.cost(10.08), 0.05 * 2)
