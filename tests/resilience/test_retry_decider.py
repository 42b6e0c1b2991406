"""RetryDecider: every retry_on condition, request matching, back-off, rate limits."""

from __future__ import annotations

import random

import pytest

from pymesh.resilience import Outcome, RetryDecider, jittered_backoff
from pymesh.xds.resources.matchers import HeaderMatcher, StringMatcher
from pymesh.xds.resources.route import RateLimitedRetryBackOff, RetryBackOff, RetryPolicy


def decider(*on: str, **kw: object) -> RetryDecider:
    return RetryDecider(RetryPolicy(retry_on=frozenset(on), **kw))  # type: ignore[arg-type]


def resp(
    status: int | None, headers: dict[str, str] | None = None, grpc: int | None = None
) -> Outcome:
    return Outcome.response(status, headers, grpc_status=grpc)


CONNECT = Outcome.failure(connect_failure=True)
RESET = Outcome.failure(reset=True)
TIMEOUT = Outcome.failure(timeout=True)
REFUSED = Outcome.failure(refused_stream=True)

RETRIABLE_HEADER = HeaderMatcher("x-retry-me", string_match=StringMatcher.make("exact", "yes"))

CASES: list[tuple[tuple[str, ...], Outcome, str | None]] = [
    # 5xx: any 5xx status and every failure without a response.
    (("5xx",), resp(500), "5xx"),
    (("5xx",), resp(503), "5xx"),
    (("5xx",), resp(599), "5xx"),
    (("5xx",), resp(499), None),
    (("5xx",), resp(200), None),
    (("5xx",), CONNECT, "5xx"),
    (("5xx",), RESET, "5xx"),
    (("5xx",), TIMEOUT, "5xx"),
    (("5xx",), REFUSED, "5xx"),
    # gateway-error: 502/503/504 and failures without a response.
    (("gateway-error",), resp(502), "gateway-error"),
    (("gateway-error",), resp(503), "gateway-error"),
    (("gateway-error",), resp(504), "gateway-error"),
    (("gateway-error",), resp(500), None),
    (("gateway-error",), resp(501), None),
    (("gateway-error",), CONNECT, "gateway-error"),
    (("gateway-error",), RESET, "gateway-error"),
    (("gateway-error",), TIMEOUT, "gateway-error"),
    # reset: every failure without a response, never a response.
    (("reset",), RESET, "reset"),
    (("reset",), CONNECT, "reset"),
    (("reset",), TIMEOUT, "reset"),
    (("reset",), REFUSED, "reset"),
    (("reset",), resp(503), None),
    # reset-before-request: only what certainly happened before sending.
    (("reset-before-request",), CONNECT, "reset-before-request"),
    (("reset-before-request",), RESET, None),
    (("reset-before-request",), TIMEOUT, None),
    # connect-failure.
    (("connect-failure",), CONNECT, "connect-failure"),
    (("connect-failure",), RESET, None),
    (("connect-failure",), TIMEOUT, None),
    (("connect-failure",), resp(503), None),
    # refused-stream.
    (("refused-stream",), REFUSED, "refused-stream"),
    (("refused-stream",), RESET, None),
    (("refused-stream",), CONNECT, None),
    # retriable-4xx: 409 only.
    (("retriable-4xx",), resp(409), "retriable-4xx"),
    (("retriable-4xx",), resp(429), None),
    (("retriable-4xx",), resp(400), None),
    (("retriable-4xx",), RESET, None),
    # retriable-headers (matchers on response headers).
    (("retriable-headers",), resp(200, {"x-retry-me": "yes"}), "retriable-headers"),
    (("retriable-headers",), resp(200, {"x-retry-me": "no"}), None),
    (("retriable-headers",), resp(200, {}), None),
    (("retriable-headers",), resp(200), None),
    # envoy-ratelimited: retried only with the condition, and never otherwise.
    (("envoy-ratelimited",), resp(429, {"x-envoy-ratelimited": "true"}), "envoy-ratelimited"),
    (("5xx",), resp(503, {"x-envoy-ratelimited": "true"}), None),
    (("envoy-ratelimited",), resp(429), None),
    # gRPC conditions from grpc-status.
    (("cancelled",), resp(200, grpc=1), "cancelled"),
    (("deadline-exceeded",), resp(200, grpc=4), "deadline-exceeded"),
    (("resource-exhausted",), resp(200, grpc=8), "resource-exhausted"),
    (("internal",), resp(200, grpc=13), "internal"),
    (("unavailable",), resp(200, grpc=14), "unavailable"),
    (("unavailable",), resp(200, grpc=13), None),
    (("unavailable",), resp(200, grpc=0), None),
    (
        ("cancelled", "deadline-exceeded", "internal", "resource-exhausted"),
        resp(200, grpc=14),
        None,
    ),
    # gRPC errors are not HTTP 5xx: "5xx" alone does not retry them.
    (("5xx",), resp(200, grpc=14), None),
    # Nothing configured: nothing retried.
    ((), resp(503), None),
    ((), RESET, None),
    # Several conditions: the reason names one that matched.
    (("5xx", "gateway-error"), resp(500), "5xx"),
    (("connect-failure", "refused-stream"), CONNECT, "connect-failure"),
    (("connect-failure", "refused-stream"), REFUSED, "refused-stream"),
    (("unavailable", "retriable-4xx"), resp(409), "retriable-4xx"),
]


@pytest.mark.parametrize(("on", "outcome", "expected"), CASES)
def test_retry_on_conditions(on: tuple[str, ...], outcome: Outcome, expected: str | None) -> None:
    d = decider(*on, retriable_headers=(RETRIABLE_HEADER,))
    assert d.should_retry(outcome) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [(418, "retriable-status-codes"), (429, "retriable-status-codes"), (503, None), (200, None)],
)
def test_retriable_status_codes(code: int, expected: str | None) -> None:
    d = decider("retriable-status-codes", retriable_status_codes=frozenset({418, 429}))
    assert d.should_retry(resp(code)) == expected


def test_retriable_status_codes_need_the_condition() -> None:
    d = decider("5xx", retriable_status_codes=frozenset({418}))
    assert d.should_retry(resp(418)) is None


def test_retriable_headers_need_the_condition() -> None:
    d = decider("5xx", retriable_headers=(RETRIABLE_HEADER,))
    assert d.should_retry(resp(200, {"x-retry-me": "yes"})) is None


def test_retriable_headers_inverted_matcher_matches_absent_header() -> None:
    inverted = HeaderMatcher("x-ok", present_match=True, invert_match=True)
    d = decider("retriable-headers", retriable_headers=(inverted,))
    assert d.should_retry(resp(200, {})) == "retriable-headers"
    assert d.should_retry(resp(200, {"x-ok": "1"})) is None


def test_request_is_retriable() -> None:
    assert decider("5xx").request_is_retriable({})
    only_idempotent = HeaderMatcher(
        ":method", string_match=StringMatcher.make("safe_regex", "GET|HEAD|PUT")
    )
    canary = HeaderMatcher("x-canary", present_match=True)
    d = decider("5xx", retriable_request_headers=(only_idempotent, canary))
    assert d.request_is_retriable({":method": "GET"})
    assert d.request_is_retriable({":method": "POST", "x-canary": "1"})
    assert not d.request_is_retriable({":method": "POST"})
    assert not d.request_is_retriable({})


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 8, 64, 200])
def test_backoff_bounds(attempt: int) -> None:
    base, cap = 0.025, 0.25
    ceiling = min(base * 2 ** (attempt - 1), cap) if attempt < 60 else cap
    rng = random.Random(1234 + attempt)
    d = decider("5xx", back_off=RetryBackOff(base, cap))
    samples = [d.backoff_delay(attempt, rng) for _ in range(2000)]
    assert all(0.0 <= s < ceiling for s in samples)
    # Full jitter: the whole range is used, not just its top or bottom.
    assert min(samples) < 0.05 * ceiling
    assert max(samples) > 0.95 * ceiling


def test_backoff_doubles_until_the_cap() -> None:
    rng = random.Random(7)
    ceilings = []
    for attempt in range(1, 7):
        ceilings.append(max(jittered_backoff(attempt, 0.01, 0.05, rng) for _ in range(3000)))
    # [0,10ms), [0,20ms), [0,40ms), then capped at 50 ms.
    assert 0.0095 < ceilings[0] < 0.01
    assert 0.019 < ceilings[1] < 0.02
    assert 0.038 < ceilings[2] < 0.04
    assert all(0.0475 < c < 0.05 for c in ceilings[3:])


def test_backoff_is_deterministic_with_a_seed() -> None:
    d = decider("5xx")
    a = [d.backoff_delay(n, random.Random(99)) for n in range(1, 5)]
    b = [d.backoff_delay(n, random.Random(99)) for n in range(1, 5)]
    assert a == b


RL = RateLimitedRetryBackOff(
    reset_headers=(("Retry-After", "SECONDS"), ("X-RateLimit-Reset", "UNIX_TIMESTAMP")),
    max_interval=60.0,
)


def test_rate_limited_seconds_header() -> None:
    d = decider("retriable-status-codes", rate_limited_back_off=RL)
    rng = random.Random(5)
    for _ in range(200):
        delay = d.rate_limited_delay({"retry-after": "4"}, rng)
        assert delay is not None
        assert 4.0 <= delay < 6.0


def test_rate_limited_unix_timestamp_header() -> None:
    d = decider("retriable-status-codes", rate_limited_back_off=RL)
    rng = random.Random(5)
    delay = d.rate_limited_delay({"x-ratelimit-reset": "1000010"}, rng, now=1_000_000.0)
    assert delay is not None
    assert 10.0 <= delay < 15.0
    # A reset time in the past is ignored.
    assert d.rate_limited_delay({"x-ratelimit-reset": "999990"}, rng, now=1_000_000.0) is None


def test_rate_limited_skips_invalid_and_too_long_headers() -> None:
    d = decider("retriable-status-codes", rate_limited_back_off=RL)
    rng = random.Random(5)
    # Too long (> max_interval 60 s): discarded, the next header is used.
    delay = d.rate_limited_delay(
        {"retry-after": "3600", "x-ratelimit-reset": "1000002"}, rng, now=1_000_000.0
    )
    assert delay is not None and 2.0 <= delay < 3.0
    assert d.rate_limited_delay({"retry-after": "soon"}, rng) is None
    assert d.rate_limited_delay({"retry-after": "-3"}, rng) is None
    assert d.rate_limited_delay({"retry-after": "0"}, rng) is None
    assert d.rate_limited_delay({}, rng) is None


def test_rate_limited_integer_forms_as_envoy_simple_atoi() -> None:
    d = decider("retriable-status-codes", rate_limited_back_off=RL)
    rng = random.Random(5)
    for raw in (" 4 ", "+4", "4"):
        delay = d.rate_limited_delay({"retry-after": raw}, rng)
        assert delay is not None and 4.0 <= delay < 6.0, raw
    for raw in ("4.5", "4s", "0x4", ""):
        assert d.rate_limited_delay({"retry-after": raw}, rng) is None, raw
    # UNIX_TIMESTAMP counts from the current whole second (Envoy's nowToSeconds).
    delay = d.rate_limited_delay({"x-ratelimit-reset": "1000010"}, rng, now=1_000_000.9)
    assert delay is not None and 10.0 <= delay < 15.0


def test_retry_after_http_date() -> None:
    # RFC 9110: Retry-After is delay-seconds or an HTTP-date (IMF-fixdate, or the
    # obsolete RFC 850 / asctime forms); a date is counted from the current second.
    d = decider("retriable-status-codes", rate_limited_back_off=RL)
    rng = random.Random(5)
    now = 1_000_000.4  # Mon, 12 Jan 1970 13:46:40 GMT
    for raw in (
        "Mon, 12 Jan 1970 13:46:47 GMT",
        "Monday, 12-Jan-70 13:46:47 GMT",
        "Mon Jan 12 13:46:47 1970",
    ):
        delay = d.rate_limited_delay({"retry-after": raw}, rng, now=now)
        assert delay is not None and 7.0 <= delay < 10.5, raw
    # In the past, not a date, or further than max_interval (60 s): not used.
    assert (
        d.rate_limited_delay({"retry-after": "Mon, 12 Jan 1970 13:46:00 GMT"}, rng, now=now) is None
    )
    assert d.rate_limited_delay({"retry-after": "Mon, 99 Foo 1970"}, rng, now=now) is None
    assert (
        d.rate_limited_delay({"retry-after": "Mon, 12 Jan 1970 14:46:40 GMT"}, rng, now=now) is None
    )
    # Only a Retry-After header takes a date; another SECONDS header must be an integer.
    other = RateLimitedRetryBackOff(reset_headers=(("x-wait", "SECONDS"),), max_interval=60.0)
    d2 = decider("retriable-status-codes", rate_limited_back_off=other)
    assert d2.rate_limited_delay({"x-wait": "Mon, 12 Jan 1970 13:46:47 GMT"}, rng, now=now) is None


def test_next_delay_prefers_rate_limit_headers() -> None:
    with_rl = decider("retriable-status-codes", rate_limited_back_off=RL)
    without = decider("retriable-status-codes")
    limited = resp(429, {"retry-after": "2"})
    rng = random.Random(11)
    assert 2.0 <= with_rl.next_delay(1, limited, rng) < 3.0
    assert 0.0 <= without.next_delay(1, limited, rng) < 0.025
    assert 0.0 <= with_rl.next_delay(1, resp(429), rng) < 0.025


@pytest.mark.parametrize(
    ("on", "kw", "expected"),
    [
        (("reset", "connect-failure"), {}, False),
        (("unavailable", "cancelled"), {}, False),
        (("5xx",), {}, True),
        (("retriable-status-codes",), {}, True),
        (("retriable-headers",), {}, True),
        (("reset",), {"rate_limited_back_off": RL}, True),
    ],
)
def test_needs_headers(on: tuple[str, ...], kw: dict[str, object], expected: bool) -> None:
    assert decider(*on, **kw).needs_headers is expected
