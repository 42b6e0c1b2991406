"""gRPC channels: a CLIENT span per call (RPC semantic conventions + mesh attributes), a
span per attempt, W3C trace context in the metadata, A66 metrics, sync and aio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from _grpc_echo import CHAT, CLUSTER, COLLECT, ECHO, SPLIT, TARGET, GrpcEcho, echo_mesh
from _otel_sdk import Otel
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

import pymesh
import pymesh.grpc
import pymesh.grpc.aio
from pymesh import telemetry

Push = Callable[..., Any]
RETRY = {"retries": {"attempts": 2, "on": "unavailable", "backoff": {"base": "1ms"}}}
METHOD = "pymesh.test.Echo/Echo"
BOGUS_PARENT = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"


class SpanWaiter(SpanProcessor):
    """Lets a test wait (with a timeout) for spans ended on grpc's own threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.ended: list[str] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        with self._cond:
            self.ended.append(span.name)
            self._cond.notify_all()

    def wait_for(self, name: str, count: int = 1, timeout: float = 30.0) -> bool:
        """Wait until ``count`` spans named ``name`` have ended."""
        with self._cond:
            return self._cond.wait_for(lambda: self.ended.count(name) >= count, timeout)


@pytest.fixture
def waiter(otel: Otel) -> SpanWaiter:
    w = SpanWaiter()
    otel.tracer_provider.add_span_processor(w)
    return w


def _traceparent(span: ReadableSpan) -> str:
    ctx = span.context
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _value(otel: Otel, name: str, **attrs: object) -> float:
    """Sum (counters) or count (histograms) of the points of ``name`` matching ``attrs``."""
    total = 0.0
    for a, p in otel.points(name):
        if all(a.get(k) == v for k, v in attrs.items()):
            total += p.count if hasattr(p, "count") else p.value  # type: ignore[attr-defined]
    return total


def _call_spans(otel: Otel) -> tuple[ReadableSpan, list[ReadableSpan]]:
    spans = otel.spans.get_finished_spans()
    [parent] = [s for s in spans if s.kind == SpanKind.CLIENT]
    attempts = sorted(
        (s for s in spans if s.name == "pymesh attempt"), key=lambda s: s.start_time or 0
    )
    return parent, attempts


def _check_retried_call(otel: Otel, backend: GrpcEcho, app_span_id: int) -> None:
    """The shape every retried unary call must have, sync or aio."""
    parent, attempts = _call_spans(otel)
    assert parent.name == METHOD
    assert parent.parent is not None and parent.parent.span_id == app_span_id
    a = dict(parent.attributes or {})
    assert a["rpc.system"] == "grpc"
    assert a["rpc.service"] == "pymesh.test.Echo"
    assert a["rpc.method"] == "Echo"
    assert a["rpc.grpc.status_code"] == 0
    assert a["server.address"] == "echo"
    assert a["server.port"] == 50051
    assert a["pymesh.listener"] == "echo:50051"
    assert a["pymesh.route"] == "all"
    assert a["pymesh.cluster"] == CLUSTER
    assert a["pymesh.endpoint"] == backend.address
    assert a["pymesh.attempts"] == 2
    assert a["pymesh.retry_reason"] == "unavailable"
    assert "pymesh.local_reply" not in a and "error.type" not in a
    assert parent.status.status_code != StatusCode.ERROR

    assert len(attempts) == 2
    first, second = (dict(s.attributes or {}) for s in attempts)
    assert first["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert first["pymesh.retry_reason"] == "unavailable"
    assert attempts[0].status.status_code == StatusCode.ERROR
    assert second["rpc.grpc.status_code"] == 0
    assert second["previous-rpc-attempts"] == 1
    assert "previous-rpc-attempts" not in first
    for s, attrs in zip(attempts, (first, second), strict=True):
        assert s.parent is not None and s.parent.span_id == parent.context.span_id
        assert s.context.trace_id == parent.context.trace_id
        assert attrs["network.peer.address"] == "127.0.0.1"
        assert attrs["network.peer.port"] == backend.port
        assert attrs["pymesh.endpoint"] == backend.address

    # The server saw each attempt's own context (the caller's traceparent was replaced).
    got = [md.get("traceparent") for md in backend.metadata]
    assert got == [_traceparent(s) for s in attempts]
    assert all(tp.split("-")[1] == f"{parent.context.trace_id:032x}" for tp in got)

    # gRFC A66 metrics with the mesh's cluster and route.
    call = {"grpc.method": METHOD, "grpc.target": TARGET}
    assert _value(otel, "grpc.client.attempt.started", **call) == 2
    assert _value(otel, "grpc.client.attempt.started", **{"pymesh.cluster": CLUSTER}) == 2
    [(labels, point)] = otel.points("grpc.client.call.duration")
    assert point.count == 1  # type: ignore[attr-defined]
    assert labels["grpc.method"] == METHOD
    assert labels["grpc.target"] == TARGET
    assert labels["grpc.status"] == "OK"
    assert labels["pymesh.route"] == "all" and labels["pymesh.cluster"] == CLUSTER
    assert _value(otel, "grpc.client.attempt.duration", **{"grpc.status": "UNAVAILABLE"}) == 1
    assert _value(otel, "grpc.client.attempt.duration", **{"grpc.status": "OK"}) == 1
    assert _value(otel, "pymesh.client.retries", **{"pymesh.retry_reason": "unavailable"}) == 1
    # gRPC calls are not counted as HTTP requests.
    assert otel.points("pymesh.client.requests") == []


def test_retried_unary_call_spans_context_and_metrics(
    otel: Otel, mesh: pymesh.Mesh, push_mesh: Push
) -> None:
    with GrpcEcho(fail_first=1) as backend:
        push_mesh(echo_mesh(backend, **RETRY))
        app = otel.tracer_provider.get_tracer("app")
        with (
            pymesh.grpc.insecure_channel(TARGET, mesh) as ch,
            app.start_as_current_span("handler") as app_span,
        ):
            reply = ch.unary_unary(ECHO)(
                b"hi", timeout=10, metadata=(("traceparent", BOGUS_PARENT),)
            )
        assert reply == b"echo:hi"
        _check_retried_call(otel, backend, app_span.get_span_context().span_id)


async def test_aio_retried_unary_call_spans_context_and_metrics(
    otel: Otel, mesh: pymesh.Mesh, push_mesh: Push
) -> None:
    with GrpcEcho(fail_first=1) as backend:
        push_mesh(echo_mesh(backend, **RETRY))
        app = otel.tracer_provider.get_tracer("app")
        async with pymesh.grpc.aio.insecure_channel(TARGET, mesh) as ch:
            with app.start_as_current_span("handler") as app_span:
                call = ch.unary_unary(ECHO)(
                    b"hi", timeout=10, metadata=(("traceparent", BOGUS_PARENT),)
                )
                assert await call == b"echo:hi"
                assert await call.code() is grpc.StatusCode.OK
        _check_retried_call(otel, backend, app_span.get_span_context().span_id)


def test_future_on_the_pool_keeps_the_callers_span_as_parent(
    otel: Otel, mesh: pymesh.Mesh, push_mesh: Push
) -> None:
    with GrpcEcho(fail_first=1) as backend:
        push_mesh(echo_mesh(backend, **RETRY))
        app = otel.tracer_provider.get_tracer("app")
        with (
            pymesh.grpc.insecure_channel(TARGET, mesh) as ch,
            app.start_as_current_span("handler") as app_span,
        ):
            # A retried call's future runs on the channel's thread pool.
            assert ch.unary_unary(ECHO).future(b"f", timeout=10).result(timeout=10) == b"echo:f"
        parent, attempts = _call_spans(otel)
    assert parent.parent is not None
    assert parent.parent.span_id == app_span.get_span_context().span_id
    assert len(attempts) == 2


def test_server_stream_span_ends_when_the_stream_does(
    otel: Otel, waiter: SpanWaiter, mesh: pymesh.Mesh, push_mesh: Push
) -> None:
    with GrpcEcho(gated=True) as backend:
        push_mesh(echo_mesh(backend))
        with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
            stream = ch.unary_stream(SPLIT)(b"2", timeout=30)
            backend.release()
            assert next(stream) == b"0"
            # Mid-stream: nothing has ended yet.
            assert otel.spans.get_finished_spans() == ()
            backend.release()
            assert list(stream) == [b"1"]
            assert waiter.wait_for("pymesh.test.Echo/Split")
            # A second stream, cancelled by the client after one reply.
            cancelled = ch.unary_stream(SPLIT)(b"2", timeout=30)
            backend.release()
            assert next(cancelled) == b"0"
            cancelled.cancel()
            assert waiter.wait_for("pymesh.test.Echo/Split", count=2)
    done, stopped = sorted(
        (s for s in otel.spans.get_finished_spans() if s.kind == SpanKind.CLIENT),
        key=lambda s: s.start_time or 0,
    )
    assert dict(done.attributes or {})["rpc.grpc.status_code"] == 0
    assert done.status.status_code != StatusCode.ERROR
    a = dict(stopped.attributes or {})
    assert a["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert a["error.type"] == "CANCELLED"
    assert stopped.status.status_code == StatusCode.ERROR
    # Each stream's server saw its own attempt's context.
    attempts = sorted(
        (s for s in otel.spans.get_finished_spans() if s.name == "pymesh attempt"),
        key=lambda s: s.start_time or 0,
    )
    assert [md["traceparent"] for md in backend.metadata] == [_traceparent(s) for s in attempts]
    split = {"grpc.method": "pymesh.test.Echo/Split"}
    assert _value(otel, "grpc.client.call.duration", **split, **{"grpc.status": "OK"}) == 1
    assert _value(otel, "grpc.client.call.duration", **split, **{"grpc.status": "CANCELLED"}) == 1


async def test_aio_server_stream_span_ends_when_the_stream_does(
    otel: Otel, waiter: SpanWaiter, mesh: pymesh.Mesh, push_mesh: Push
) -> None:
    with GrpcEcho() as backend:
        push_mesh(echo_mesh(backend))
        async with pymesh.grpc.aio.insecure_channel(TARGET, mesh) as ch:
            replies = [r async for r in ch.unary_stream(SPLIT)(b"3", timeout=10)]
            assert replies == [b"0", b"1", b"2"]
            # The span ends on the event loop once the call's status is in.
            assert await asyncio.to_thread(waiter.wait_for, "pymesh.test.Echo/Split")
    parent, [attempt] = _call_spans(otel)
    assert dict(parent.attributes or {})["rpc.grpc.status_code"] == 0
    assert dict(parent.attributes or {})["pymesh.attempts"] == 1
    assert backend.metadata[0]["traceparent"] == _traceparent(attempt)


def test_client_and_bidi_streaming_calls(
    otel: Otel, waiter: SpanWaiter, mesh: pymesh.Mesh, push_mesh: Push
) -> None:
    with GrpcEcho(fail_first=1) as backend:
        push_mesh(echo_mesh(backend, **RETRY))
        with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
            # Client streaming: buffered, so the retry replays it (two attempts).
            assert ch.stream_unary(COLLECT)(iter([b"1", b"2"]), timeout=10) == b"1,2"
            chat = ch.stream_stream(CHAT)(iter([b"x", b"y"]), timeout=10)
            assert list(chat) == [b"chat:x", b"chat:y"]
            assert waiter.wait_for("pymesh.test.Echo/Chat")
    spans = {s.name: s for s in otel.spans.get_finished_spans() if s.kind == SpanKind.CLIENT}
    collect = dict(spans["pymesh.test.Echo/Collect"].attributes or {})
    assert collect["pymesh.attempts"] == 2
    assert collect["pymesh.retry_reason"] == "unavailable"
    assert collect["rpc.grpc.status_code"] == 0
    chat_attrs = dict(spans["pymesh.test.Echo/Chat"].attributes or {})
    assert chat_attrs["rpc.method"] == "Chat" and chat_attrs["rpc.grpc.status_code"] == 0
    assert chat_attrs["pymesh.attempts"] == 1
    # Three attempts reached the server, each with its own traceparent.
    assert len({md["traceparent"] for md in backend.metadata}) == 3
    assert (
        _value(otel, "grpc.client.attempt.started", **{"grpc.method": "pymesh.test.Echo/Collect"})
        == 2
    )


async def test_aio_bidi_stream_span_ends_with_its_status(
    otel: Otel, waiter: SpanWaiter, mesh: pymesh.Mesh, push_mesh: Push
) -> None:
    with GrpcEcho() as backend:
        push_mesh(echo_mesh(backend))
        async with pymesh.grpc.aio.insecure_channel(TARGET, mesh) as ch:
            chat = ch.stream_stream(CHAT)(timeout=10)
            await chat.write(b"x")
            assert await chat.read() == b"chat:x"
            assert otel.spans.get_finished_spans() == ()  # still streaming
            await chat.done_writing()
            assert await chat.code() is grpc.StatusCode.OK
            assert await asyncio.to_thread(waiter.wait_for, "pymesh.test.Echo/Chat")
    parent, [attempt] = _call_spans(otel)
    assert dict(parent.attributes or {})["rpc.grpc.status_code"] == 0
    assert backend.metadata[0]["traceparent"] == _traceparent(attempt)
    chat_calls = {"grpc.method": "pymesh.test.Echo/Chat", "grpc.status": "OK"}
    assert _value(otel, "grpc.client.call.duration", **chat_calls) == 1


def test_overflow_is_a_local_status_with_a_span_and_metrics(
    otel: Otel, mesh: pymesh.Mesh, push_mesh: Push
) -> None:
    with GrpcEcho() as backend:
        mesh_file = echo_mesh(backend)
        mesh_file["services"]["echo"]["traffic_policy"] = {"circuit_breakers": {"max_requests": 0}}
        push_mesh(mesh_file)
        with pymesh.grpc.insecure_channel(TARGET, mesh) as ch, pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(ECHO)(b"x", timeout=10)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert backend.metadata == []
    [span] = otel.spans.get_finished_spans()
    a = dict(span.attributes or {})
    assert span.kind == SpanKind.CLIENT
    assert a["pymesh.local_reply"] == "UO"
    assert a["pymesh.overflow"] is True
    assert a["pymesh.attempts"] == 0
    assert a["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert span.status.status_code == StatusCode.ERROR
    assert "overflow" in (span.status.description or "")
    local = {"grpc.status": "UNAVAILABLE", "pymesh.local_reply": "UO"}
    assert _value(otel, "grpc.client.call.duration", **local) == 1
    assert otel.points("grpc.client.attempt.started") == []


def test_no_provider_means_no_observer_and_calls_still_work(
    mesh: pymesh.Mesh, push_mesh: Push
) -> None:
    """With the API's default (proxy) providers, telemetry is off: no observer at all."""
    telemetry.configure()
    assert telemetry.tracer() is None and telemetry.instruments() is None
    with GrpcEcho(fail_first=1) as backend:
        push_mesh(echo_mesh(backend, **RETRY))
        with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
            assert ch.observe(ECHO) is None
            assert ch.unary_unary(ECHO)(b"x", timeout=10) == b"echo:x"
            assert list(ch.unary_stream(SPLIT)(b"2", timeout=10)) == [b"0", b"1"]
    assert len(backend.metadata) == 3
    assert all("traceparent" not in md for md in backend.metadata)


async def test_aio_no_provider_calls_still_work(mesh: pymesh.Mesh, push_mesh: Push) -> None:
    telemetry.configure()
    with GrpcEcho() as backend:
        push_mesh(echo_mesh(backend))
        async with pymesh.grpc.aio.insecure_channel(TARGET, mesh) as ch:
            assert ch.observe(ECHO) is None
            assert await ch.unary_unary(ECHO)(b"x", timeout=10) == b"echo:x"
    assert [("traceparent" in md) for md in backend.metadata] == [False]
