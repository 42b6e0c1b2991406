"""Prometheus text exposition (format 0.0.4) of a mesh's own counters, for ``/stats``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymesh.telemetry._collect import OBSERVED, collect

if TYPE_CHECKING:
    from pymesh._mesh import Mesh


def _name(otel_name: str) -> str:
    return otel_name.replace(".", "_")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(mesh: Mesh) -> str:
    """Every observable pymesh metric of ``mesh`` in Prometheus text format.

    Counters get the ``_total`` suffix, as OpenTelemetry's Prometheus exporter does.
    """
    data = collect([mesh])
    lines: list[str] = []
    for spec in OBSERVED:
        name = _name(spec.name) + ("_total" if spec.kind == "counter" else "")
        lines.append(f"# HELP {name} {spec.description}")
        lines.append(f"# TYPE {name} {spec.kind}")
        for attrs, value in sorted(data[spec.name].items()):
            labels = ",".join(f'{_name(k)}="{_escape(v)}"' for k, v in attrs)
            number = int(value) if float(value).is_integer() else value
            lines.append(f"{name}{{{labels}}} {number}" if labels else f"{name} {number}")
    return "\n".join(lines) + "\n"
