"""ORCA for grpcio servers: per-call reports in a trailer, and the out-of-band service.

* :class:`OrcaServerInterceptor` / :class:`AsyncOrcaServerInterceptor` (``grpc.server`` /
  ``grpc.aio.server``): each call's handler gets a fresh
  :class:`~pymesh.orca.CallMetricsRecorder` (:func:`~pymesh.orca.call_metrics_recorder`);
  when it ends (answer, error or abort) the server's metrics overlaid with the call's go
  out as the ``endpoint-load-metrics-bin`` trailer (a serialized
  ``xds.data.orca.v3.OrcaLoadReport``, gRFC A51), after any trailers the handler set.
* :class:`OrcaService`: ``xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`` for sync
  and aio servers: the server's metrics, then again every ``report_interval`` the client
  asks for, but never more often than ``min_report_interval`` (gRPC's default 30 s).

xds-protos ships the messages but no ``_pb2_grpc`` stub for OpenRcaService, so the
method is registered by name with the messages' own (de)serializers.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
from xds.data.orca.v3 import orca_load_report_pb2
from xds.service.orca.v3 import orca_pb2

from pymesh.orca._metrics import (
    CallMetricsRecorder,
    OrcaMetricError,
    ServerMetricsRecorder,
    encode,
    enter_call,
    leave_call,
    server_metrics_recorder,
    use_call,
)

__all__ = [
    "ORCA_SERVICE",
    "ORCA_STREAM_METHOD",
    "ORCA_TRAILER",
    "AsyncOrcaServerInterceptor",
    "OrcaServerInterceptor",
    "OrcaService",
]

#: The trailer (and header) carrying a serialized OrcaLoadReport (gRFC A51).
ORCA_TRAILER = "endpoint-load-metrics-bin"
#: Envoy's text header / trailer for the same report (``BIN <base64>``, ``TEXT ...``).
ORCA_HEADER = "endpoint-load-metrics"
ORCA_SERVICE = "xds.service.orca.v3.OpenRcaService"
ORCA_STREAM_METHOD = f"/{ORCA_SERVICE}/StreamCoreMetrics"
#: gRPC's default floor on the out-of-band reporting interval (grpc-go, grpc-java).
DEFAULT_MIN_REPORT_INTERVAL = 30.0


def _trail(context: Any, server: ServerMetricsRecorder, call: CallMetricsRecorder) -> None:
    if call.empty():
        enc = server.encoded()  # the common case: cached until the server's metrics change
    else:
        enc = encode(server.snapshot().overlay(call.snapshot())) or None
    if enc is None:
        return  # nothing recorded: no trailer (as grpc-go)
    data, text = enc
    existing = tuple(context.trailing_metadata() or ())
    # The same report twice: grpc clients read the -bin trailer (A51), but gRPC's C core
    # keeps it from the application, so grpcio (pymesh's own gRPC driver) cannot see it;
    # Envoy's text form of it (``BIN <base64>``) reaches every client, and Envoy reads
    # either.
    context.set_trailing_metadata((*existing, (ORCA_TRAILER, data), (ORCA_HEADER, text)))


def _factory(handler: Any) -> tuple[str, Callable[..., Any]]:
    if handler.request_streaming and handler.response_streaming:
        return "stream_stream", grpc.stream_stream_rpc_method_handler
    if handler.request_streaming:
        return "stream_unary", grpc.stream_unary_rpc_method_handler
    if handler.response_streaming:
        return "unary_stream", grpc.unary_stream_rpc_method_handler
    return "unary_unary", grpc.unary_unary_rpc_method_handler


def _rebuild(handler: Any, behaviour: Callable[..., Any]) -> Any:
    _, make = _factory(handler)
    return make(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class OrcaServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Per-call ORCA reports for a sync ``grpc.server`` (pass it in ``interceptors=``).

    ``recorder``: the server's metrics included in each report (default: the
    process-wide :func:`~pymesh.orca.server_metrics_recorder`).
    """

    def __init__(self, recorder: ServerMetricsRecorder | None = None) -> None:
        self._server = recorder if recorder is not None else server_metrics_recorder()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method == ORCA_STREAM_METHOD:
            return handler
        server = self._server
        kind, _ = _factory(handler)
        inner = getattr(handler, kind)
        if not handler.response_streaming:

            def unary_response(request: Any, context: Any) -> Any:
                rec, token = enter_call()
                try:
                    return inner(request, context)
                finally:
                    leave_call(token)
                    _trail(context, server, rec)

            return _rebuild(handler, unary_response)

        def streaming_response(request: Any, context: Any) -> Iterator[Any]:
            # The recorder is current only while the handler's own code runs (each next()):
            # a sync server's worker thread keeps its context between calls.
            rec, token = enter_call()
            try:
                responses = inner(request, context)
            finally:
                leave_call(token)
            try:
                while True:
                    token = use_call(rec)
                    try:
                        item = next(responses)
                    except StopIteration:
                        return
                    finally:
                        leave_call(token)
                    yield item
            finally:
                _trail(context, server, rec)

        return _rebuild(handler, streaming_response)


class _AioContext:
    """The aio servicer context, except that ``abort`` attaches the report first:
    grpc.aio's abort sends the status (and trailers) before it raises, so a report added
    after the handler ends would come too late."""

    __slots__ = ("_context", "_rec", "_reported", "_server")

    def __init__(self, context: Any, server: ServerMetricsRecorder, rec: CallMetricsRecorder):
        self._context = context
        self._server = server
        self._rec = rec
        self._reported = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def report(self) -> None:
        if not self._reported:
            self._reported = True
            _trail(self._context, self._server, self._rec)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        if trailing_metadata:
            self._context.set_trailing_metadata(tuple(trailing_metadata))
        self.report()
        await self._context.abort(code, details, tuple(self._context.trailing_metadata()))


class AsyncOrcaServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Per-call ORCA reports for a ``grpc.aio.server`` (pass it in ``interceptors=``).

    ``recorder``: the server's metrics included in each report (default: the
    process-wide :func:`~pymesh.orca.server_metrics_recorder`).
    """

    def __init__(self, recorder: ServerMetricsRecorder | None = None) -> None:
        self._server = recorder if recorder is not None else server_metrics_recorder()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method == ORCA_STREAM_METHOD:
            return handler
        server = self._server
        kind, _ = _factory(handler)
        inner = getattr(handler, kind)
        if inspect.isasyncgenfunction(inner):

            async def agen(request: Any, context: Any) -> AsyncIterator[Any]:
                # Each aio call runs in its own task: the recorder stays current for it.
                rec, token = enter_call()
                ctx = _AioContext(context, server, rec)
                try:
                    async for item in inner(request, ctx):
                        yield item
                finally:
                    leave_call(token)
                    ctx.report()

            return _rebuild(handler, agen)

        async def coro(request: Any, context: Any) -> Any:
            rec, token = enter_call()
            ctx = _AioContext(context, server, rec)
            try:
                result = inner(request, ctx)
                if inspect.isawaitable(result):
                    result = await result
                return result
            finally:
                leave_call(token)
                ctx.report()

        return _rebuild(handler, coro)


class OrcaService:
    """``xds.service.orca.v3.OpenRcaService``: out-of-band load reports (gRFC A51).

    ``recorder``: what is reported (default: the process-wide
    :func:`~pymesh.orca.server_metrics_recorder`). ``min_report_interval`` (seconds):
    the floor on the interval a client asks for (gRPC's default is 30 s; a client asking
    for less, or for none, gets this). Register it with :meth:`add_to_server` on a sync
    ``grpc.server`` or a ``grpc.aio.server``.
    """

    def __init__(
        self,
        recorder: ServerMetricsRecorder | None = None,
        *,
        min_report_interval: float = DEFAULT_MIN_REPORT_INTERVAL,
    ) -> None:
        if not min_report_interval > 0:
            raise OrcaMetricError(f"min_report_interval must be > 0, got {min_report_interval!r}")
        self.recorder = recorder if recorder is not None else server_metrics_recorder()
        self.min_report_interval = float(min_report_interval)

    def interval(self, request: Any) -> float:
        """The reporting interval for ``request``: the client's, raised to the floor."""
        asked = 0.0
        if request.HasField("report_interval"):
            asked = request.report_interval.ToNanoseconds() / 1e9
        return max(asked, self.min_report_interval)

    def _report(self) -> Any:
        return self.recorder.snapshot().to_proto()

    def stream_core_metrics(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """The sync servicer method: a report now, then one per interval until the
        client goes away (one server thread per stream, as grpc-go uses a goroutine)."""
        interval = self.interval(request)
        gone = threading.Event()
        context.add_callback(gone.set)
        while True:
            yield self._report()
            if gone.wait(interval):
                return

    async def stream_core_metrics_async(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        """The aio servicer method (cancelled with the stream)."""
        interval = self.interval(request)
        while True:
            yield self._report()
            await asyncio.sleep(interval)

    def handler(self, aio: bool = False) -> grpc.GenericRpcHandler:
        """The generic handler of the service (sync, or aio with ``aio=True``)."""
        method = self.stream_core_metrics_async if aio else self.stream_core_metrics
        return grpc.method_handlers_generic_handler(
            ORCA_SERVICE,
            {
                "StreamCoreMetrics": grpc.unary_stream_rpc_method_handler(
                    method,
                    request_deserializer=orca_pb2.OrcaLoadReportRequest.FromString,
                    response_serializer=orca_load_report_pb2.OrcaLoadReport.SerializeToString,
                )
            },
        )

    def add_to_server(self, server: grpc.Server | grpc.aio.Server) -> None:
        """Register the service on ``server`` (a ``grpc.server`` or ``grpc.aio.server``)."""
        server.add_generic_rpc_handlers((self.handler(isinstance(server, grpc.aio.Server)),))

    def __repr__(self) -> str:
        return f"<OrcaService min_report_interval={self.min_report_interval}s>"
