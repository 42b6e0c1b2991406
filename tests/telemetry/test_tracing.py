"""Request and attempt spans, W3C trace context to the upstream, and the off switch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from _otel_sdk import Otel
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import pymesh
from pymesh import telemetry
from pymesh.testing import EchoBackend

Push = Callable[..., Any]


def _traceparent(span: ReadableSpan) -> str:
    ctx = span.context
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _reviews(backend: EchoBackend, **route: Any) -> dict[str, Any]:
    return {
        "services": {
            "reviews": {
                "port": 9080,
                "endpoints": [backend.address],
                "routes": [{"name": "all", **route}],
            }
        }
    }


def test_retried_request_has_parent_and_attempt_spans(
    otel: Otel, mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(_reviews(echo_backend, retries={"attempts": 2, "on": "5xx"}))
    echo_backend.fail_next(1, status=503)
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        resp = client.get("http://reviews:9080/api?x=1")
    assert resp.status_code == 200

    spans = otel.spans.get_finished_spans()
    [parent] = [s for s in spans if s.kind == SpanKind.CLIENT]
    attempts = sorted(
        (s for s in spans if s.name == "pymesh attempt"), key=lambda s: s.start_time or 0
    )
    assert len(attempts) == 2
    a = dict(parent.attributes or {})
    assert a["http.request.method"] == "GET"
    assert a["url.full"] == "http://reviews:9080/api?x=1"
    assert a["server.address"] == "reviews"
    assert a["server.port"] == 9080
    assert a["http.response.status_code"] == 200
    assert a["pymesh.listener"] == "reviews:9080"
    assert a["pymesh.route"] == "all"
    assert a["pymesh.cluster"] == "outbound|9080||reviews"
    assert a["pymesh.endpoint"] == echo_backend.address
    assert a["pymesh.attempts"] == 2
    assert a["pymesh.retry_reason"] == "5xx"
    assert "pymesh.local_reply" not in a
    assert parent.status.status_code != StatusCode.ERROR

    first, second = (dict(s.attributes or {}) for s in attempts)
    assert first["http.response.status_code"] == 503
    assert first["pymesh.retry_reason"] == "5xx"
    assert attempts[0].status.status_code == StatusCode.ERROR
    assert second["http.response.status_code"] == 200
    assert second["http.request.resend_count"] == 1
    assert second["pymesh.endpoint"] == echo_backend.address
    for s in attempts:
        assert s.parent is not None
        assert s.parent.span_id == parent.context.span_id
        assert s.context.trace_id == parent.context.trace_id

    # Each try carried its own attempt span's context in traceparent.
    got = [r.header("traceparent") for r in echo_backend.requests]
    want = [_traceparent(s) for s in attempts]
    assert got == want


def test_caller_span_is_the_parent_and_its_traceparent_is_replaced(
    otel: Otel, mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(_reviews(echo_backend))
    tracer = otel.tracer_provider.get_tracer("app")
    with (
        tracer.start_as_current_span("handler") as app_span,
        httpx.Client(transport=pymesh.MeshTransport(mesh)) as client,
    ):
        client.get(
            "http://reviews:9080/",
            headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        )
    spans = {s.name: s for s in otel.spans.get_finished_spans()}
    parent = spans["GET"]
    assert (
        parent.parent is not None and parent.parent.span_id == app_span.get_span_context().span_id
    )
    [req] = echo_backend.requests
    attempt = spans["pymesh attempt"]
    headers = [v for k, v in req.headers if k.lower() == "traceparent"]
    assert headers == [_traceparent(attempt)]


def test_local_reply_span_has_flag_and_error(
    otel: Otel, mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(_reviews(echo_backend, match={"prefix": "/api"}))
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        assert client.get("http://reviews:9080/other").status_code == 404
    [span] = otel.spans.get_finished_spans()
    a = dict(span.attributes or {})
    assert a["pymesh.local_reply"] == "NR"
    assert a["pymesh.attempts"] == 0
    assert a["http.response.status_code"] == 404
    assert echo_backend.request_count == 0


async def test_async_transport_traces_too(
    otel: Otel, mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(_reviews(echo_backend))
    async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)) as client:
        assert (await client.get("http://reviews:9080/a")).status_code == 200
    names = sorted(s.name for s in otel.spans.get_finished_spans())
    assert names == ["GET", "pymesh attempt"]
    [req] = echo_backend.requests
    assert req.header("traceparent") is not None


def test_no_provider_means_no_span_work(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    """With the API's default (proxy) providers, telemetry is off: no observer at all."""
    telemetry.configure()
    assert telemetry.tracer() is None
    assert telemetry.instruments() is None
    assert telemetry.observe_request("GET", httpx.URL("http://x/"), "x") is None
    push_mesh(_reviews(echo_backend))
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        client.get("http://reviews:9080/")
    [req] = echo_backend.requests
    assert req.header("traceparent") is None


def test_global_providers_installed_later_are_picked_up() -> None:
    """The global providers can be set once per process: check in a fresh one."""
    import subprocess
    import sys

    script = """
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from pymesh import telemetry
assert telemetry.tracer() is None and telemetry.instruments() is None
trace.set_tracer_provider(TracerProvider())
assert telemetry.tracer() is not None and telemetry.instruments() is None
metrics.set_meter_provider(MeterProvider())
assert telemetry.instruments() is not None
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_hedged_attempts_each_get_a_span_and_the_loser_is_cancelled(
    otel: Otel, mesh: pymesh.Mesh, control_plane: Any
) -> None:
    from _edit import edited_mesh

    from pymesh.testing import push_snapshot

    with EchoBackend("slowish", delay=0.6) as fast, EchoBackend("slower", delay=2.5) as slow:
        config = {
            "services": {
                "reviews": {
                    "port": 9080,
                    "endpoints": [fast.address, slow.address],
                    "routes": [
                        {
                            "timeout": "10s",
                            "retries": {"attempts": 1, "on": "5xx", "per_try_timeout": "200ms"},
                        }
                    ],
                }
            }
        }

        def hedge(rc: Any) -> None:
            rc.virtual_hosts[0].routes[0].route.hedge_policy.hedge_on_per_try_timeout = True

        push_snapshot(control_plane, mesh, edited_mesh(config, route=hedge))
        with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=30) as client:
            resp = client.get("http://reviews:9080/")
        assert resp.headers["x-backend"] == "slowish"
        spans = otel.spans.get_finished_spans()
        [parent] = [s for s in spans if s.kind == SpanKind.CLIENT]
        attempts = {
            dict(s.attributes or {})["pymesh.endpoint"]: s
            for s in spans
            if s.name == "pymesh attempt"
        }
        assert set(attempts) == {fast.address, slow.address}
        assert dict(parent.attributes or {})["pymesh.attempts"] == 2
        won, lost = attempts[fast.address], attempts[slow.address]
        assert dict(won.attributes or {})["http.response.status_code"] == 200
        assert dict(lost.attributes or {})["error.type"] == "CancelledError"
        assert all(
            s.parent is not None and s.parent.span_id == parent.context.span_id for s in (won, lost)
        )
        # Each backend got its own attempt's trace context.
        [fast_req] = fast.wait_for_requests(1)
        assert fast_req.header("traceparent") == _traceparent(won)
        [slow_req] = slow.wait_for_requests(1, timeout=20)
        assert slow_req.header("traceparent") == _traceparent(lost)
