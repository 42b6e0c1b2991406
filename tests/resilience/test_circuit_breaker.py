"""CircuitBreaker: limits, exact overflow counts (single thread), retry budget math."""

from __future__ import annotations

import pytest

from pymesh.resilience import CircuitBreaker
from pymesh.xds.resources.cluster import CircuitBreakers, RetryBudget


def test_requests_limit_and_overflow_count() -> None:
    cb = CircuitBreaker(CircuitBreakers(max_requests=3))
    assert [cb.try_acquire_request() for _ in range(5)] == [True, True, True, False, False]
    assert cb.active_requests == 3
    assert cb.overflow.requests == 2
    cb.release_request()
    assert cb.try_acquire_request()
    assert not cb.try_acquire_request()
    assert cb.overflow.requests == 3


def test_pending_limit_and_overflow_count() -> None:
    cb = CircuitBreaker(CircuitBreakers(max_pending_requests=2))
    assert [cb.try_acquire_pending() for _ in range(4)] == [True, True, False, False]
    assert cb.overflow.pending == 2
    cb.release_pending()
    cb.release_pending()
    assert cb.pending_requests == 0
    assert cb.try_acquire_pending()


def test_connection_limit_and_overflow_count() -> None:
    cb = CircuitBreaker(CircuitBreakers(max_connections=1))
    assert cb.try_acquire_connection()
    assert not cb.try_acquire_connection()
    assert cb.overflow.connections == 1
    cb.release_connection()
    assert cb.try_acquire_connection()
    assert cb.overflow.connections == 1


def test_max_retries_without_budget() -> None:
    cb = CircuitBreaker(CircuitBreakers(max_retries=3))
    assert cb.retry_limit == 3
    assert [cb.try_acquire_retry() for _ in range(5)] == [True, True, True, False, False]
    assert cb.overflow.retries == 2
    cb.release_retry()
    assert cb.active_retries == 2
    assert cb.try_acquire_retry()


def test_overflow_kinds_are_counted_separately() -> None:
    cb = CircuitBreaker(
        CircuitBreakers(max_requests=0, max_pending_requests=0, max_retries=0, max_connections=0)
    )
    for _ in range(4):
        cb.try_acquire_request()
    for _ in range(3):
        cb.try_acquire_pending()
    for _ in range(2):
        cb.try_acquire_retry()
    cb.try_acquire_connection()
    assert (cb.overflow.requests, cb.overflow.pending, cb.overflow.retries) == (4, 3, 2)
    assert cb.overflow.connections == 1


@pytest.mark.parametrize(
    ("percent", "min_conc", "active", "pending", "expected"),
    [
        (20.0, 3, 0, 0, 3),  # floor when idle
        (20.0, 3, 10, 0, 3),  # 2 < floor
        (20.0, 3, 100, 0, 20),
        (20.0, 3, 80, 20, 20),  # pending requests count too
        (25.0, 3, 100, 0, 25),
        (20.0, 3, 19, 0, 3),  # 3.8 truncated to 3
        (20.0, 3, 24, 0, 4),  # 4.8 truncated to 4
        (50.0, 0, 1, 0, 0),  # 0.5 truncated, floor 0
        (100.0, 1, 7, 3, 10),
    ],
)
def test_retry_budget_limit(
    percent: float, min_conc: int, active: int, pending: int, expected: int
) -> None:
    cb = CircuitBreaker(CircuitBreakers(max_retries=1, retry_budget=RetryBudget(percent, min_conc)))
    cb.active_requests = active
    cb.pending_requests = pending
    assert cb.retry_limit == expected


def test_retry_budget_replaces_max_retries() -> None:
    cb = CircuitBreaker(CircuitBreakers(max_retries=1, retry_budget=RetryBudget(20.0, 3)))
    for _ in range(50):
        assert cb.try_acquire_request()
    # budget 20% of 50 = 10 concurrent retries, though max_retries is 1.
    granted = [cb.try_acquire_retry() for _ in range(12)]
    assert granted == [True] * 10 + [False] * 2
    assert cb.overflow.retries == 2
    # Fewer active requests shrink the budget, down to the floor.
    for _ in range(45):
        cb.release_request()
    for _ in range(10):
        cb.release_retry()
    assert cb.retry_limit == 3
    assert [cb.try_acquire_retry() for _ in range(4)] == [True, True, True, False]


def test_repr_shows_live_state() -> None:
    cb = CircuitBreaker(CircuitBreakers())
    cb.try_acquire_request()
    assert "requests=1/1024" in repr(cb)


def test_an_endpoints_first_connection_is_opened_above_the_limit() -> None:
    # Envoy's tryCreateNewConnection: at the limit the overflow counts, but an endpoint
    # with no connection at all still gets one (counted), so it can serve its requests.
    cb = CircuitBreaker(CircuitBreakers(max_connections=1))
    assert cb.try_acquire_connection(first=True)
    assert cb.try_acquire_connection(first=True)
    assert (cb.active_connections, cb.overflow.connections) == (2, 1)
    assert not cb.try_acquire_connection()
    assert (cb.active_connections, cb.overflow.connections) == (2, 2)
