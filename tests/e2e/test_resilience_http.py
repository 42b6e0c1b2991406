"""Resilience through MeshTransport with real backends: outlier ejection, circuit
breaking, fault injection and timeouts (Envoy's semantics)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import pymesh
from pymesh.testing import EchoBackend

Push = Callable[..., Any]


def _svc(endpoints: list[str], **extra: Any) -> dict[str, Any]:
    return {"services": {"reviews": {"port": 9080, "endpoints": endpoints, **extra}}}


def _http1_options(edit_common: Callable[[Any], None]) -> Callable[[Any], None]:
    """A cluster edit: Istio's HttpProtocolOptions (explicit HTTP/1.1) whose
    common_http_protocol_options ``edit_common`` fills in."""
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

    def edit(cluster: Any) -> None:
        opts = hpo.HttpProtocolOptions()
        opts.explicit_http_config.http_protocol_options.SetInParent()
        edit_common(opts.common_http_protocol_options)
        cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ].Pack(opts)

    return edit


def _ejected(mesh: pymesh.Mesh, address: str) -> bool:
    for cluster in mesh.config_dump()["clusters_in_use"].values():
        for ep in cluster["endpoints"]:
            if ep["address"] == address:
                return bool(ep["ejected"])
    raise AssertionError(f"{address} not in any cluster")


def test_consecutive_5xx_ejects_and_host_returns(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    good = echo_backends(2, "good")
    bad = EchoBackend("bad", fail_rate=1.0).start()
    try:
        push_mesh(
            _svc(
                [b.address for b in [*good, bad]],
                traffic_policy={
                    "outlier_detection": {
                        "consecutive_5xx": 5,
                        "interval": "200ms",
                        "base_ejection_time": "1s",
                        "max_ejection_percent": 100,
                    }
                },
            )
        )
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            for _ in range(60):
                client.get("http://reviews:9080/")
            # Sequential requests: at most 5 reached the bad host before its ejection.
            assert bad.request_count == 5
            assert _ejected(mesh, bad.address)
            before = bad.request_count
            # Back after base_ejection_time (x1) at the next interval sweep.
            deadline = time.monotonic() + 10
            while _ejected(mesh, bad.address):
                assert time.monotonic() < deadline, "host never returned from ejection"
                time.sleep(0.05)  # observing the detector's state against a deadline
            for _ in range(9):
                client.get("http://reviews:9080/")
            assert bad.request_count > before
    finally:
        bad.close()


async def test_max_requests_overflow_fails_fast(mesh: pymesh.Mesh, push_mesh: Push) -> None:
    slow = EchoBackend("slow", delay=1.5).start()
    try:
        push_mesh(_svc([slow.address], traffic_policy={"circuit_breakers": {"max_requests": 5}}))
        async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh), timeout=30) as c:
            started = time.monotonic()

            async def one() -> tuple[int, str, float]:
                r = await c.get("http://reviews:9080/")
                return r.status_code, r.headers.get("x-pymesh-local-reply", ""), time.monotonic()

            results = await asyncio.gather(*(one() for _ in range(15)))
        overflow = [r for r in results if r[1] == "UO"]
        assert len(overflow) == 10
        assert all(status == 503 for status, _, _ in overflow)
        assert all(t - started < 1.4 for _, _, t in overflow)  # failed fast, not queued
        assert [r[0] for r in results].count(200) == 5
        assert slow.request_count == 5
    finally:
        slow.close()


def test_fault_abort_share_and_aborted_requests_never_reach_backend(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(
        _svc([echo_backend.address], routes=[{"fault": {"abort": {"status": 418, "percent": 50}}}])
    )
    n = 1000
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        statuses = Counter(client.get("http://reviews:9080/").status_code for _ in range(n))
    sigma = math.sqrt(n * 0.25)
    assert abs(statuses[418] - n / 2) <= 4.5 * sigma, statuses
    assert statuses[418] + statuses[200] == n
    assert echo_backend.request_count == statuses[200]


def test_fault_delay_adds_its_delay(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(
        _svc(
            [echo_backend.address],
            routes=[{"fault": {"delay": {"fixed": "300ms", "percent": 100}}}],
        )
    )
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        t0 = time.monotonic()
        assert client.get("http://reviews:9080/").status_code == 200
        assert time.monotonic() - t0 >= 0.3


def test_route_timeout_answers_504_before_a_slow_backend(
    mesh: pymesh.Mesh, push_mesh: Push
) -> None:
    slow = EchoBackend("slow", delay=3.0).start()
    try:
        push_mesh(_svc([slow.address], routes=[{"timeout": "300ms"}]))
        with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=30) as client:
            t0 = time.monotonic()
            resp = client.get("http://reviews:9080/")
            took = time.monotonic() - t0
        assert resp.status_code == 504 and resp.headers["x-pymesh-local-reply"] == "UT"
        assert 0.3 <= took < 2.5
    finally:
        slow.close()


def test_caller_timeout_is_never_extended(mesh: pymesh.Mesh, push_mesh: Push) -> None:
    slow = EchoBackend("slow", delay=3.0).start()
    try:
        push_mesh(_svc([slow.address], routes=[{"timeout": "10s"}]))
        with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=0.3) as client:
            t0 = time.monotonic()
            with pytest.raises(httpx.TimeoutException):
                client.get("http://reviews:9080/")
            assert time.monotonic() - t0 < 2.5
    finally:
        slow.close()


def test_per_try_timeout_retries_on_another_host(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    slow = EchoBackend("slow", delay=3.0).start()
    try:
        push_mesh(
            _svc(
                [slow.address, echo_backend.address],
                routes=[
                    {
                        "timeout": "10s",
                        "retries": {"attempts": 2, "on": "5xx", "per_try_timeout": "200ms"},
                    }
                ],
            )
        )
        with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=30) as client:
            t0 = time.monotonic()
            statuses = [client.get("http://reviews:9080/").status_code for _ in range(4)]
            took = time.monotonic() - t0
        assert statuses == [200] * 4
        # Round robin sent two first tries to the slow host; each timed out after 200 ms
        # and was retried elsewhere (without per_try_timeout this takes >= 6 s).
        assert took < 2.5
        assert len(slow.wait_for_requests(2, timeout=10)) >= 2
    finally:
        slow.close()


def test_retriable_request_headers_gate_retries(
    mesh: pymesh.Mesh, control_plane: Any, echo_backend: EchoBackend
) -> None:
    from _edit import edited_mesh

    from pymesh.testing import push_snapshot

    def only_marked(rc: Any) -> None:
        for route in rc.virtual_hosts[0].routes:
            hm = route.route.retry_policy.retriable_request_headers.add(name="x-idempotent")
            hm.present_match = True

    config = _svc([echo_backend.address], routes=[{"retries": {"attempts": 2, "on": "5xx"}}])
    push_snapshot(control_plane, mesh, edited_mesh(config, route=only_marked))
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        echo_backend.fail_next(1)
        assert client.get("http://reviews:9080/").status_code == 503  # not retried
        echo_backend.fail_next(1)
        marked = client.get("http://reviews:9080/", headers={"x-idempotent": "1"})
        assert marked.status_code == 200  # retried
    assert echo_backend.request_count == 3


@pytest.mark.parametrize(
    "detector",
    [
        {"success_rate_minimum_hosts": 5, "success_rate_request_volume": 20},
        {
            "enforcing_success_rate": 0,
            "enforcing_failure_percentage": 100,
            "failure_percentage_minimum_hosts": 5,
            "failure_percentage_request_volume": 20,
            "failure_percentage_threshold": 50,
        },
    ],
    ids=["success_rate", "failure_percentage"],
)
def test_interval_detectors_eject_on_the_sweep(
    mesh: pymesh.Mesh,
    push_mesh: Push,
    echo_backends: Callable[..., list[EchoBackend]],
    detector: dict[str, Any],
) -> None:
    """Success-rate and failure-percentage ejection happen at the interval sweep (not per
    failure, unlike the consecutive detectors), then the host gets no traffic."""
    good = echo_backends(4, "ok")
    bad = EchoBackend("bad", fail_rate=1.0).start()
    try:
        push_mesh(
            _svc(
                [b.address for b in [*good, bad]],
                traffic_policy={
                    "outlier_detection": {
                        "enforcing_consecutive_5xx": 0,
                        "interval": "300ms",
                        "base_ejection_time": "30s",
                        "max_ejection_percent": 100,
                        **detector,
                    }
                },
            )
        )
        deadline = time.monotonic() + 30
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            while not _ejected(mesh, bad.address):
                assert time.monotonic() < deadline, "the sweep never ejected the failing host"
                client.get("http://reviews:9080/")
            # Consecutive detectors are off: it took at least the request volume to eject.
            assert bad.request_count >= 20
            before = bad.request_count
            for _ in range(50):
                client.get("http://reviews:9080/")
        assert bad.request_count == before
        assert all(_ejected(mesh, b.address) is False for b in good)
    finally:
        bad.close()


async def test_max_pending_requests_bounds_the_queue_for_a_connection(
    mesh: pymesh.Mesh, push_mesh: Push
) -> None:
    # HTTP/1.1, one connection allowed and already up: 1 request on it, 2 waiting for
    # it (pending), the other 5 overflow at once (Envoy's upstream_rq_pending_overflow).
    with EchoBackend("slow", delay=0.5) as slow:
        push_mesh(
            _svc(
                [slow.address],
                traffic_policy={
                    "circuit_breakers": {"max_connections": 1, "max_pending_requests": 2}
                },
            )
        )
        async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh), timeout=30) as c:
            assert (await c.get("http://reviews:9080/")).status_code == 200  # connected
            results = await asyncio.gather(*(c.get("http://reviews:9080/") for _ in range(8)))
        flags = Counter((r.status_code, r.headers.get("x-pymesh-local-reply", "")) for r in results)
        assert flags == {(200, ""): 3, (503, "UO"): 5}
        assert all(b"max_pending_requests" in r.content for r in results if r.status_code == 503)
        assert slow.request_count == 4
        assert len({r.peer for r in slow.requests}) == 1  # all on the one connection


@pytest.mark.parametrize("transport", ["sync", "async"])
async def test_max_requests_per_connection_opens_new_connections(
    mesh: pymesh.Mesh, control_plane: Any, echo_backend: EchoBackend, transport: str
) -> None:
    from _edit import edited_mesh

    from pymesh.testing import push_snapshot

    def two(common: Any) -> None:
        common.max_requests_per_connection.value = 2

    two_per_connection = _http1_options(two)

    push_snapshot(
        control_plane, mesh, edited_mesh(_svc([echo_backend.address]), cluster=two_per_connection)
    )
    if transport == "sync":
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            statuses = [client.get("http://reviews:9080/").status_code for _ in range(6)]
    else:
        async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)) as ac:
            statuses = [(await ac.get("http://reviews:9080/")).status_code for _ in range(6)]
    assert statuses == [200] * 6
    peers = [r.peer for r in echo_backend.requests]
    # Sequential requests, two per connection: three connections, each used twice in turn.
    assert [peers.count(p) for p in dict.fromkeys(peers)] == [2, 2, 2]


@pytest.mark.parametrize("transport", ["sync", "async"])
async def test_per_try_idle_timeout_retries_then_answers_504(
    mesh: pymesh.Mesh, control_plane: Any, echo_backend: EchoBackend, transport: str
) -> None:
    from _edit import edited_mesh

    from pymesh.testing import push_snapshot

    def idle_200ms(rc: Any) -> None:
        for route in rc.virtual_hosts[0].routes:
            route.route.retry_policy.per_try_idle_timeout.FromMilliseconds(200)

    async def get_all(n: int) -> list[httpx.Response]:
        if transport == "sync":
            with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=30) as client:
                return [client.get("http://reviews:9080/") for _ in range(n)]
        async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh), timeout=30) as c:
            return [await c.get("http://reviews:9080/") for _ in range(n)]

    with EchoBackend("stalled", delay=6.0) as stalled:
        retried = _svc(
            [stalled.address, echo_backend.address],
            routes=[{"timeout": "20s", "retries": {"attempts": 1, "on": "5xx"}}],
        )
        push_snapshot(control_plane, mesh, edited_mesh(retried, route=idle_200ms))
        t0 = time.monotonic()
        responses = await get_all(2)
        # Round robin sent one of the two first tries to the stalled host: no byte for
        # 200 ms, so that try was given up and retried on the other host.
        assert [(r.status_code, r.headers["x-backend"]) for r in responses] == [(200, "echo")] * 2
        assert time.monotonic() - t0 < 5.0  # well before the stalled host's 6 s answer
        alone = _svc([stalled.address], routes=[{"timeout": "20s"}])
        push_snapshot(control_plane, mesh, edited_mesh(alone, route=idle_200ms))
        [resp] = await get_all(1)
        # No retry left: Envoy's local 504 (the caller's own 30 s timeout never fired).
        assert (resp.status_code, resp.headers["x-pymesh-local-reply"]) == (504, "UT")
        assert b"idle timeout" in resp.content


@pytest.mark.parametrize("transport", ["sync", "async"])
async def test_cluster_idle_timeout_closes_idle_connections(
    mesh: pymesh.Mesh, control_plane: Any, echo_backend: EchoBackend, transport: str
) -> None:
    from _edit import edited_mesh

    from pymesh.testing import push_snapshot

    def one_second(common: Any) -> None:
        common.idle_timeout.FromSeconds(1)

    idle_1s = _http1_options(one_second)

    push_snapshot(control_plane, mesh, edited_mesh(_svc([echo_backend.address]), cluster=idle_1s))
    waits = [0.0, 0.0, 2.5, 0.0]  # the third request comes after the connection idled out
    if transport == "sync":
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            for wait in waits:
                time.sleep(wait)  # idle time under test, not synchronisation
                assert client.get("http://reviews:9080/").status_code == 200
    else:
        async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)) as ac:
            for wait in waits:
                await asyncio.sleep(wait)
                assert (await ac.get("http://reviews:9080/")).status_code == 200
    peers = [r.peer for r in echo_backend.requests]
    assert peers[0] == peers[1] and peers[2] == peers[3] and peers[1] != peers[2]


def test_connect_timeout_bounds_a_connect_that_never_completes_and_is_retried(
    mesh: pymesh.Mesh, control_plane: Any, echo_backend: EchoBackend
) -> None:
    """Cluster connect_timeout (Envoy's, default 5 s): an endpoint whose accept backlog
    is full never completes the handshake; each attempt to it gives up after the
    cluster's 300 ms and the retry goes to the other host."""
    import socket

    from _edit import edited_mesh

    from pymesh.testing import push_snapshot

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filler = socket.create_connection(hole.getsockname())  # fills the backlog of 0
    address = f"127.0.0.1:{hole.getsockname()[1]}"
    try:
        config = {
            "services": {
                "svc": {
                    "port": 80,
                    "endpoints": [address, echo_backend.address],
                    "routes": [{"retries": {"attempts": 2, "on": "connect-failure"}}],
                    "traffic_policy": {"lb": "ROUND_ROBIN"},
                }
            }
        }

        def short_connect(cluster: Any) -> None:
            cluster.connect_timeout.FromMilliseconds(300)

        push_snapshot(control_plane, mesh, edited_mesh(config, cluster=short_connect))
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            for _ in range(4):  # round robin: at least two start on the black hole
                t0 = time.monotonic()
                resp = client.get("http://svc/", timeout=30)
                assert resp.status_code == 200
                assert resp.headers["x-backend"] == echo_backend.name
                assert time.monotonic() - t0 < 10  # not httpx's 30 s, nor Envoy's 5 s x 2
    finally:
        filler.close()
        hole.close()
