"""envoy.extensions.filters.http.fault.v3.HTTPFault → FaultConfig."""

from __future__ import annotations

from dataclasses import dataclass

from pymesh.xds.resources.matchers import FractionalPercent, HeaderMatcher


@dataclass(frozen=True, slots=True)
class FaultDelay:
    """Fixed delay (seconds) or header-controlled (``x-envoy-fault-delay-request``)."""

    percentage: FractionalPercent
    fixed_delay: float | None = None
    header_delay: bool = False


@dataclass(frozen=True, slots=True)
class FaultAbort:
    """Abort with an HTTP or gRPC status, or header-controlled
    (``x-envoy-fault-abort-request`` / ``x-envoy-fault-abort-grpc-request``)."""

    percentage: FractionalPercent
    http_status: int | None = None
    grpc_status: int | None = None
    header_abort: bool = False


@dataclass(frozen=True, slots=True)
class FaultConfig:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    headers: tuple[HeaderMatcher, ...] = ()
    max_active_faults: int | None = None
    upstream_cluster: str | None = None
