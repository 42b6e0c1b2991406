"""SDK tracer and meter providers with in-memory exporters, given to pymesh for one test.

They are handed to :func:`pymesh.telemetry.configure` rather than installed globally:
OpenTelemetry's global providers can be set once per process, and other tests must
keep running with telemetry off.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _otel_sdk import Otel
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pymesh import telemetry


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Otel(spans, reader, tracer_provider, meter_provider)
    finally:
        telemetry.configure()
        tracer_provider.shutdown()
        meter_provider.shutdown()
