"""Prometheus text exposition (format 0.0.4) of a mesh's own counters, for ``/stats``.

The exposition is ``prometheus_client``'s (names, ``_total`` suffixes, escaping, number
formatting): pymesh only supplies the samples, from the same reading as its
OpenTelemetry observable instruments (:func:`~pymesh.telemetry.collect`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pymesh.telemetry._collect import OBSERVED, collect

if TYPE_CHECKING:
    from pymesh._mesh import Mesh


def _name(otel_name: str) -> str:
    """OpenTelemetry's dotted name as a Prometheus name (dots become ``_``), as
    OpenTelemetry's Prometheus exporter spells it."""
    return otel_name.replace(".", "_")


class _MeshCollector:
    """A prometheus_client custom collector reading one mesh when scraped."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    def collect(self) -> Iterator[Metric]:
        data = collect([self._mesh])
        for spec in OBSERVED:
            series = sorted(data[spec.name].items())
            keys = sorted({k for attrs, _ in series for k, _v in attrs})
            family = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            # Counters: prometheus_client appends the ``_total`` suffix itself.
            metric = family(_name(spec.name), spec.description, labels=[_name(k) for k in keys])
            for attrs, value in series:
                values = dict(attrs)
                metric.add_metric([values.get(k, "") for k in keys], value)
            yield metric


def prometheus_text(mesh: Mesh) -> str:
    """Every observable pymesh metric of ``mesh`` in Prometheus text format (0.0.4).

    Counters get the ``_total`` suffix, as OpenTelemetry's Prometheus exporter does.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_MeshCollector(mesh))
    return generate_latest(registry).decode("utf-8")
