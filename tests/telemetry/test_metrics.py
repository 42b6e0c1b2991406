"""Request, attempt and retry metrics, and the observable ones read from the mesh."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from _otel_sdk import Otel

import pymesh
from pymesh.server import CLUSTER_TYPE, LISTENER_TYPE
from pymesh.testing import EchoBackend

Push = Callable[..., Any]
CLUSTER = "outbound|9080||reviews"


def _reviews(backend: EchoBackend, **extra: Any) -> dict[str, Any]:
    svc = {"port": 9080, "endpoints": [backend.address], **extra}
    return {"services": {"reviews": svc}}


def _value(otel: Otel, name: str, **attrs: object) -> float:
    """Sum of the points of ``name`` whose attributes include ``attrs``."""
    total = 0.0
    for a, p in otel.points(name):
        if all(a.get(k) == v for k, v in attrs.items()):
            total += p.count if hasattr(p, "count") else p.value  # type: ignore[attr-defined]
    return total


def test_request_attempt_and_retry_metrics(
    otel: Otel, mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(_reviews(echo_backend, routes=[{"retries": {"attempts": 2, "on": "5xx"}}]))
    echo_backend.fail_next(1, status=503)
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        assert client.get("http://reviews:9080/").status_code == 200
        assert client.get("http://reviews:9080/").status_code == 200
    ok = {"pymesh.cluster": CLUSTER, "http.response.status_code": 200}
    assert _value(otel, "pymesh.client.requests", **ok, **{"pymesh.route": "0"}) == 2
    assert _value(otel, "pymesh.client.request.duration", **ok) == 2  # histogram count
    assert _value(otel, "pymesh.client.attempt.started", **{"pymesh.cluster": CLUSTER}) == 3
    assert _value(otel, "pymesh.client.attempt.duration", **{"http.response.status_code": 503}) == 1
    assert _value(otel, "pymesh.client.retries", **{"pymesh.retry_reason": "5xx"}) == 1


def test_observable_xds_endpoint_and_outlier_metrics(
    otel: Otel, mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    policy = {
        "outlier_detection": {"consecutive_5xx": 1, "max_ejection_percent": 100},
    }
    push_mesh(_reviews(echo_backend, traffic_policy=policy))
    echo_backend.fail_next(1, status=503)
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        assert client.get("http://reviews:9080/").status_code == 503
    cluster = {"pymesh.cluster": CLUSTER}
    assert _value(otel, "pymesh.outlier.ejections.active", **cluster) == 1
    assert _value(otel, "pymesh.outlier.ejections", **cluster) == 1
    assert _value(otel, "pymesh.endpoints", **cluster) == 1
    assert _value(otel, "pymesh.xds_client.connected") == 1
    for type_url in (LISTENER_TYPE, CLUSTER_TYPE):
        kind = {"pymesh.xds.resource_type": type_url}
        assert _value(otel, "pymesh.xds_client.acks", **kind) >= 1
        assert _value(otel, "pymesh.xds_client.resource_updates", **kind) >= 1
    assert _value(otel, "pymesh.xds_client.nacks") == 0


def test_breaker_overflow_is_counted(
    otel: Otel, mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(_reviews(echo_backend, traffic_policy={"circuit_breakers": {"max_requests": 0}}))
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        resp = client.get("http://reviews:9080/")
    assert resp.status_code == 503
    assert echo_backend.request_count == 0
    # An HTTP/1.1 request is held to max_requests when it gets a connection, and Envoy
    # counts that refusal as a pending overflow (upstream_rq_pending_overflow).
    overflow = {"pymesh.cluster": CLUSTER, "pymesh.overflow.kind": "pending"}
    assert _value(otel, "pymesh.circuit_breaker.overflows", **overflow) == 1
    local = {"pymesh.local_reply": "UO", "http.response.status_code": 503}
    assert _value(otel, "pymesh.client.requests", **local) == 1


def test_unsupported_field_warnings_are_a_counter(
    otel: Otel, control_plane: Any, mesh: pymesh.Mesh, echo_backend: EchoBackend
) -> None:
    from _edit import edited_mesh

    from pymesh.server import ENDPOINT_TYPE, ROUTE_TYPE, Snapshot
    from pymesh.testing import push_snapshot

    def edit(cluster: Any) -> None:
        cluster.health_checks.add().timeout.FromMilliseconds(250)  # warned: not implemented

    snap = edited_mesh(_reviews(echo_backend), cluster=edit)
    snap = Snapshot.of(
        "m1",
        listeners=snap.get(LISTENER_TYPE).values(),
        routes=snap.get(ROUTE_TYPE).values(),
        clusters=snap.get(CLUSTER_TYPE).values(),
        endpoints=snap.get(ENDPOINT_TYPE).values(),
    )
    from pymesh import telemetry

    assert telemetry.instruments() is not None  # the observable counter exists from now
    before = _value(
        otel,
        "pymesh.xds_client.unsupported_fields",
        **{"pymesh.xds.resource_type": "Cluster", "pymesh.xds.field": "health_checks"},
    )
    push_snapshot(control_plane, mesh, snap)
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        assert client.get("http://reviews:9080/").status_code == 200
    after = _value(
        otel,
        "pymesh.xds_client.unsupported_fields",
        **{"pymesh.xds.resource_type": "Cluster", "pymesh.xds.field": "health_checks"},
    )
    # Process-wide and monotonic: this mesh's accepted version added exactly one.
    assert after - before == 1
