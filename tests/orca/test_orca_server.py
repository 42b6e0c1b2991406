"""Server-side ORCA (gRFC A51): per-call trailers from the interceptors (sync and aio),
the OpenRcaService stream (sync and aio), and the ASGI middleware's header, each read
back with a real client over 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from google.protobuf import duration_pb2
from xds.data.orca.v3 import orca_load_report_pb2
from xds.service.orca.v3 import orca_pb2

from pymesh import orca

METHOD = "/pymesh.orca.Test/Call"
STREAM = "/pymesh.orca.Test/Stream"
Report = orca_load_report_pb2.OrcaLoadReport


def _report(trailers: Any) -> Any:
    # grpcio hides the -bin trailer from applications (its core consumes it); the same
    # report also travels as Envoy's text form, which it does show.
    assert orca.ORCA_TRAILER not in [k for k, _ in trailers]
    values = [v for k, v in trailers if k == orca.ORCA_HEADER]
    assert len(values) == 1, trailers
    assert values[0].startswith("BIN ")
    return Report.FromString(base64.b64decode(values[0][4:]))


def _handlers(aio: bool) -> grpc.GenericRpcHandler:
    def record(request: bytes) -> None:
        rec = orca.call_metrics_recorder()
        assert rec is not None
        rec.set_application_utilization(0.75)
        rec.set_request_cost("rows", 12.0)
        rec.set_named_metric("queue", 3.0)

    if aio:

        async def call(request: bytes, context: Any) -> bytes:
            record(request)
            context.set_trailing_metadata((("x-mine", "kept"),))
            if request == b"fail":
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
            return b"ok"

        async def stream(request: bytes, context: Any) -> Any:
            for i in range(3):
                record(request)
                yield b"%d" % i

    else:

        def call(request: bytes, context: Any) -> bytes:  # type: ignore[misc]
            record(request)
            context.set_trailing_metadata((("x-mine", "kept"),))
            if request == b"fail":
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
            return b"ok"

        def stream(request: bytes, context: Any) -> Iterator[bytes]:  # type: ignore[misc]
            for i in range(3):
                record(request)
                yield b"%d" % i

    return grpc.method_handlers_generic_handler(
        "pymesh.orca.Test",
        {
            "Call": grpc.unary_unary_rpc_method_handler(call),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )


def _check_unary(report: Any) -> None:
    assert report.cpu_utilization == pytest.approx(0.5)  # the server's
    assert report.application_utilization == pytest.approx(0.75)  # the call's
    assert report.rps_fractional == pytest.approx(40.0)
    assert dict(report.request_cost) == {"rows": 12.0}
    assert dict(report.named_metrics) == {"queue": 3.0, "shared": 1.0}


def _server_metrics() -> orca.ServerMetricsRecorder:
    server = orca.ServerMetricsRecorder()
    server.set_cpu_utilization(0.5)
    server.set_application_utilization(0.1)  # the call's value wins
    server.set_qps(40)
    server.set_named_metric("shared", 1.0)
    return server


def test_sync_interceptor_sends_the_report_trailer() -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(4), interceptors=[orca.OrcaServerInterceptor(_server_metrics())]
    )
    server.add_generic_rpc_handlers((_handlers(aio=False),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            reply, call = ch.unary_unary(METHOD).with_call(b"hi", timeout=30)
            assert reply == b"ok"
            trailers = call.trailing_metadata()
            assert ("x-mine", "kept") in trailers  # the handler's own trailers stay
            _check_unary(_report(trailers))
            # An aborted call reports too (its errors count in weighted round robin).
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary(METHOD)(b"fail", timeout=30)
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
            _check_unary(_report(err.value.trailing_metadata()))  # type: ignore[attr-defined]
            stream = ch.unary_stream(STREAM)(b"s", timeout=30)
            assert list(stream) == [b"0", b"1", b"2"]
            assert _report(stream.trailing_metadata()).application_utilization == 0.75
    finally:
        server.stop(0).wait(10)
    # Outside a call there is no recorder.
    assert orca.call_metrics_recorder() is None


def test_aio_interceptor_sends_the_report_trailer() -> None:
    async def run() -> None:
        server = grpc.aio.server(interceptors=[orca.AsyncOrcaServerInterceptor(_server_metrics())])
        server.add_generic_rpc_handlers((_handlers(aio=True),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                call = ch.unary_unary(METHOD)(b"hi", timeout=30)
                assert await call == b"ok"
                trailers = await call.trailing_metadata()
                assert ("x-mine", "kept") in tuple(trailers)
                _check_unary(_report(tuple(trailers)))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await ch.unary_unary(METHOD)(b"fail", timeout=30)
                assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                _check_unary(_report(tuple(err.value.trailing_metadata())))
                stream = ch.unary_stream(STREAM)(b"s", timeout=30)
                assert [m async for m in stream] == [b"0", b"1", b"2"]
                got = _report(tuple(await stream.trailing_metadata()))
                assert got.application_utilization == 0.75
        finally:
            await server.stop(0)

    asyncio.run(run())


def test_no_metrics_no_trailer() -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(2),
        interceptors=[orca.OrcaServerInterceptor(orca.ServerMetricsRecorder())],
    )
    handler = grpc.method_handlers_generic_handler(
        "pymesh.orca.Test", {"Call": grpc.unary_unary_rpc_method_handler(lambda r, c: b"ok")}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            _, call = ch.unary_unary(METHOD).with_call(b"", timeout=30)
            assert [k for k, _ in call.trailing_metadata()] == []
    finally:
        server.stop(0).wait(10)


def _oob_request(ms: int) -> Any:
    return orca_pb2.OrcaLoadReportRequest(report_interval=duration_pb2.Duration(nanos=ms * 10**6))


def _oob_call(ch: Any) -> Any:
    return ch.unary_stream(
        orca.ORCA_STREAM_METHOD,
        request_serializer=orca_pb2.OrcaLoadReportRequest.SerializeToString,
        response_deserializer=Report.FromString,
    )


def test_oob_service_sync_streams_the_server_metrics() -> None:
    recorder = orca.ServerMetricsRecorder()
    recorder.set_cpu_utilization(0.25)
    service = orca.OrcaService(recorder, min_report_interval=0.05)
    # The floor: a client asking for less (or nothing) gets the minimum.
    assert service.interval(_oob_request(1)) == 0.05
    assert service.interval(orca_pb2.OrcaLoadReportRequest()) == 0.05
    assert service.interval(_oob_request(700)) == pytest.approx(0.7)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    service.add_to_server(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stream = _oob_call(ch)(_oob_request(10), timeout=60)
            first = next(stream)
            assert first.cpu_utilization == 0.25
            recorder.set_cpu_utilization(0.9)
            # Later reports pick the change up (the next one may predate it).
            for report in stream:
                if report.cpu_utilization == pytest.approx(0.9):
                    break
            stream.cancel()
    finally:
        server.stop(0).wait(10)
    with pytest.raises(ValueError, match="min_report_interval"):
        orca.OrcaService(min_report_interval=0)


def test_oob_service_aio_streams_the_server_metrics() -> None:
    async def run() -> None:
        recorder = orca.ServerMetricsRecorder()
        recorder.set_qps(12)
        server = grpc.aio.server()
        orca.OrcaService(recorder, min_report_interval=0.05).add_to_server(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stream = _oob_call(ch)(_oob_request(10), timeout=60)
                n = 0
                async for report in stream:
                    assert report.rps_fractional == 12
                    n += 1
                    if n == 3:
                        break
                stream.cancel()
        finally:
            await server.stop(0)

    asyncio.run(run())


async def _app(scope: Any, receive: Any, send: Any) -> None:
    rec = orca.call_metrics_recorder()
    assert rec is not None
    rec.set_cpu_utilization(0.3)
    rec.set_named_metric("gpu", 0.5)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _header(fmt: orca.HeaderFormat) -> str:
    server = orca.ServerMetricsRecorder()
    server.set_qps(100)
    app = orca.OrcaMiddleware(_app, server, fmt=fmt)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/")

    r = asyncio.run(run())
    assert r.headers["x-a"] == "1" and r.text == "ok"
    return r.headers[orca.ORCA_HEADER]


def test_asgi_middleware_header_formats_envoy_parses() -> None:
    binary = _header("BIN")
    assert binary.startswith("BIN ")
    report = Report.FromString(base64.b64decode(binary[4:]))
    assert (report.cpu_utilization, report.rps_fractional) == (0.3, 100.0)
    assert dict(report.named_metrics) == {"gpu": 0.5}
    text = _header("TEXT")
    assert text.startswith("TEXT ")
    pairs = dict(p.strip().split(":", 1) for p in text[5:].split(","))
    assert pairs == {
        "cpu_utilization": "0.3",
        "rps_fractional": "100.0",
        "named_metrics.gpu": "0.5",
    }
    js = _header("JSON")
    assert json.loads(js[5:]) == {
        "cpuUtilization": 0.3,
        "rpsFractional": 100.0,
        "namedMetrics": {"gpu": 0.5},
    }
    with pytest.raises(ValueError, match="BIN, TEXT or JSON"):
        orca.OrcaMiddleware(_app, fmt="XML")  # type: ignore[arg-type]


def test_recorder_rejects_bad_values() -> None:
    rec = orca.ServerMetricsRecorder()
    with pytest.raises(orca.OrcaMetricError, match="mem_utilization must be between 0 and 1"):
        rec.set_memory_utilization(1.5)
    with pytest.raises(ValueError, match="qps"):
        rec.set_qps(-1)
    with pytest.raises(ValueError, match="finite"):
        rec.set_named_metric("x", float("nan"))
    assert rec.encoded() is None  # nothing recorded
    rec.set_cpu_utilization(1.5)  # above 1 is allowed (a process over its share)
    first = rec.encoded()
    assert first is not None and rec.encoded() is first  # cached
    rec.set_qps(3)
    second = rec.encoded()
    assert second is not None and second != first  # a change drops the cache
    assert Report.FromString(second[0]).rps_fractional == 3
    rec.delete_qps()
    rec.set_utilization("disk", 0.5)
    rec.delete_cpu_utilization()
    rec.delete_utilization("disk")
    assert rec.snapshot().is_empty()
    assert orca.server_metrics_recorder() is orca.server_metrics_recorder()


def test_asgi_middleware_server_metrics_only() -> None:
    async def quiet(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    server = orca.ServerMetricsRecorder()

    async def run() -> list[httpx.Response]:
        app = orca.OrcaMiddleware(quiet, server)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = await client.get("/")  # nothing recorded: no header
            server.set_application_utilization(0.4)
            return [first, await client.get("/")]

    first, second = asyncio.run(run())
    assert orca.ORCA_HEADER not in first.headers
    value = second.headers[orca.ORCA_HEADER]
    assert Report.FromString(base64.b64decode(value[4:])).application_utilization == 0.4
