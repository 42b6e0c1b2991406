"""The tenacity retry loop: attempt counts, deadline, back-off waits, results."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from pymesh.resilience import Outcome, RetryDecider, make_async_retrying, make_retrying
from pymesh.xds.resources.route import RetryBackOff, RetryPolicy


@dataclass
class Response:
    status: int
    outcome: Outcome


class UpstreamReset(Exception):
    def __init__(self) -> None:
        super().__init__("reset")
        self.outcome = Outcome.failure(reset=True)


class FakeClock:
    """Time that only moves when the loop sleeps (the clock is injected)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def policy(num_retries: int, base: float = 0.025, cap: float = 0.25) -> RetryDecider:
    return RetryDecider(
        RetryPolicy(
            retry_on=frozenset({"5xx"}), num_retries=num_retries, back_off=RetryBackOff(base, cap)
        )
    )


def responder(statuses: list[int]) -> tuple[list[int], Callable[[], Response]]:
    calls: list[int] = []

    def send() -> Response:
        status = statuses[min(len(calls), len(statuses) - 1)]
        calls.append(status)
        return Response(status, Outcome.response(status))

    return calls, send


@pytest.mark.parametrize("num_retries", [0, 1, 3, 5])
def test_stops_after_num_retries_plus_one(num_retries: int) -> None:
    clock = FakeClock()
    calls, send = responder([503])
    retrying = make_retrying(
        policy(num_retries), sleep=clock.sleep, clock=clock, rng=random.Random(1)
    )
    result = retrying(send)
    assert len(calls) == num_retries + 1
    # Exhausted: the last response is handed back, not a RetryError.
    assert isinstance(result, Response) and result.status == 503
    assert len(clock.sleeps) == num_retries


def test_success_ends_the_loop() -> None:
    clock = FakeClock()
    calls, send = responder([503, 502, 200])
    retrying = make_retrying(policy(5), sleep=clock.sleep, clock=clock, rng=random.Random(1))
    result = retrying(send)
    assert result.status == 200
    assert calls == [503, 502, 200]


def test_non_retriable_response_is_returned_at_once() -> None:
    clock = FakeClock()
    calls, send = responder([404])
    result = make_retrying(policy(3), sleep=clock.sleep, clock=clock)(send)
    assert result.status == 404
    assert calls == [404]
    assert clock.sleeps == []


def test_waits_follow_the_backoff_bounds() -> None:
    clock = FakeClock()
    _, send = responder([503])
    make_retrying(policy(4, 0.01, 1.0), sleep=clock.sleep, clock=clock, rng=random.Random(3))(send)
    assert len(clock.sleeps) == 4
    for n, slept in enumerate(clock.sleeps, start=1):
        assert 0.0 <= slept < 0.01 * 2 ** (n - 1)


def test_deadline_stops_retrying() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def slow_send() -> Response:
        calls.append(1)
        clock.now += 1.0  # each attempt takes a second
        return Response(503, Outcome.response(503))

    retrying = make_retrying(
        policy(10), deadline=clock.now + 3.5, sleep=clock.sleep, clock=clock, rng=random.Random(1)
    )
    result = retrying(slow_send)
    assert result.status == 503
    # Attempts end at 101, 102+w1, 103+w1+w2 (waits sum < 0.175 s), so three retries
    # start before 103.5; after the 4th attempt (ends past 104) the deadline stops it.
    assert len(calls) == 4
    assert clock.now < 104.2


def test_deadline_already_past_makes_a_single_attempt() -> None:
    clock = FakeClock()
    calls, send = responder([503])
    make_retrying(policy(5), deadline=clock.now, sleep=clock.sleep, clock=clock)(send)
    assert len(calls) == 1


def test_exceptions_with_outcome_are_retried_then_raised() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def send() -> Response:
        calls.append(1)
        raise UpstreamReset()

    retrying = make_retrying(policy(2), sleep=clock.sleep, clock=clock)
    with pytest.raises(UpstreamReset):
        retrying(send)
    assert len(calls) == 3


def test_other_exceptions_propagate_without_retry() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def send() -> Response:
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        make_retrying(policy(3), sleep=clock.sleep, clock=clock)(send)
    assert len(calls) == 1


def test_iteration_form_with_exceptions() -> None:
    clock = FakeClock()
    calls: list[int] = []
    for attempt in make_retrying(policy(2), sleep=clock.sleep, clock=clock):
        with attempt:
            calls.append(1)
            if len(calls) < 3:
                raise UpstreamReset()
    assert len(calls) == 3


def test_plain_outcome_results_work() -> None:
    clock = FakeClock()
    results = [Outcome.response(500), Outcome.response(201)]
    result = make_retrying(policy(3), sleep=clock.sleep, clock=clock)(lambda: results.pop(0))
    assert result.status == 201


async def test_async_stops_after_num_retries_plus_one() -> None:
    clock = FakeClock()
    calls: list[int] = []

    async def send() -> Response:
        calls.append(1)
        return Response(503, Outcome.response(503))

    retrying = make_async_retrying(policy(3), sleep=clock.asleep, clock=clock, rng=random.Random(2))
    result: Response = await retrying(send)
    assert result.status == 503
    assert len(calls) == 4
    assert len(clock.sleeps) == 3


async def test_async_deadline_and_success() -> None:
    clock = FakeClock()
    statuses = [503, 200]

    async def send() -> Response:
        status = statuses.pop(0)
        return Response(status, Outcome.response(status))

    retrying = make_async_retrying(
        policy(3), deadline=clock.now + 10, sleep=clock.asleep, clock=clock
    )
    assert (await retrying(send)).status == 200

    calls: list[int] = []

    async def failing() -> Response:
        calls.append(1)
        return Response(503, Outcome.response(503))

    past = make_async_retrying(policy(3), deadline=clock.now, sleep=clock.asleep, clock=clock)
    assert (await past(failing)).status == 503
    assert len(calls) == 1
