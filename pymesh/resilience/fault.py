"""Envoy's HTTP fault filter (envoy.extensions.filters.http.fault.v3.HTTPFault).

:class:`FaultInjector` decides per request whether to delay and/or abort it:

* the fault applies only if ``upstream_cluster`` (when set) is the routed cluster and
  every ``headers`` matcher matches;
* the delay is the fixed delay, or with ``header_delay`` the integer milliseconds in
  ``x-envoy-fault-delay-request`` (absent or invalid: no delay; 0 ms: no delay);
* the abort is the fixed HTTP/gRPC status, or with ``header_abort`` the
  ``x-envoy-fault-abort-request`` HTTP status (used only within [200, 600)) or else the
  ``x-envoy-fault-abort-grpc-request`` gRPC status;
* for header-controlled faults, ``x-envoy-fault-delay-request-percentage`` and
  ``x-envoy-fault-abort-request-percentage`` replace the numerator of the configured
  percentage (capped by it; same denominator);
* a percentage is applied as Envoy's runtime does: ``random % denominator < numerator``.
  Delay and abort are rolled independently (Envoy draws one random value for each).
* ``max_active_faults``: while that many faulted requests are in flight, no new fault
  is injected (counted in :attr:`FaultInjector.overflow`).

The delay comes first; the abort (if any) is applied after it, as Envoy does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pymesh.resilience._headers import headers_match
from pymesh.xds.resources.fault import FaultConfig
from pymesh.xds.resources.matchers import FractionalPercent

__all__ = [
    "ABORT_GRPC_HEADER",
    "ABORT_HEADER",
    "ABORT_PERCENTAGE_HEADER",
    "DELAY_HEADER",
    "DELAY_PERCENTAGE_HEADER",
    "NO_FAULT",
    "FaultDecision",
    "FaultInjector",
]

DELAY_HEADER = "x-envoy-fault-delay-request"
DELAY_PERCENTAGE_HEADER = "x-envoy-fault-delay-request-percentage"
ABORT_HEADER = "x-envoy-fault-abort-request"
ABORT_GRPC_HEADER = "x-envoy-fault-abort-grpc-request"
ABORT_PERCENTAGE_HEADER = "x-envoy-fault-abort-request-percentage"


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What to do to one request.

    ``delay`` in seconds. At most one of ``abort_http`` and ``abort_grpc`` is set: a
    gRPC abort is a gRPC status (Envoy answers it with HTTP 200 and ``grpc-status``).
    """

    delay: float | None = None
    abort_http: int | None = None
    abort_grpc: int | None = None

    @property
    def is_fault(self) -> bool:
        return self.delay is not None or self.abort_http is not None or self.abort_grpc is not None


NO_FAULT = FaultDecision()


def _uint(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _mix(value: int) -> int:
    """splitmix64 finaliser: a second, independent-looking random value from the first."""
    z = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def _enabled(percent: FractionalPercent, random_value: int) -> bool:
    return random_value % percent.denominator < percent.numerator


def _header_percent(
    configured: FractionalPercent, headers: Mapping[str, str], name: str
) -> FractionalPercent:
    numerator = _uint(headers.get(name))
    if numerator is None:
        return configured
    return FractionalPercent(min(numerator, configured.numerator), configured.denominator)


class FaultInjector:
    """Fault decisions for one fault filter config (listener-level or a route override).

    ``active``/``overflow`` are approximate lock-free counters (see budget.py).
    """

    __slots__ = ("active", "config", "overflow")

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self.active = 0
        self.overflow = 0

    def __repr__(self) -> str:
        return f"FaultInjector(active={self.active}, config={self.config!r})"

    def decide(
        self,
        headers: Mapping[str, str],
        random_value: int,
        *,
        cluster: str | None = None,
        abort_random_value: int | None = None,
    ) -> FaultDecision:
        """The fault for a request with ``headers`` (lower-case names) routed to
        ``cluster``.

        ``random_value`` (a non-negative int, e.g. ``rng.getrandbits(64)``) rolls the
        delay percentage; ``abort_random_value`` rolls the abort percentage and is
        derived from ``random_value`` when omitted. Call :meth:`enter` when a fault is
        applied and :meth:`exit` when that request ends.
        """
        cfg = self.config
        if cfg.upstream_cluster is not None and cluster != cfg.upstream_cluster:
            return NO_FAULT
        if cfg.headers and not headers_match(cfg.headers, headers):
            return NO_FAULT
        delay = self._delay(headers, random_value)
        abort_value = _mix(random_value) if abort_random_value is None else abort_random_value
        abort_http, abort_grpc = self._abort(headers, abort_value)
        if delay is None and abort_http is None and abort_grpc is None:
            return NO_FAULT
        limit = cfg.max_active_faults
        if limit is not None and self.active >= limit:
            self.overflow += 1
            return NO_FAULT
        return FaultDecision(delay, abort_http, abort_grpc)

    def _delay(self, headers: Mapping[str, str], random_value: int) -> float | None:
        d = self.config.delay
        if d is None:
            return None
        if d.header_delay:
            percent = _header_percent(d.percentage, headers, DELAY_PERCENTAGE_HEADER)
            if not _enabled(percent, random_value):
                return None
            ms = _uint(headers.get(DELAY_HEADER))
            return ms / 1000.0 if ms else None
        if not _enabled(d.percentage, random_value) or not d.fixed_delay:
            return None
        return d.fixed_delay

    def _abort(
        self, headers: Mapping[str, str], random_value: int
    ) -> tuple[int | None, int | None]:
        a = self.config.abort
        if a is None:
            return None, None
        if a.header_abort:
            percent = _header_percent(a.percentage, headers, ABORT_PERCENTAGE_HEADER)
            if not _enabled(percent, random_value):
                return None, None
            http = _uint(headers.get(ABORT_HEADER))
            if http is not None and 200 <= http < 600:
                return http, None
            return None, _uint(headers.get(ABORT_GRPC_HEADER))
        if not _enabled(a.percentage, random_value):
            return None, None
        if a.http_status is not None:
            return a.http_status, None
        return None, a.grpc_status

    def enter(self) -> None:
        """A faulted request started (counts toward max_active_faults)."""
        self.active += 1

    def exit(self) -> None:
        """A faulted request ended."""
        self.active -= 1
