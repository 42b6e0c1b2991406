"""The call engine on its own (sans-I/O): admission, retry decisions and the hedging
step loop, driven by a scripted driver. What real drivers do end to end is
test_parity_matrix.py; this pins the engine's bookkeeping where no backend can show it
(slots given back when a driver raises, the steps a hedged call yields)."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from pymesh._upstream import ClusterRuntime
from pymesh.call import (
    Abandon,
    Attempts,
    Launch,
    LocalReply,
    Plan,
    Reply,
    Ticket,
    Wait,
    run_sync,
    start_alone,
    steps,
)
from pymesh.resilience import Outcome, RetryDecider
from pymesh.xds.dependencies import ClusterConfig
from pymesh.xds.resources.cluster import CircuitBreakers, Cluster
from pymesh.xds.resources.endpoint import (
    ClusterLoadAssignment,
    DropOverload,
    Endpoint,
    Locality,
    LocalityEndpoints,
)
from pymesh.xds.resources.route import HedgePolicy, RetryBackOff, RetryPolicy, RouteAction

FAST = RetryBackOff(0.001, 0.002)


def _runtime(
    ports: tuple[int, ...] = (1, 2), *, breakers: CircuitBreakers | None = None, drop_ppm: int = 0
) -> ClusterRuntime:
    drops = (DropOverload("throttle", drop_ppm),) if drop_ppm else ()
    cla = ClusterLoadAssignment(
        "c",
        (LocalityEndpoints(Locality(), tuple(Endpoint("127.0.0.1", p) for p in ports)),),
        drops,
    )
    cluster = Cluster("c", circuit_breakers=breakers or CircuitBreakers())
    rt = ClusterRuntime("c", random.Random(1))
    rt.update(ClusterConfig("c", cluster, cla))
    return rt


def _plan(
    rt: ClusterRuntime,
    retry: RetryPolicy | None = None,
    *,
    deadline: float | None = None,
    hedge: HedgePolicy | None = None,
) -> Plan:
    decider = RetryDecider(retry) if retry is not None and retry.num_retries else None
    action = RouteAction(cluster="c")
    return Plan(
        None,  # type: ignore[arg-type]  # the engine never reads the route decision
        action,
        "c",
        rt,
        "/",
        None,
        "svc",
        None,
        deadline,
        retry,
        decider,
        hedge=hedge,
    )


def _attempts(plan: Plan) -> Attempts:
    return Attempts(plan, None, random.Random(3))  # type: ignore[arg-type]


class Scripted:
    """A driver whose answers are scripted: each ``send`` pops the next reply (or
    raises the next exception)."""

    def __init__(self, *answers: Reply | BaseException) -> None:
        self.answers = list(answers)
        self.sent: list[str] = []

    def send(self, t: Ticket) -> Reply:
        self.sent.append(t.address)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def start(self, t: Ticket) -> Any:
        raise AssertionError("not hedging")

    collect = start

    def discard(self, t: Ticket) -> None:
        return None

    def cancel(self, t: Ticket) -> None:
        return None


def _unavailable() -> Reply:
    return Reply(None, 503)


def _slots(rt: ClusterRuntime) -> tuple[int, int]:
    assert rt.breaker is not None
    return rt.breaker.active_requests, rt.breaker.active_retries


def test_drop_overloads_answer_locally_before_any_pick() -> None:
    rt = _runtime(drop_ppm=1_000_000)
    io = Scripted()
    result = run_sync(_attempts(_plan(rt)), io)
    assert isinstance(result, LocalReply) and result.flags == "DO"
    assert io.sent == [] and _slots(rt) == (0, 0)


def test_breaker_overflow_answers_locally() -> None:
    rt = _runtime(breakers=CircuitBreakers(max_requests=0))
    result = run_sync(_attempts(_plan(rt)), Scripted())
    assert isinstance(result, LocalReply) and result.flags == "UO"


def test_retry_refused_by_max_retries_is_the_upstreams_own_answer() -> None:
    rt = _runtime(breakers=CircuitBreakers(max_retries=0))
    retry = RetryPolicy(frozenset({"5xx"}), num_retries=3, back_off=FAST)
    first = _unavailable()
    io = Scripted(first)
    result = run_sync(_attempts(_plan(rt, retry)), io)
    assert isinstance(result, Ticket) and result.reply is first
    assert len(io.sent) == 1
    result.release()  # the driver gives the winner's slot back with its body
    assert _slots(rt) == (0, 0)
    assert rt.breaker is not None and rt.breaker.overflow.retries == 1


def test_retries_go_to_another_host_and_give_every_slot_back() -> None:
    rt = _runtime()
    retry = RetryPolicy(
        frozenset({"5xx"}),
        num_retries=2,
        back_off=FAST,
        retry_host_predicates=("previous_hosts",),
        host_selection_retry_max_attempts=5,
    )
    ok = Reply(None, 200)
    io = Scripted(_unavailable(), ok)
    result = run_sync(_attempts(_plan(rt, retry)), io)
    assert isinstance(result, Ticket) and result.reply is ok
    assert len(set(io.sent)) == 2  # the retry went elsewhere
    result.release()
    assert _slots(rt) == (0, 0)
    assert all(s.active_requests == 0 for s in rt.states.values())


@pytest.mark.parametrize("retry", [None, RetryPolicy(frozenset({"5xx"}), 2, back_off=FAST)])
def test_a_driver_error_gives_back_what_the_attempt_held(retry: RetryPolicy | None) -> None:
    rt = _runtime()
    with pytest.raises(KeyboardInterrupt):
        run_sync(_attempts(_plan(rt, retry)), Scripted(KeyboardInterrupt()))
    assert _slots(rt) == (0, 0)
    assert all(s.active_requests == 0 for s in rt.states.values())


def test_no_room_for_the_backoff_is_a_local_504_and_frees_the_retry_slot() -> None:
    rt = _runtime()
    retry = RetryPolicy(frozenset({"5xx"}), 3, back_off=RetryBackOff(5.0, 5.0))
    plan = _plan(rt, retry, deadline=time.monotonic() + 0.5)
    a = _attempts(plan)
    a.rng = random.Random(0)  # a back-off of several seconds, past the deadline
    result = run_sync(a, Scripted(_unavailable()))
    assert isinstance(result, LocalReply) and result.status == 504 and result.flags == "UT"
    assert _slots(rt) == (0, 0)


def test_one_retry_policy_classifies_http_statuses_and_grpc_codes() -> None:
    decider = RetryDecider(RetryPolicy(frozenset({"5xx", "unavailable"}), 1))
    assert decider.should_retry(Outcome.response(503)) == "5xx"
    assert decider.should_retry(Outcome.response(None, grpc_status=14)) == "unavailable"
    # A44: a gRPC status is not an HTTP one: "5xx" alone never retries a gRPC code.
    only_http = RetryDecider(RetryPolicy(frozenset({"5xx"}), 1))
    assert only_http.should_retry(Outcome.response(None, grpc_status=14)) is None
    assert only_http.should_retry(Outcome.failure(timeout=True)) == "5xx"  # per-try timeout


def test_hedging_keeps_the_first_attempt_and_cancels_the_hedge() -> None:
    rt = _runtime()
    retry = RetryPolicy(frozenset({"5xx"}), 1, per_try_timeout=0.01, back_off=FAST)
    a = _attempts(_plan(rt, retry, hedge=HedgePolicy(hedge_on_per_try_timeout=True)))
    assert a.hedging
    gen = steps(a)
    step = next(gen)
    assert isinstance(step, Launch)
    first = step.ticket
    launched = [first]
    deadline = time.monotonic() + 30
    # Nothing answers: the per-try timeout fires, and after the back-off a hedge starts.
    while len(launched) < 2:
        assert time.monotonic() < deadline
        if isinstance(step, Wait):
            assert step.timeout is not None  # it wakes for the timer, not only answers
            time.sleep(step.timeout)  # the driver waits for an answer that does not come
            step = gen.send([])
        else:  # a back-off to sleep, or the launch just recorded
            if isinstance(step, float):
                time.sleep(step)
            step = gen.send(None)
        if isinstance(step, Launch):
            launched.append(step.ticket)
    assert first.hedged and _slots(rt) == (1, 1)
    # The first attempt answers: it wins and the hedge in flight is abandoned.
    step = gen.send(None)
    assert isinstance(step, Wait)
    ok = Reply(None, 200)
    step = gen.send([(first, ok)])
    assert isinstance(step, Abandon) and step.tickets == (launched[1],)
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value is first and first.reply is ok
    first.release()
    assert _slots(rt) == (0, 0)


@pytest.mark.parametrize("is_retry", [False, True])
def test_admission_builds_the_common_ticket_as_the_constructor_does(is_retry: bool) -> None:
    """admit() builds a counted, untimed attempt's Ticket without calling its __init__
    (a frame per call); it must hold what Ticket(...) holds, and count the attempt."""
    from pymesh.call._admit import admit

    rt = _runtime((1,))
    breaker = rt.breaker
    ticket = admit(rt, None, random.Random(1), is_retry, breaker if is_retry else None)
    assert isinstance(ticket, Ticket)
    load = ticket.load
    assert load is not None and load.active_requests == 1
    built = Ticket(rt, ticket.endpoint, load, breaker, is_retry)
    assert load.active_requests == 2  # the constructor counts it the same way
    assert vars(ticket) == vars(built)


def _alone(plan: Plan, avoid: frozenset[str] = frozenset()) -> Ticket | LocalReply | None:
    return start_alone(plan, random.Random(3), avoid, plan.deadline, grpc=True)


def test_a_call_with_nothing_to_retry_or_steer_is_admitted_alone_as_attempts_would() -> None:
    """start_alone admits what Attempts.start admits for a first attempt (same pick
    from the same draws, same slot, same deadline), and the ticket's own record of the
    answer gives everything back."""
    deadline = time.monotonic() + 5
    rt = _runtime((1, 2, 3))
    t = _alone(_plan(rt, deadline=deadline))
    rt2 = _runtime((1, 2, 3))
    u = _attempts(_plan(rt2, deadline=deadline)).start()
    assert isinstance(t, Ticket) and isinstance(u, Ticket)
    assert t.address == u.address and t.deadline == u.deadline == deadline
    assert _slots(rt) == (1, 0) and t.load is not None and t.load.active_requests == 1
    t.answered(Reply(None, grpc_status=0))
    assert _slots(rt) == (0, 0) and t.load.active_requests == 0 and t.ended


@pytest.mark.parametrize(
    ("kind", "flag"), [("drop", "DO"), ("overflow", "UO")], ids=["drop", "overflow"]
)
def test_a_call_admitted_alone_is_refused_with_the_engines_local_answer(
    kind: str, flag: str
) -> None:
    if kind == "drop":
        rt = _runtime(drop_ppm=1_000_000)
    else:
        rt = _runtime(breakers=CircuitBreakers(max_requests=0))
    refused = _alone(_plan(rt))
    general = run_sync(_attempts(_plan(rt)), Scripted())
    assert isinstance(refused, LocalReply) and isinstance(general, LocalReply)
    assert (refused.flags, refused.status, refused.body) == (flag, general.status, general.body)
    assert _slots(rt) == (0, 0)


def test_a_call_that_needs_attempts_is_not_admitted_alone() -> None:
    rt = _runtime()
    retry = RetryPolicy(frozenset({"5xx"}), 1, back_off=FAST)
    assert _alone(_plan(rt, retry)) is None  # a retry policy: Attempts decides retries
    assert _alone(_plan(rt), avoid=frozenset({"127.0.0.1:1"})) is None  # steered picks
    assert _slots(rt) == (0, 0)  # nothing admitted: the general path may start over
    assert all(s.active_requests == 0 for s in rt.states.values())


def test_an_answer_recorded_alone_reaches_the_outlier_detector() -> None:
    """Ticket.answered(): with outlier detection, gRPC UNAVAILABLE counts against the
    endpoint as Attempts.settle would count it (A50: consecutive 5xx from gRPC codes)."""
    from pymesh.xds.resources.cluster import OutlierDetection

    cla = ClusterLoadAssignment(
        "c", (LocalityEndpoints(Locality(), (Endpoint("127.0.0.1", 1), Endpoint("127.0.0.1", 2))),)
    )
    detection = OutlierDetection(consecutive_5xx=2, max_ejection_percent=100)
    cluster = Cluster("c", outlier_detection=detection)
    rt = ClusterRuntime("c", random.Random(1))
    rt.update(ClusterConfig("c", cluster, cla))
    assert rt.outlier is not None
    plan = _plan(rt)
    ejected: list[str] = []
    for _ in range(20):
        t = _alone(plan)
        assert isinstance(t, Ticket)
        if t.address == "127.0.0.1:1":
            t.answered(Reply(None, grpc_status=14))
        else:
            t.answered(Reply(None, grpc_status=0))
        ejected = sorted(rt.outlier.ejected)
        if ejected:
            break
    assert ejected == ["127.0.0.1:1"]
