"""ORCA for HTTP servers: Envoy's ``endpoint-load-metrics`` response header.

Envoy (``source/common/orca/orca_parser.cc``) reads one of two headers: the legacy
``endpoint-load-metrics-bin`` (base64 of a serialized ``OrcaLoadReport``), or
``endpoint-load-metrics`` whose value starts with its format: ``BIN <base64>``,
``TEXT name:value, ...`` (names ``cpu_utilization``, ``mem_utilization``,
``application_utilization``, ``eps``, ``rps_fractional`` and ``named_metrics.<name>``) or
``JSON <the report in proto JSON>``. :func:`load_metrics_header` writes the second form;
pymesh's client reads all of them, as Envoy.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Generic, Literal, TypeVar

from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]

from pymesh.orca._grpc import ORCA_HEADER
from pymesh.orca._metrics import (
    OrcaMetricError,
    ServerMetrics,
    ServerMetricsRecorder,
    enter_call,
    leave_call,
    server_metrics_recorder,
)

__all__ = [
    "ORCA_HEADER",
    "HeaderFormat",
    "OrcaMiddleware",
    "OrcaWsgiMiddleware",
    "load_metrics_header",
]

HeaderFormat = Literal["BIN", "TEXT", "JSON"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _text(metrics: ServerMetrics) -> str:
    parts = []
    for name, value in (
        ("cpu_utilization", metrics.cpu_utilization),
        ("mem_utilization", metrics.memory_utilization),
        ("application_utilization", metrics.application_utilization),
        ("rps_fractional", metrics.qps),
        ("eps", metrics.eps),
    ):
        if value >= 0:
            parts.append(f"{name}:{value!r}")
    parts.extend(f"named_metrics.{k}:{v!r}" for k, v in metrics.named_metrics.items())
    return "TEXT " + ", ".join(parts)


def load_metrics_header(metrics: ServerMetrics, fmt: HeaderFormat = "BIN") -> str | None:
    """The ``endpoint-load-metrics`` header value for ``metrics`` in format ``fmt``, or
    None when nothing is set. ``TEXT`` has no syntax for the ``utilization`` and
    ``request_cost`` maps (Envoy's parser): use ``BIN`` or ``JSON`` for those."""
    if metrics.is_empty():
        return None
    if fmt == "BIN":
        return "BIN " + base64.b64encode(metrics.serialize()).decode("ascii")
    if fmt == "TEXT":
        return _text(metrics)
    if fmt == "JSON":
        body = json_format.MessageToJson(metrics.to_proto(), indent=None)
        return "JSON " + str(body)
    raise _unknown_format(fmt)


def _unknown_format(fmt: str) -> OrcaMetricError:
    return OrcaMetricError(f"unknown ORCA header format {fmt!r}; use BIN, TEXT or JSON")


App = TypeVar("App")


class _Reporting(Generic[App]):
    """What both middlewares share: the app, the server's recorder and the format."""

    def __init__(
        self,
        app: App,
        recorder: ServerMetricsRecorder | None = None,
        *,
        fmt: HeaderFormat = "BIN",
    ) -> None:
        if fmt not in ("BIN", "TEXT", "JSON"):
            raise _unknown_format(fmt)
        self.app = app
        self.recorder = recorder if recorder is not None else server_metrics_recorder()
        self.fmt: HeaderFormat = fmt


class OrcaMiddleware(_Reporting[ASGIApp]):
    """ASGI middleware: each HTTP request's handler gets a fresh
    :class:`~pymesh.orca.CallMetricsRecorder` (:func:`~pymesh.orca.call_metrics_recorder`),
    and the response carries ``endpoint-load-metrics`` with the server's metrics overlaid
    with the request's.

    The header goes out with the response start, so only what the handler records before
    it starts the response is included (a streaming body's later metrics are not).
    ``recorder``: the server's metrics (default: the process-wide recorder); ``fmt``:
    ``BIN`` (default), ``TEXT`` or ``JSON``.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        rec, token = enter_call()
        server, fmt = self.recorder, self.fmt

        async def send_with_report(message: Message) -> None:
            if message.get("type") == "http.response.start":
                value = _header_for(server, rec, fmt)
                if value is not None:
                    header = (b"endpoint-load-metrics", value.encode())
                    headers = [*message.get("headers", ()), header]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_report)
        finally:
            leave_call(token)


def _header_for(server: ServerMetricsRecorder, rec: Any, fmt: HeaderFormat) -> str | None:
    if fmt == "BIN" and rec.empty():
        enc = server.encoded()  # cached until the server's metrics change
        return None if enc is None else enc[1]
    return load_metrics_header(server.snapshot().overlay(rec.snapshot()), fmt)


StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class OrcaWsgiMiddleware(_Reporting[WSGIApp]):
    """WSGI middleware: as :class:`OrcaMiddleware`, for WSGI apps (Flask, Django, ...).

    The handler's :func:`~pymesh.orca.call_metrics_recorder` is current while the app
    runs until it returns its body iterable (a generator body that records later is not
    reported: the header left with ``start_response``).
    """

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        rec, token = enter_call()
        server, fmt = self.recorder, self.fmt

        def start_with_report(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            value = _header_for(server, rec, fmt)
            if value is not None:
                headers = [*headers, (ORCA_HEADER, value)]
            return start_response(status, headers, *exc)

        try:
            return self.app(environ, start_with_report)
        finally:
            leave_call(token)
