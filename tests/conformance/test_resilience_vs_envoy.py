"""Resilience counts compared with the real Envoy under the same xDS config: attempts per
request with retries, requests a failing host takes before consecutive-5xx ejection, and
the connection-pool circuit breakers (max_pending_requests, cluster-wide max_connections)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _peers import EnvoyPair

from pymesh.server import compile_mesh
from pymesh.testing import EchoBackend

sys.path.insert(0, str(Path(__file__).parent.parent))

from _edit import edited_mesh
from _http_server import QuietHandler, ThreadedServer
from _polling import wait_until


class Pair(EnvoyPair):
    def __init__(self) -> None:
        super().__init__("pymesh-resilience")

    def serve(self, endpoints: list[str], route_edit: Any = None, **service: Any) -> None:
        """Serve reviews:9080 on ``endpoints`` (``service``: more of its mesh-file keys;
        ``route_edit``: an edit of its RouteConfiguration) to both."""
        config = {"services": {"reviews": {"port": 9080, "endpoints": endpoints, **service}}}
        self.serve_snapshot(
            compile_mesh(config) if route_edit is None else edited_mesh(config, route=route_edit)
        )


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def test_retry_attempts_per_request_match_envoy(pair: Pair) -> None:
    backend = EchoBackend("flaky").start()
    try:
        pair.serve(
            [backend.address],
            routes=[
                {
                    "retries": {
                        "attempts": 3,
                        "on": "5xx",
                        "backoff": {"base": "1ms", "max": "2ms"},
                    }
                }
            ],
        )
        counts: dict[str, list[tuple[int, int]]] = {}
        for who, client in pair.clients().items():
            with client:
                rows = []
                for fails in (0, 1, 2, 3, 5):
                    backend.reset()
                    backend.fail_next(fails)
                    status = client.get("/r").status_code
                    rows.append((status, backend.request_count))
                counts[who] = rows
        # Attempts = 1 + min(failures, 3); the 4th failure is what the caller sees.
        assert counts["envoy"] == [(200, 1), (200, 2), (200, 3), (200, 4), (503, 4)]
        assert counts["pymesh"] == counts["envoy"]
    finally:
        backend.close()


def test_consecutive_5xx_ejection_count_matches_envoy(pair: Pair) -> None:
    good = [EchoBackend(f"good{i}").start() for i in range(2)]
    bad = EchoBackend("bad", fail_rate=1.0).start()
    try:
        pair.serve(
            [b.address for b in [*good, bad]],
            traffic_policy={
                "outlier_detection": {
                    "consecutive_5xx": 5,
                    "interval": "30s",
                    "base_ejection_time": "60s",
                    "max_ejection_percent": 100,
                }
            },
        )
        seen = {}
        for who, client in pair.clients().items():
            with client:
                bad.reset()
                for _ in range(60):
                    client.get("/e")
                seen[who] = bad.request_count
        assert seen["envoy"] == 5
        assert seen["pymesh"] == seen["envoy"]
    finally:
        for b in [*good, bad]:
            b.close()


# -- circuit breakers: Envoy's connection pool limits ------------------------------------


class GatedBackend(ThreadedServer):
    """An HTTP/1.1 keep-alive backend: ``/hold...`` requests wait until :meth:`release`;
    counts arrivals and the client connections (peers) they came on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.reset()
        backend = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                with backend._lock:
                    backend.arrived += 1
                    backend.peers.add(self.client_address)
                    gate = backend._gate
                if self.path.startswith("/hold"):
                    gate.wait(60)
                body = backend.name.encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)

    def reset(self) -> None:
        with self._lock:
            self.arrived = 0
            self.peers: set[tuple[str, int]] = set()
            self._gate = threading.Event()

    def release(self) -> None:
        self._gate.set()

    def close(self) -> None:
        self.release()
        super().close()


def _breakers(pair: Pair, who: str) -> dict[str, int]:
    """The reviews cluster's breaker state, in Envoy's stat names, for either peer."""
    if who == "envoy":
        _, text = pair.envoy.admin_get("/stats?filter=reviews.*upstream_(rq_pending|cx_overflow)")
        stats = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            stats[name.rsplit(".", 1)[-1]] = int(value)
        return stats
    (breaker,) = [rt.breaker for name, rt in pair.mesh.clusters().items() if "reviews" in name]
    assert breaker is not None
    return {
        "upstream_rq_pending_active": breaker.pending_requests,
        "upstream_rq_pending_overflow": breaker.overflow.pending,
        "upstream_cx_overflow": breaker.overflow.connections,
    }


@pytest.mark.parametrize("max_requests", [1024, 1])
def test_max_pending_requests_matches_envoy(pair: Pair, max_requests: int) -> None:
    # One endpoint, one connection (already up), one request may wait for it: the
    # request on the connection and the one waiting succeed, the next is a local 503
    # (upstream_rq_pending_overflow) that never reaches the backend. With max_requests
    # 1 too, the same: Envoy counts a request against it only once it is attached to a
    # connection, so the waiting one is not refused for the one in flight.
    a = GatedBackend("a")
    try:
        pair.serve(
            [a.address],
            traffic_policy={
                "circuit_breakers": {
                    "max_connections": 1,
                    "max_pending_requests": 1,
                    "max_requests": max_requests,
                }
            },
        )
        seen = {}
        for who, client in pair.clients().items():
            a.reset()
            with client, ThreadPoolExecutor(2) as ex:
                warm = client.get("/warm").status_code
                first = ex.submit(client.get, "/hold1")
                wait_until(lambda: a.arrived == 2, f"{who}: the first request at the backend")
                second = ex.submit(client.get, "/hold2")
                wait_until(
                    lambda who=who: _breakers(pair, who)["upstream_rq_pending_active"] == 1,
                    f"{who}: the second request pending",
                )
                third = client.get("/third")
                a.release()
                statuses = [warm, first.result().status_code, second.result().status_code]
            stats = _breakers(pair, who)
            seen[who] = (
                [*statuses, third.status_code],
                a.arrived,
                len(a.peers),
                stats["upstream_rq_pending_overflow"],
                stats["upstream_cx_overflow"] >= 1,
            )
        assert seen["envoy"] == ([200, 200, 200, 503], 3, 1, 1, True)
        assert seen["pymesh"] == seen["envoy"]
    finally:
        a.close()


def test_max_connections_is_cluster_wide_as_in_envoy(pair: Pair) -> None:
    # Two endpoints, max_connections 2: one request held on each opens the two
    # connections the cluster may have; a third waits (pending) for one of them instead
    # of opening a third connection (upstream_cx_overflow), then succeeds on it.
    hosts = [GatedBackend("a"), GatedBackend("b")]
    try:
        pair.serve(
            [h.address for h in hosts],
            traffic_policy={"circuit_breakers": {"max_connections": 2}},
        )
        seen = {}
        for who, client in pair.clients().items():
            for h in hosts:
                h.reset()
            with client, ThreadPoolExecutor(3) as ex:
                held = []
                for n in (1, 2):
                    held.append(ex.submit(client.get, f"/hold{n}"))
                    wait_until(
                        lambda n=n: sum(h.arrived for h in hosts) == n,
                        f"{who}: request {n} at a backend",
                    )
                held.append(ex.submit(client.get, "/hold3"))
                wait_until(
                    lambda who=who: _breakers(pair, who)["upstream_rq_pending_active"] == 1,
                    f"{who}: the third request pending",
                )
                for h in hosts:
                    h.release()
                statuses = [f.result().status_code for f in held]
            stats = _breakers(pair, who)
            seen[who] = (
                statuses,
                sorted(h.arrived for h in hosts),
                [len(h.peers) for h in hosts],
                stats["upstream_cx_overflow"] >= 1,
            )
        assert seen["envoy"] == ([200, 200, 200], [1, 2], [1, 1], True)
        assert seen["pymesh"] == seen["envoy"]
    finally:
        for h in hosts:
            h.close()


# -- Retry-After ----------------------------------------------------------------------


class RetryAfterBackend(GatedBackend):
    """Answers ``/limited...`` with 503 and ``Retry-After: 1`` the first time, then 200."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.times: list[float] = []
        backend = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                with backend._lock:
                    backend.times.append(time.monotonic())
                    first = len(backend.times) == 1
                self.send_response(503 if first else 200)
                if first:
                    self.send_header("retry-after", "1")
                self.send_header("content-length", "0")
                self.end_headers()

        self._server.RequestHandlerClass = Handler


def _retry_after_seconds(rc: Any) -> None:
    for vh in rc.virtual_hosts:
        for r in vh.routes:
            rl = r.route.retry_policy.rate_limited_retry_back_off
            rl.reset_headers.add(name="Retry-After")  # SECONDS
            rl.max_interval.FromSeconds(30)


def test_retry_after_seconds_matches_envoy(pair: Pair) -> None:
    # Envoy's rate-limited back-off: the retry waits the upstream's Retry-After (1 s,
    # jittered up to 1.5 s) instead of the 1 ms back-off.
    backend = RetryAfterBackend("limited")
    try:
        pair.serve(
            [backend.address],
            routes=[{"retries": {"attempts": 1, "on": "5xx", "backoff": {"base": "1ms"}}}],
            route_edit=_retry_after_seconds,
        )
        seen = {}
        for who, client in pair.clients().items():
            backend.times.clear()
            with client:
                status = client.get("/limited").status_code
            gap = backend.times[1] - backend.times[0] if len(backend.times) == 2 else 0.0
            seen[who] = (status, len(backend.times), gap >= 1.0)  # a lower bound only
        assert seen["envoy"] == (200, 2, True)
        assert seen["pymesh"] == seen["envoy"]
    finally:
        backend.close()
