"""pymesh's OpenTelemetry instruments (meter ``pymesh``).

Synchronous instruments are recorded by the call observers; observable ones read
the live meshes' own counters (:mod:`pymesh.telemetry._collect`) at collection time,
so the request path never touches them. HTTP and mesh-wide names follow gRPC's OTel
metrics (gRFC A66, A78) where they overlap, with ``pymesh.`` in place of ``grpc.``;
gRPC channels record A66's client metrics under A66's own ``grpc.client.*`` names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation

from pymesh.telemetry._collect import OBSERVED, MetricSpec, collect, live_meshes
from pymesh.xds.resources._warnings import counts

#: Seconds: fine buckets for in-cluster latencies (gRFC A66's boundaries, trimmed).
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class CallInstruments:
    """One protocol's call and attempt instruments (``calls`` None: no call counter)."""

    __slots__ = ("attempt_duration", "attempts", "call_duration", "calls")

    def __init__(
        self,
        calls: Counter | None,
        call_duration: Histogram,
        attempts: Counter,
        attempt_duration: Histogram,
    ) -> None:
        self.calls = calls
        self.call_duration = call_duration
        self.attempts = attempts
        self.attempt_duration = attempt_duration


class Instruments:
    """The instruments of one meter (one set per meter provider).

    ``http``: pymesh's request metrics for httpx; ``grpc``: gRFC A66's client metrics
    under their own names (``grpc.client.*``), so dashboards built for gRPC's OpenTelemetry
    plugin work for pymesh channels; ``retries`` is shared by both.
    """

    __slots__ = ("grpc", "http", "rbac_denied", "retries")

    def __init__(self, meter: Meter) -> None:
        self.http = CallInstruments(
            meter.create_counter(
                "pymesh.client.requests", "{request}", "Logical requests sent through the mesh."
            ),
            meter.create_histogram(
                "pymesh.client.request.duration",
                "s",
                "Time from routing a request to its response headers (retries included).",
                explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
            ),
            meter.create_counter(
                "pymesh.client.attempt.started", "{attempt}", "Attempts sent upstream."
            ),
            meter.create_histogram(
                "pymesh.client.attempt.duration",
                "s",
                "Time of one attempt to its response headers or failure.",
                explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
            ),
        )
        self.grpc = CallInstruments(
            None,  # A66 has no client call counter: the duration histogram counts calls
            meter.create_histogram(
                "grpc.client.call.duration",
                "s",
                "End-to-end time of a gRPC call through the mesh (retries included).",
                explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
            ),
            meter.create_counter(
                "grpc.client.attempt.started", "{attempt}", "gRPC call attempts started."
            ),
            meter.create_histogram(
                "grpc.client.attempt.duration",
                "s",
                "Time of one gRPC call attempt, endpoint pick included, to its status.",
                explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
            ),
        )
        self.retries = meter.create_counter(
            "pymesh.client.retries", "{retry}", "Retries decided, by retry_on reason."
        )
        self.rbac_denied = meter.create_counter(
            RBAC_DENIED,
            "{request}",
            "Requests and calls a pymesh server's RBAC filter denied (gRFC A41), by "
            "protocol, filter, action and matching policy.",
        )
        meter.create_observable_counter(
            UNSUPPORTED_FIELDS,
            [_observe_unsupported_fields],
            "{warning}",
            "Warnings for set-but-unsupported xDS fields (one per accepted resource version "
            "carrying the field), by resource type and field path.",
        )
        for spec in OBSERVED:
            callback = _callback(spec)
            if spec.kind == "counter":
                meter.create_observable_counter(spec.name, [callback], spec.unit, spec.description)
            else:
                meter.create_observable_gauge(spec.name, [callback], spec.unit, spec.description)


#: Denials by the server-side RBAC filters (pymesh.security._rbac).
RBAC_DENIED = "pymesh.server.rbac.denied"

#: The counted warnings of the xDS resource parsers (pymesh.xds.resources._warnings).
UNSUPPORTED_FIELDS = "pymesh.xds_client.unsupported_fields"


def _observe_unsupported_fields(_options: CallbackOptions) -> Iterable[Observation]:
    # Process-wide: the counts outlive a closed mesh, as a counter must never go down.
    return [
        Observation(n, {"pymesh.xds.resource_type": kind, "pymesh.xds.field": field})
        for (kind, field), n in sorted(counts().items())
    ]


def _callback(spec: MetricSpec) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        series = collect(live_meshes())[spec.name]
        return [Observation(value, dict(attrs)) for attrs, value in series.items()]

    return observe
