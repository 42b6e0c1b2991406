"""OpenTelemetry tracing and metrics for pymesh (no-op cost when no SDK is configured).

Spans and metrics for httpx requests (:class:`RequestObserver`) and gRPC calls
(:class:`RpcObserver`). pymesh uses the application's global TracerProvider,
MeterProvider and propagators; :func:`configure` can name other providers. See
``docs/observability.md`` for the span and metric reference.
"""

from pymesh.telemetry._collect import OBSERVED, MetricSpec, collect, register
from pymesh.telemetry._prometheus import prometheus_text
from pymesh.telemetry._providers import configure, instruments, tracer
from pymesh.telemetry._request import RequestObserver, observe_request
from pymesh.telemetry._rpc import RpcObserver, observe_rpc

__all__ = [
    "OBSERVED",
    "MetricSpec",
    "RequestObserver",
    "RpcObserver",
    "collect",
    "configure",
    "instruments",
    "observe_request",
    "observe_rpc",
    "prometheus_text",
    "register",
    "tracer",
]
