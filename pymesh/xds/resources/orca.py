"""ORCA load reports (``xds.data.orca.v3.OrcaLoadReport``) → a frozen :class:`LoadReport`.

A client reads them from a gRPC trailer / HTTP header (per call) or from the
``OpenRcaService`` stream (out of band). The forms are Envoy's
(``source/common/orca/orca_parser.cc``): ``endpoint-load-metrics-bin`` holds the serialized
report (base64 in HTTP); ``endpoint-load-metrics`` holds ``BIN <base64>``,
``TEXT name:value, ...`` or ``JSON <proto JSON>``. A report that does not parse is
ignored (None): a server's bad report must never fail the call that carried it.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]
from xds.data.orca.v3 import orca_load_report_pb2

__all__ = [
    "REPORT_BASE64",
    "REPORT_SERIALIZED",
    "REPORT_TEXT",
    "LoadReport",
    "from_message",
    "parse_header",
    "parse_raw",
    "parse_serialized",
]

#: How a raw report is encoded: a serialized message (gRPC ``-bin`` trailer), base64 of
#: one (HTTP ``endpoint-load-metrics-bin``), or Envoy's ``endpoint-load-metrics`` forms.
REPORT_SERIALIZED, REPORT_BASE64, REPORT_TEXT = 0, 1, 2

_EMPTY: Mapping[str, float] = MappingProxyType({})
_TEXT_FIELDS = {
    "cpu_utilization": "cpu_utilization",
    "mem_utilization": "mem_utilization",
    "application_utilization": "application_utilization",
    "eps": "eps",
    "rps_fractional": "qps",
}


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The parts of an OrcaLoadReport a client balances by (unset values are 0)."""

    cpu_utilization: float = 0.0
    mem_utilization: float = 0.0
    application_utilization: float = 0.0
    qps: float = 0.0  # rps_fractional
    eps: float = 0.0
    utilization: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    request_cost: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    named_metrics: Mapping[str, float] = field(default_factory=lambda: _EMPTY)

    def metric(self, name: str) -> list[float]:
        """The values a metric name selects, in Envoy's vocabulary: a field name
        (``cpu_utilization``, ``rps_fractional``, ...), or ``named_metrics.<key>`` /
        ``utilization.<key>`` / ``request_cost.<key>`` with ``*`` for every key."""
        for prefix, table in (
            ("named_metrics.", self.named_metrics),
            ("utilization.", self.utilization),
            ("request_cost.", self.request_cost),
        ):
            if name.startswith(prefix):
                key = name[len(prefix) :]
                if key == "*":
                    return list(table.values())
                value = table.get(key)
                return [] if value is None else [value]
        attr = _TEXT_FIELDS.get(name)
        return [] if attr is None else [float(getattr(self, attr))]


def from_message(msg: Any) -> LoadReport:
    """An ``OrcaLoadReport`` message → :class:`LoadReport`."""
    return LoadReport(
        msg.cpu_utilization,
        msg.mem_utilization,
        msg.application_utilization,
        msg.rps_fractional,
        msg.eps,
        dict(msg.utilization) if msg.utilization else _EMPTY,
        dict(msg.request_cost) if msg.request_cost else _EMPTY,
        dict(msg.named_metrics) if msg.named_metrics else _EMPTY,
    )


def parse_serialized(data: bytes) -> LoadReport | None:
    """A serialized report (the gRPC ``endpoint-load-metrics-bin`` trailer)."""
    try:
        return from_message(orca_load_report_pb2.OrcaLoadReport.FromString(data))
    except DecodeError:
        return None


def _text(body: str) -> LoadReport | None:
    values: dict[str, float] = {}
    named: dict[str, float] = {}
    for part in body.split(","):
        name, sep, raw = part.strip().partition(":")
        name, raw = name.strip(), raw.strip()
        if not sep or not name or not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            return None
        if math.isnan(value) or math.isinf(value):
            return None
        if name.startswith("named_metrics."):
            key = name[len("named_metrics.") :]
            if not key or key in named:
                return None
            named[key] = value
        elif name in _TEXT_FIELDS and _TEXT_FIELDS[name] not in values:
            values[_TEXT_FIELDS[name]] = value
        else:
            return None  # Envoy rejects unknown and duplicate names
    get = values.get
    return LoadReport(
        get("cpu_utilization", 0.0),
        get("mem_utilization", 0.0),
        get("application_utilization", 0.0),
        get("qps", 0.0),
        get("eps", 0.0),
        named_metrics=named or _EMPTY,
    )


def _b64(text: str) -> LoadReport | None:
    data = base64.b64decode(text.strip(), validate=True)
    return parse_serialized(data) if data else None  # Envoy rejects an empty value


def parse_header(value: str | bytes, binary: bool = False) -> LoadReport | None:
    """An HTTP header (or gRPC text trailer) value: ``endpoint-load-metrics-bin``
    (``binary``: base64 of the serialized report) or ``endpoint-load-metrics``
    (``BIN ...``, ``TEXT ...`` or ``JSON ...``). None when it does not parse."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    try:
        if binary:
            return _b64(text)
        if text.startswith("BIN "):
            return _b64(text[4:])
        if text.startswith("TEXT "):
            return _text(text[5:])
        if text.startswith("JSON "):
            msg = orca_load_report_pb2.OrcaLoadReport()
            json_format.Parse(text[5:], msg)
            return from_message(msg)
    except (binascii.Error, ValueError, json_format.ParseError):
        return None
    return None


def parse_raw(value: str | bytes, kind: int) -> LoadReport | None:
    """A raw report as a driver found it (``kind``: one of the ``REPORT_*`` encodings)."""
    if kind == REPORT_SERIALIZED and isinstance(value, bytes):
        return parse_serialized(value)
    return parse_header(value, kind == REPORT_BASE64)
