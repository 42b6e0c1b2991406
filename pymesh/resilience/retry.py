"""Retry decisions with Envoy's semantics and back-off (the loop is pymesh.call's).

:class:`RetryDecider` is built once per :class:`~pymesh.xds.resources.route.RetryPolicy`
(the conditions are precomputed into lookup tables) and is immutable, so one instance is
shared by every request on the route.

Conditions follow Envoy's ``x-envoy-retry-on`` / ``x-envoy-retry-grpc-on`` documentation
and its RetryStateImpl:

* ``5xx``: any 5xx response, and every failure without a response (connect failure,
  reset, refused stream, per-try timeout).
* ``gateway-error``: 502, 503 or 504, and (as ``5xx``) every failure without a response.
* ``reset``: any failure without a response (disconnect, reset, per-try timeout).
* ``reset-before-request``: a failure before the request was sent; pymesh only knows
  this for certain of a connect failure, so that is what it covers.
* ``connect-failure``: the connection could not be established (incl. connect timeout).
* ``refused-stream``: the upstream reset the stream with REFUSED_STREAM.
* ``retriable-4xx``: 409 only.
* ``retriable-status-codes``: a status in ``retriable_status_codes``.
* ``retriable-headers``: a response whose headers match any ``retriable_headers``.
* ``envoy-ratelimited``: a response carrying ``x-envoy-ratelimited``; without this
  condition such a response is never retried, whatever its status.
* gRPC: ``cancelled`` (1), ``deadline-exceeded`` (4), ``resource-exhausted`` (8),
  ``internal`` (13), ``unavailable`` (14) from the final ``grpc-status``.

The overall route timeout is never retried: the caller's deadline stops the loop.
"""

from __future__ import annotations

import datetime
import email.utils
import random
import time
from collections.abc import Mapping

from pymesh.resilience._headers import header_matches, headers_match
from pymesh.resilience.outcome import Outcome
from pymesh.xds.resources.route import RetryPolicy

__all__ = ["GRPC_RETRY_ON", "RetryDecider", "jittered_backoff"]

#: gRPC condition name → grpc-status code (x-envoy-retry-grpc-on).
GRPC_RETRY_ON: Mapping[str, int] = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}

_GATEWAY_ERRORS = (502, 503, 504)
# Conditions decided from a response (as opposed to a failure without one).
_RESPONSE_CONDITIONS = frozenset(
    {
        "5xx",
        "gateway-error",
        "retriable-4xx",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
    }
)


def _first(on: frozenset[str], candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        if name in on:
            return name
    return None


def jittered_backoff(
    attempt: int, base_interval: float, max_interval: float, rng: random.Random
) -> float:
    """Envoy's fully jittered exponential back-off (JitteredExponentialBackOffStrategy).

    Retry ``attempt`` (1 for the first retry) waits a uniform random time in
    ``[0, min(base_interval * 2**(attempt-1), max_interval))``.
    """
    n = max(attempt, 1) - 1
    # The interval doubles until it would pass the cap; past ~60 doublings it surely has.
    ceiling = max_interval if n >= 60 else min(base_interval * (1 << n), max_interval)
    return min(rng.random() * ceiling, max_interval)


class RetryDecider:
    """Decides whether an attempt's :class:`Outcome` is retried, and how long to wait.

    Immutable and cheap to consult: build once per RetryPolicy.
    """

    __slots__ = (
        "_grpc",
        "_on_connect_failure",
        "_on_refused",
        "_on_reset",
        "_ratelimited",
        "_retriable_headers",
        "_statuses",
        "needs_headers",
        "num_retries",
        "policy",
        "retry_on",
    )

    def __init__(self, policy: RetryPolicy) -> None:
        on = policy.retry_on
        self.policy = policy
        self.retry_on = on
        self.num_retries = policy.num_retries
        # Failures without a response: Envoy's wouldRetryFromReset checks reset first,
        # then 5xx/gateway-error, then the specific conditions.
        self._on_connect_failure = _first(
            on, ("reset", "reset-before-request", "5xx", "gateway-error", "connect-failure")
        )
        self._on_refused = _first(on, ("reset", "5xx", "gateway-error", "refused-stream"))
        self._on_reset = _first(on, ("reset", "5xx", "gateway-error"))
        self._ratelimited = "envoy-ratelimited" in on
        statuses: dict[int, str] = {}
        if "retriable-status-codes" in on:
            for code in policy.retriable_status_codes:
                statuses[code] = "retriable-status-codes"
        if "retriable-4xx" in on:
            statuses[409] = "retriable-4xx"
        if "gateway-error" in on:
            for code in _GATEWAY_ERRORS:
                statuses[code] = "gateway-error"
        if "5xx" in on:
            for code in range(500, 600):
                statuses[code] = "5xx"
        self._statuses = statuses
        self._retriable_headers = policy.retriable_headers if "retriable-headers" in on else ()
        self._grpc = {code: name for name, code in GRPC_RETRY_ON.items() if name in on}
        #: Whether decisions can depend on response headers, so the caller must put them
        #: in the Outcome: retriable-headers, rate-limit reset headers, and any
        #: response-status condition (``x-envoy-ratelimited`` vetoes those).
        self.needs_headers = (
            bool(self._retriable_headers)
            or policy.rate_limited_back_off is not None
            or not on.isdisjoint(_RESPONSE_CONDITIONS)
        )

    def __repr__(self) -> str:
        return f"RetryDecider(retry_on={sorted(self.retry_on)}, num_retries={self.num_retries})"

    def should_retry(self, outcome: Outcome) -> str | None:
        """The retry_on condition that makes ``outcome`` retriable, or None.

        This does not count attempts: the loop stops after ``num_retries`` retries.
        """
        if outcome.is_local_failure:
            if outcome.connect_failure:
                return self._on_connect_failure
            if outcome.refused_stream:
                return self._on_refused
            return self._on_reset
        headers = outcome.headers
        if headers is not None and "x-envoy-ratelimited" in headers:
            return "envoy-ratelimited" if self._ratelimited else None
        status = outcome.status
        if status is not None:
            reason = self._statuses.get(status)
            if reason is not None:
                return reason
        if self._retriable_headers:
            response_headers: Mapping[str, str] = headers if headers is not None else {}
            for m in self._retriable_headers:
                if header_matches(m, response_headers):
                    return "retriable-headers"
        if outcome.grpc_status is not None and self._grpc:
            return self._grpc.get(outcome.grpc_status)
        return None

    def request_is_retriable(self, request_headers: Mapping[str, str]) -> bool:
        """RetryPolicy.retriable_request_headers: the request may be retried only if it
        matches at least one of them (no matchers: every request may be retried)."""
        matchers = self.policy.retriable_request_headers
        if not matchers:
            return True
        return any(headers_match((m,), request_headers) for m in matchers)

    def backoff_delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt``, Envoy's full jitter.

        ``attempt`` is 1-based: 1 for the first retry (= the number of attempts already
        made). The ceiling is ``min(base * 2**(attempt-1), max)``; 0 is treated as 1.
        """
        b = self.policy.back_off
        return jittered_backoff(attempt, b.base_interval, b.max_interval, rng)

    def rate_limited_delay(
        self,
        headers: Mapping[str, str] | None,
        rng: random.Random,
        *,
        now: float | None = None,
    ) -> float | None:
        """The wait the upstream asked for through a reset header, or None.

        RetryPolicy.rate_limited_retry_back_off, as Envoy's ResetHeaderParserImpl:
        reset headers are tried in order; the first that parses and is not above
        ``max_interval`` wins. ``SECONDS``: an unsigned integer (absl::SimpleAtoi:
        surrounding whitespace and a ``+`` allowed). ``UNIX_TIMESTAMP``: integer seconds
        since the epoch, not before now; the wait is counted from the current whole
        second (``now``, wall-clock seconds), as Envoy's DateUtil::nowToSeconds. A
        ``Retry-After`` header configured as ``SECONDS`` also takes RFC 9110's other
        form, an HTTP-date, counted the same way (Envoy reads only the integer form and
        falls back to the exponential back-off for a date). As Envoy's
        JitteredLowerBoundBackOffStrategy, the wait is jittered upwards to
        ``[interval, 1.5 * interval)``. Intervals of 1 ms or less fall back to the
        exponential back-off (None).
        """
        rl = self.policy.rate_limited_back_off
        if rl is None or not headers:
            return None
        for name, fmt in rl.reset_headers:
            name = name.lower()
            raw = headers.get(name)
            if raw is None:
                continue
            interval = _reset_interval(name, fmt, raw, now)
            if interval is None or interval > rl.max_interval:
                continue
            if interval <= 0.001:
                return None
            return interval * (1.0 + rng.random() / 2.0)
        return None

    def next_delay(self, attempt: int, outcome: Outcome | None, rng: random.Random) -> float:
        """The wait before retry ``attempt``: the rate-limited wait when the response
        asked for one (and the policy has rate_limited_back_off), else the back-off."""
        if outcome is not None and outcome.headers:
            delay = self.rate_limited_delay(outcome.headers, rng)
            if delay is not None:
                return delay
        return self.backoff_delay(attempt, rng)


def _atoi(raw: str) -> int | None:
    """absl::SimpleAtoi into an unsigned integer: whitespace around, an optional ``+``."""
    text = raw.strip()
    if text.startswith("+"):
        text = text[1:]
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def _reset_interval(name: str, fmt: str, raw: str, now: float | None) -> float | None:
    """Seconds one reset header asks to wait (see RetryDecider.rate_limited_delay)."""
    value = _atoi(raw)
    if value is not None and fmt == "SECONDS":
        return float(value)
    if value is None:
        if fmt != "SECONDS" or name != "retry-after":
            return None
        try:  # RFC 9110 §10.2.3: Retry-After = HTTP-date / delay-seconds
            date = email.utils.parsedate_to_datetime(raw.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if date.tzinfo is None:  # "-0000": the date is UTC (RFC 5322 §3.3)
            date = date.replace(tzinfo=datetime.timezone.utc)
        value = int(date.timestamp())
    current = int(time.time() if now is None else now)
    if value < current:
        return None
    return float(value - current)
