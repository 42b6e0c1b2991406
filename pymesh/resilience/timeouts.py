"""Request deadlines: the route's limits applied without ever extending the caller's.

All deadlines are absolute times on the caller's monotonic clock; timeouts are seconds.

HTTP (Envoy): the route ``timeout`` (None: none) and, when set, the route or HCM
``max_stream_duration`` both bound the request, as does the caller's own timeout.

gRPC (gRFC A31): ``RouteAction.timeout`` is not used, so a gRPC caller passes
``route_timeout=None``. ``grpc_timeout_header_max``, when present, replaces
``max_stream_duration`` as the cap; otherwise ``max_stream_duration`` (the route's, or
the HCM's as a fallback) is the cap. A cap of 0 means "no cap". The application deadline
always wins when shorter. For an HTTP request that carries a ``grpc-timeout`` header
(Envoy's grpc_timeout_header_max handling), pass it as ``grpc_timeout_header``: it is a
caller-side limit, like ``caller_timeout``.
"""

from __future__ import annotations

import re

__all__ = ["effective_deadline", "parse_grpc_timeout", "per_try_deadline"]

_GRPC_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_grpc_timeout(value: str) -> float | None:
    """Seconds from a ``grpc-timeout`` header value (1-8 digits and a unit of
    H, M, S, m, u, n), or None if it is malformed."""
    m = _GRPC_TIMEOUT.fullmatch(value.strip())
    if m is None:
        return None
    return int(m.group(1)) * _UNITS[m.group(2)]


def effective_deadline(
    now: float,
    route_timeout: float | None,
    caller_timeout: float | None,
    max_stream_duration: float | None = None,
    grpc_timeout_header: float | None = None,
    grpc_timeout_header_max: float | None = None,
) -> float | None:
    """The absolute deadline of a request started at ``now``, or None for no deadline.

    The result is the earliest of the caller's limits (``caller_timeout``,
    ``grpc_timeout_header``) and the route's caps (``route_timeout``, and
    ``grpc_timeout_header_max`` if given, else ``max_stream_duration``; caps of 0 are
    no caps), so it never lies beyond what the caller asked for.
    """
    limits: list[float] = []
    if caller_timeout is not None:
        limits.append(caller_timeout)
    if grpc_timeout_header is not None:
        limits.append(grpc_timeout_header)
    if route_timeout is not None and route_timeout > 0:
        limits.append(route_timeout)
    cap = grpc_timeout_header_max if grpc_timeout_header_max is not None else max_stream_duration
    if cap is not None and cap > 0:
        limits.append(cap)
    if not limits:
        return None
    return now + max(0.0, min(limits))


def per_try_deadline(
    now: float, deadline: float | None, per_try_timeout: float | None
) -> float | None:
    """The deadline of one attempt started at ``now``: the per-try timeout (when set and
    positive) bounded by the request's overall ``deadline``."""
    if per_try_timeout is None or per_try_timeout <= 0:
        return deadline
    attempt = now + per_try_timeout
    return attempt if deadline is None else min(attempt, deadline)
