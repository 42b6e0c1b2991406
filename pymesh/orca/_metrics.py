"""What a server reports: process-wide metrics and the metrics of one call.

The model is grpc-go's ``orca`` package: a :class:`ServerMetricsRecorder` holds the
process's utilization, QPS, EPS and named metrics (the out-of-band stream sends it; per-call
reports start from it), and a :class:`CallMetricsRecorder` holds what the handler of one
call records (:func:`call_metrics_recorder` finds it from inside the handler). A per-call
report is the server's metrics overlaid with the call's: a value the handler set wins.

Setters are plain attribute writes and the maps are replaced, never mutated (copy on
write), so readers on other threads take no lock and never see a half-updated map.
"""

from __future__ import annotations

import base64
import contextvars
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from xds.data.orca.v3 import orca_load_report_pb2

from pymesh.errors import MeshError

__all__ = [
    "CallMetricsRecorder",
    "OrcaMetricError",
    "ServerMetrics",
    "ServerMetricsRecorder",
    "call_metrics_recorder",
    "server_metrics_recorder",
]

_EMPTY: Mapping[str, float] = MappingProxyType({})


class OrcaMetricError(MeshError, ValueError):
    """An ORCA setting is invalid: a metric value given to a recorder (NaN, infinite,
    negative, or a utilization above 1), a header format, a reporting interval. The
    message names it and what it must be. Also a ``ValueError``."""


@dataclass(frozen=True, slots=True)
class ServerMetrics:
    """One immutable set of ORCA metrics (``xds.data.orca.v3.OrcaLoadReport``).

    A value of ``-1.0`` means "not set" for the scalars (the wire has no presence bit, so
    an unset value is sent as 0, as in grpc-go). ``utilization``, ``request_cost`` and
    ``named_metrics`` are the report's three maps.
    """

    cpu_utilization: float = -1.0
    memory_utilization: float = -1.0
    application_utilization: float = -1.0
    qps: float = -1.0
    eps: float = -1.0
    utilization: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    request_cost: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    named_metrics: Mapping[str, float] = field(default_factory=lambda: _EMPTY)

    def is_empty(self) -> bool:
        """Whether nothing at all is set (then no report is sent)."""
        return (
            self.cpu_utilization < 0
            and self.memory_utilization < 0
            and self.application_utilization < 0
            and self.qps < 0
            and self.eps < 0
            and not self.utilization
            and not self.request_cost
            and not self.named_metrics
        )

    def overlay(self, other: ServerMetrics) -> ServerMetrics:
        """These metrics with every value ``other`` sets taking precedence."""
        if other.is_empty():
            return self
        if self.is_empty():
            return other

        def pick(a: float, b: float) -> float:
            return b if b >= 0 else a

        return ServerMetrics(
            pick(self.cpu_utilization, other.cpu_utilization),
            pick(self.memory_utilization, other.memory_utilization),
            pick(self.application_utilization, other.application_utilization),
            pick(self.qps, other.qps),
            pick(self.eps, other.eps),
            {**self.utilization, **other.utilization},
            {**self.request_cost, **other.request_cost},
            {**self.named_metrics, **other.named_metrics},
        )

    def to_proto(self) -> Any:
        """The ``xds.data.orca.v3.OrcaLoadReport`` message (unset values left at 0)."""
        report = orca_load_report_pb2.OrcaLoadReport()
        if self.cpu_utilization >= 0:
            report.cpu_utilization = self.cpu_utilization
        if self.memory_utilization >= 0:
            report.mem_utilization = self.memory_utilization
        if self.application_utilization >= 0:
            report.application_utilization = self.application_utilization
        if self.qps >= 0:
            report.rps_fractional = self.qps
        if self.eps >= 0:
            report.eps = self.eps
        report.utilization.update(self.utilization)
        report.request_cost.update(self.request_cost)
        report.named_metrics.update(self.named_metrics)
        return report

    def serialize(self) -> bytes:
        """The serialized ``OrcaLoadReport`` (the ``endpoint-load-metrics-bin`` value)."""
        return bytes(self.to_proto().SerializeToString())


def encode(metrics: ServerMetrics) -> tuple[bytes, str] | tuple[()]:
    """The serialized report and Envoy's ``BIN <base64>`` text form; ``()`` when empty."""
    if metrics.is_empty():
        return ()
    data = metrics.serialize()
    return data, "BIN " + base64.b64encode(data).decode("ascii")


def _check(name: str, value: float, upper: float | None = None) -> float:
    v = float(value)
    if math.isnan(v) or math.isinf(v) or v < 0 or (upper is not None and v > upper):
        bound = f"between 0 and {upper}" if upper is not None else "a finite number >= 0"
        raise OrcaMetricError(f"ORCA {name} must be {bound}, got {value!r}")
    return v


class _Recorder:
    """Setters shared by the server-wide and the per-call recorder."""

    __slots__ = (
        "_app",
        "_cost",
        "_cpu",
        "_encoded",
        "_eps",
        "_mem",
        "_named",
        "_qps",
        "_util",
    )

    def __setattr__(self, name: str, value: Any) -> None:
        # Any change drops the cached encoding (setters are rare, reports are per call).
        object.__setattr__(self, name, value)
        if name != "_encoded":
            object.__setattr__(self, "_encoded", None)

    def __init__(self) -> None:
        self._cpu = -1.0
        self._mem = -1.0
        self._app = -1.0
        self._qps = -1.0
        self._eps = -1.0
        self._util: Mapping[str, float] = _EMPTY
        self._cost: Mapping[str, float] = _EMPTY
        self._named: Mapping[str, float] = _EMPTY
        self._encoded: tuple[bytes, str] | tuple[()] | None = None

    def set_cpu_utilization(self, value: float) -> None:
        """CPU utilization: a fraction of the CPU available (>= 0; may exceed 1 when a
        process uses more than its share, as gRPC allows)."""
        self._cpu = _check("cpu_utilization", value)

    def set_memory_utilization(self, value: float) -> None:
        """Memory utilization, a fraction in [0, 1]."""
        self._mem = _check("mem_utilization", value, 1.0)

    def set_application_utilization(self, value: float) -> None:
        """The application's own utilization (>= 0). Weighted round robin prefers it to
        CPU utilization (gRFC A58)."""
        self._app = _check("application_utilization", value)

    def set_qps(self, value: float) -> None:
        """Queries per second the server is serving (``rps_fractional``)."""
        self._qps = _check("qps", value)

    def set_eps(self, value: float) -> None:
        """Errors per second (``eps``): weighted round robin penalises them."""
        self._eps = _check("eps", value)

    def set_utilization(self, name: str, value: float) -> None:
        """One entry of the report's ``utilization`` map (a fraction in [0, 1])."""
        self._util = {**self._util, name: _check(f"utilization[{name!r}]", value, 1.0)}

    def set_named_metric(self, name: str, value: float) -> None:
        """One entry of the report's ``named_metrics`` map (any finite value)."""
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            raise OrcaMetricError(f"ORCA named_metrics[{name!r}] must be finite, got {value!r}")
        self._named = {**self._named, name: v}

    def delete_cpu_utilization(self) -> None:
        self._cpu = -1.0

    def delete_memory_utilization(self) -> None:
        self._mem = -1.0

    def delete_application_utilization(self) -> None:
        self._app = -1.0

    def delete_qps(self) -> None:
        self._qps = -1.0

    def delete_eps(self) -> None:
        self._eps = -1.0

    def delete_utilization(self, name: str) -> None:
        self._util = {k: v for k, v in self._util.items() if k != name}

    def delete_named_metric(self, name: str) -> None:
        self._named = {k: v for k, v in self._named.items() if k != name}

    def empty(self) -> bool:
        """Whether nothing is recorded (cheaper than ``snapshot().is_empty()``)."""
        return (
            self._cpu < 0
            and self._mem < 0
            and self._app < 0
            and self._qps < 0
            and self._eps < 0
            and not self._util
            and not self._cost
            and not self._named
        )

    def encoded(self) -> tuple[bytes, str] | None:
        """The serialized report and its ``BIN <base64>`` text form, cached until the
        next change; None when nothing is recorded."""
        enc = self._encoded
        if enc is None:
            enc = self._encoded = encode(self.snapshot())
        return enc or None

    def snapshot(self) -> ServerMetrics:
        """The metrics recorded so far, as one immutable :class:`ServerMetrics`."""
        return ServerMetrics(
            self._cpu,
            self._mem,
            self._app,
            self._qps,
            self._eps,
            self._util,
            self._cost,
            self._named,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.snapshot()}>"


class ServerMetricsRecorder(_Recorder):
    """The process's (or one server's) load, as grpc-go's ``orca.ServerMetricsRecorder``.

    Sent on the out-of-band ``OpenRcaService`` stream and included in every per-call
    report (a call's own values take precedence). Use :func:`server_metrics_recorder` for
    the process-wide default, or make one per server and pass it to the interceptors,
    :class:`~pymesh.orca.OrcaService` and :class:`~pymesh.orca.OrcaMiddleware`.
    """

    __slots__ = ()


class CallMetricsRecorder(_Recorder):
    """The metrics of one call, as grpc-go's ``orca.CallMetricsRecorder``.

    Get it inside a handler with :func:`call_metrics_recorder`; the ORCA interceptors and
    middleware send what it holds (over the server's metrics) when the call ends.
    """

    __slots__ = ()

    def set_request_cost(self, name: str, value: float) -> None:
        """One entry of the report's ``request_cost`` map (the cost of this request)."""
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            raise OrcaMetricError(f"ORCA request_cost[{name!r}] must be finite, got {value!r}")
        self._cost = {**self._cost, name: v}


_DEFAULT = ServerMetricsRecorder()
_CALL: contextvars.ContextVar[CallMetricsRecorder | None] = contextvars.ContextVar(
    "pymesh_orca_call", default=None
)


def server_metrics_recorder() -> ServerMetricsRecorder:
    """The process-wide :class:`ServerMetricsRecorder` (the default of every ORCA
    interceptor, service and middleware)."""
    return _DEFAULT


def call_metrics_recorder() -> CallMetricsRecorder | None:
    """The recorder of the call being handled (inside a handler run by an ORCA
    interceptor or middleware), or None outside one. As grpc-go's
    ``CallMetricsRecorderFromContext``."""
    return _CALL.get()


def enter_call() -> tuple[CallMetricsRecorder, contextvars.Token[CallMetricsRecorder | None]]:
    """A fresh recorder made current (the interceptors' side; reset the token after)."""
    rec = CallMetricsRecorder()
    return rec, _CALL.set(rec)


def use_call(rec: CallMetricsRecorder) -> contextvars.Token[CallMetricsRecorder | None]:
    """Make ``rec`` current again (a streaming handler resumed on a worker thread)."""
    return _CALL.set(rec)


def leave_call(token: contextvars.Token[CallMetricsRecorder | None]) -> None:
    _CALL.reset(token)
