"""The parity matrix: every resilience scenario through all four drivers of the call
engine (httpx sync, httpx async, gRPC sync, gRPC aio), against real backends on
127.0.0.1 and pymesh's own control plane, with ONE expected outcome per scenario.

An outcome is protocol-neutral: ``ok`` (HTTP 200 / gRPC OK), ``unavailable`` (503 /
UNAVAILABLE), ``timeout`` (504 / DEADLINE_EXCEEDED); whether pymesh answered itself
(``local``); which host answered; how many requests each host saw; and that every
circuit-breaker slot was given back. Where gRPC has no such limit (max_pending_requests,
max_connections: gRFC A32 knows only max_concurrent_requests) the scenario says gRPC's
own outcome beside Envoy's HTTP one, and the breaker's overflow counters. Two cases
are regressions of gRPC diverging from httpx before the engine was shared: EDS
drop_overloads at 100 % (gRPC reached the backend) and a retry refused by max_retries
(gRPC answered "pymesh: upstream overflow" instead of the upstream's own status).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

import pymesh
import pymesh.grpc
from pymesh import orca
from pymesh.server import ControlPlane
from pymesh.testing import bootstrap_for

sys.path.insert(0, str(Path(__file__).parent.parent))

from _edit import add_http_filter, edited_mesh, stateful_session, via_aggregate

METHOD = "/pymesh.parity.Svc/Call"
HTTP_PORT = 9080
GRPC_PORT = 50051


class Host:
    """One backend serving both HTTP (any path) and gRPC (``METHOD``, raw bytes).

    ``fail``: answer 503 / UNAVAILABLE. ``delays``: seconds to wait before answering the
    first, second... request (then none); a waiting request ends early when the client
    goes away (gRPC) or the host closes. ``keepalive``: HTTP/1.1 connections are kept
    open between requests. Answers name the host and the request number.
    """

    def __init__(
        self,
        name: str,
        *,
        fail: bool = False,
        delays: tuple[float, ...] = (),
        utilization: float | None = None,
        keepalive: bool = False,
        blackhole: bool = False,
    ):
        self.name = name
        self._hole = _Blackhole() if blackhole else None
        # ``utilization``: the host reports ORCA load (pymesh.orca), qps 100 and this
        # application utilization, in the gRPC trailer and the HTTP header.
        self.metrics = orca.ServerMetricsRecorder()
        if utilization is not None:
            self.metrics.set_application_utilization(utilization)
            self.metrics.set_qps(100)
        self.fail = fail
        self.delays = list(delays)
        self.hits = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        host = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0 (the default) closes each connection after its answer.
            protocol_version = "HTTP/1.1" if keepalive else "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                n, delay = host._arrive()
                host._closing.wait(delay)
                status = 503 if host.fail else 200
                body = f"{host.name}:{n}".encode()
                try:
                    self.send_response(status)
                    report = orca.load_metrics_header(host.metrics.snapshot())
                    if report is not None:
                        self.send_header(orca.ORCA_HEADER, report)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up on this attempt

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

        def call(request: bytes, context: grpc.ServicerContext) -> bytes:
            n, delay = host._arrive()
            gone = threading.Event()
            context.add_callback(gone.set)
            deadline = time.monotonic() + delay
            while not gone.is_set() and not host._closing.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                gone.wait(min(left, 0.05))
            if host.fail:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"{host.name}:{n}")
            return f"{host.name}:{n}".encode()

        handler = grpc.method_handlers_generic_handler(
            "pymesh.parity.Svc", {"Call": grpc.unary_unary_rpc_method_handler(call)}
        )
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(16), interceptors=[orca.OrcaServerInterceptor(self.metrics)]
        )
        self._grpc.add_generic_rpc_handlers((handler,))
        self._grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()

    def _arrive(self) -> tuple[int, float]:
        with self._lock:
            self.hits += 1
            delay = self.delays.pop(0) if self.delays else 0.0
            return self.hits, delay

    def address(self, protocol: str) -> str:
        if self._hole is not None:
            return self._hole.address
        port = self._http.server_address[1] if protocol == "http" else self._grpc_port
        return f"127.0.0.1:{port}"

    def close(self) -> None:
        if self._hole is not None:
            self._hole.close()
        self._closing.set()
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(0).wait(10)


class _Blackhole:
    """A listening socket whose accept backlog is full: a connection to it never
    completes its handshake (the kernel drops the SYNs)."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._queued: list[socket.socket] = []
        while True:  # queue handshakes nobody accepts until one cannot complete
            probe = socket.socket()
            probe.settimeout(0.5)
            try:
                probe.connect(self._listener.getsockname())
            except OSError:
                probe.close()
                break
            self._queued.append(probe)
            assert len(self._queued) < 64, "the accept backlog never filled"

    def close(self) -> None:
        for s in self._queued:
            s.close()
        self._listener.close()


@dataclass(frozen=True)
class Result:
    """One call's outcome in protocol-neutral terms."""

    kind: str  # ok | unavailable | timeout | other:<status>
    local: bool  # pymesh answered without an upstream answer
    host: str  # the host named in the answer ("" for a local answer)


def _http_result(r: httpx.Response) -> Result:
    kind = {200: "ok", 503: "unavailable", 504: "timeout"}.get(r.status_code, f"other:{r}")
    local = "x-pymesh-local-reply" in r.headers
    return Result(kind, local, "" if local else r.text.partition(":")[0])


_GRPC_KINDS = {
    grpc.StatusCode.OK: "ok",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
}


def _grpc_result(code: grpc.StatusCode, text: str) -> Result:
    kind = _GRPC_KINDS.get(code, f"other:{code.name}")
    # pymesh's own answers say "pymesh: ..." (or are the fault filter's); a deadline
    # that grpcio enforces on the attempt is the client's own, too.
    local = text.startswith("pymesh") or text == "fault filter abort"
    local = local or code is grpc.StatusCode.DEADLINE_EXCEEDED
    return Result(kind, local, "" if local else text.partition(":")[0])


# -- the four drivers ----------------------------------------------------------------


def _httpx_sync(mesh: pymesh.Mesh, n: int) -> list[Result]:
    with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=20) as client:
        return [_http_result(client.get(f"http://svc:{HTTP_PORT}/")) for _ in range(n)]


def _httpx_async(mesh: pymesh.Mesh, n: int) -> list[Result]:
    async def run() -> list[Result]:
        transport = pymesh.AsyncMeshTransport(mesh)
        async with httpx.AsyncClient(transport=transport, timeout=20) as client:
            return [_http_result(await client.get(f"http://svc:{HTTP_PORT}/")) for _ in range(n)]

    return asyncio.run(run())


def _grpc_sync(mesh: pymesh.Mesh, n: int) -> list[Result]:
    out = []
    with pymesh.grpc.insecure_channel(f"xds:///svc:{GRPC_PORT}", mesh) as ch:
        call = ch.unary_unary(METHOD)
        for _ in range(n):
            try:
                out.append(_grpc_result(grpc.StatusCode.OK, call(b"", timeout=20).decode()))
            except grpc.RpcError as err:
                out.append(_grpc_result(err.code(), err.details() or ""))
    return out


def _grpc_aio(mesh: pymesh.Mesh, n: int) -> list[Result]:
    async def run() -> list[Result]:
        out = []
        async with pymesh.grpc.aio.insecure_channel(f"xds:///svc:{GRPC_PORT}", mesh) as ch:
            call = ch.unary_unary(METHOD)
            for _ in range(n):
                try:
                    reply = await call(b"", timeout=20)
                    out.append(_grpc_result(grpc.StatusCode.OK, reply.decode()))
                except grpc.aio.AioRpcError as err:
                    out.append(_grpc_result(err.code(), err.details() or ""))
        return out

    return asyncio.run(run())


DRIVERS: dict[str, tuple[str, Callable[[pymesh.Mesh, int], list[Result]]]] = {
    "httpx-sync": ("http", _httpx_sync),
    "httpx-async": ("http", _httpx_async),
    "grpc-sync": ("grpc", _grpc_sync),
    "grpc-aio": ("grpc", _grpc_aio),
}


# -- the scenarios -------------------------------------------------------------------


def _route(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    def edit(rc: Any) -> None:
        for vh in rc.virtual_hosts:
            for r in vh.routes:
                fn(r.route)

    return edit


def _drop_all(cla: Any) -> None:
    drop = cla.policy.drop_overloads.add(category="throttle")
    drop.drop_percentage.numerator = 100  # denominator HUNDRED (the default)


def _budget_none(cluster: Any) -> None:
    budget = cluster.circuit_breakers.thresholds[0].retry_budget
    budget.budget_percent.value = 0.0
    budget.min_retry_concurrency.value = 0


def _connect_timeout(cluster: Any) -> None:
    cluster.connect_timeout.FromMilliseconds(300)


def _hedge(action: Any) -> None:
    action.hedge_policy.hedge_on_per_try_timeout = True


def _stream_cap(action: Any) -> None:
    # gRPC ignores the route timeout (A31): its cap is max_stream_duration.
    action.max_stream_duration.max_stream_duration.FromMilliseconds(300)


_RETRY = {"attempts": 3, "on": "5xx,unavailable"}


@dataclass
class Scenario:
    hosts: dict[str, dict[str, Any]]  # name -> Host options
    routes: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    policy: dict[str, Any] = field(default_factory=dict)
    route_edit: Callable[[Any], None] | None = None
    cluster_edit: Callable[[Any], None] | None = None
    endpoints_edit: Callable[[Any], None] | None = None
    calls: int = 1
    expect: Result | None = None  # every call's outcome
    last: tuple[int, Result] | None = None  # the last N calls' outcome
    hits: dict[str, int] = field(default_factory=dict)
    check: Callable[[list[Result], dict[str, Host]], None] | None = None
    #: Leaf clusters (mesh-file versions: host names and EDS health) of an aggregate
    #: cluster the route sends to, in order; None: one cluster over every host.
    aggregate: dict[str, list[tuple[str, str]]] | None = None
    #: Where HTTP (Envoy's rules) and gRPC (the gRFCs') differ: called with the protocol.
    protocol_check: Callable[[str, list[Result], dict[str, Host]], None] | None = None
    # Where gRPC's own semantics differ (a limit gRPC does not have): its outcome, hits.
    grpc_expect: Result | None = None
    grpc_hits: dict[str, int] | None = None
    # protocol -> the breaker's (overflow.connections, overflow.pending) after the calls.
    overflow: dict[str, tuple[int, int]] = field(default_factory=dict)


def _retried_elsewhere(results: list[Result], hosts: dict[str, Host]) -> None:
    # Every call succeeds on the good host; the failing one was tried and retried away.
    assert results == [Result("ok", False, "good")] * len(results)
    assert hosts["good"].hits == len(results)
    if "bad" in hosts:
        assert 1 <= hosts["bad"].hits <= len(results)


def _all_ok(results: list[Result]) -> None:
    assert [r.kind for r in results] == ["ok"] * len(results)
    assert not any(r.local for r in results)


def _weighted_by_load(results: list[Result], hosts: dict[str, Host]) -> None:
    # ORCA weights 100/0.2 = 500 and 100/0.8 = 125: 80 % / 20 % once the weights apply
    # (one update period, 100 ms, after the first reports; before, round robin). The last
    # 300 calls come well after that on any machine (each call reports).
    last = results[-300:]
    assert all(r.kind == "ok" for r in results)
    light = sum(1 for r in last if r.host == "light") / len(last)
    assert 0.65 <= light <= 0.95, light


def _second_degraded(cla: Any) -> None:
    cla.endpoints[0].lb_endpoints[1].health_status = 5  # DEGRADED


def _degraded_tier(protocol: str, results: list[Result], hosts: dict[str, Host]) -> None:
    assert all(r.kind == "ok" and not r.local for r in results)
    if protocol == "http":
        # Envoy: health 70 (1 of 2 healthy, factor 1.4), degraded availability 70: the
        # degraded host takes the 30 % the healthy one cannot (binomial, 40 calls).
        assert 1 <= hosts["deg"].hits <= 30
        assert hosts["ok"].hits == len(results) - hosts["deg"].hits
    else:
        # gRPC (A27): only HEALTHY and UNKNOWN endpoints are used.
        assert (hosts["ok"].hits, hosts["deg"].hits) == (len(results), 0)


def _aggregate_spill(results: list[Result], hosts: dict[str, Host]) -> None:
    # One merged priority set: primary's P0 has health 70 (1 of 2 healthy), so about
    # 30 % goes to the fallback leaf; "the first leaf with a healthy host" would send 0.
    assert all(r.kind == "ok" and not r.local for r in results)
    assert hosts["u"].hits == 0
    assert 1 <= hosts["f"].hits <= 30
    assert hosts["p"].hits + hosts["f"].hits == len(results)


SCENARIOS: dict[str, Scenario] = {
    # Regression: gRPC sent the call to the backend.
    "local drop": Scenario(
        {"a": {}},
        endpoints_edit=_drop_all,
        expect=Result("unavailable", True, ""),
        hits={"a": 0},
    ),
    "breaker overflow": Scenario(
        {"a": {}},
        policy={"circuit_breakers": {"max_requests": 0}},
        expect=Result("unavailable", True, ""),
        hits={"a": 0},
    ),
    # Regression: gRPC answered "pymesh: upstream overflow" instead of a's own answer.
    "retry overflow": Scenario(
        {"a": {"fail": True}},
        routes=[{"retries": _RETRY}],
        policy={"circuit_breakers": {"max_retries": 0}},
        expect=Result("unavailable", False, "a"),
        hits={"a": 1},
    ),
    "per-try timeout": Scenario(
        {"a": {"delays": (5.0, 5.0)}},
        routes=[
            {"timeout": "15s", "retries": {"attempts": 1, "on": "5xx", "per_try_timeout": "300ms"}}
        ],
        expect=Result("timeout", True, ""),
        hits={"a": 2},
    ),
    # The first attempt answers after 1 s, past its 300 ms per-try timeout; the hedge
    # started then would take 5 s: only hedging (the first attempt not cancelled) gets
    # the first one's answer; a plain retry would time out twice.
    "hedging": Scenario(
        {"a": {"delays": (1.0, 5.0)}},
        routes=[
            {"timeout": "15s", "retries": {"attempts": 1, "on": "5xx", "per_try_timeout": "300ms"}}
        ],
        route_edit=_route(_hedge),
        expect=Result("ok", False, "a"),
        hits={"a": 2},
    ),
    # Envoy: a request with no ready connection is pending, even while its connection
    # connects, so with max_pending_requests 0 nothing is sent (503 UO). gRPC (A32) has
    # no pending limit: a call waits for its sub-channel to connect.
    "pending overflow": Scenario(
        {"a": {}},
        policy={"circuit_breakers": {"max_pending_requests": 0}},
        calls=2,
        expect=Result("unavailable", True, ""),
        hits={"a": 0},
        grpc_expect=Result("ok", False, "a"),
        grpc_hits={"a": 2},
        overflow={"http": (0, 2), "grpc": (0, 0)},
    ),
    # max_connections 1 over two endpoints: the second endpoint's first connection is
    # still opened (Envoy: an endpoint with none always gets one) and counted as
    # upstream_cx_overflow; later calls reuse the two. gRPC has no connection limit (one
    # sub-channel per address).
    "connection overflow": Scenario(
        {"a": {"keepalive": True}, "b": {"keepalive": True}},
        policy={"circuit_breakers": {"max_connections": 1}},
        calls=4,
        hits={"a": 2, "b": 2},
        check=lambda results, hosts: _all_ok(results),
        overflow={"http": (1, 0), "grpc": (0, 0)},
    ),
    # The cluster's connect_timeout (300 ms) ends an attempt to a host that never
    # completes the TCP handshake, and the retry goes to the other host: for httpx as
    # Envoy, and for gRPC sub-channels too (gRPC core's own connect deadline is 20 s,
    # the calls' 20 s timeout would end first).
    "connect timeout": Scenario(
        {"hole": {"blackhole": True}, "good": {}},
        routes=[{"retries": _RETRY}],
        cluster_edit=_connect_timeout,
        calls=4,
        check=_retried_elsewhere,
        hits={"hole": 0},
    ),
    "retry on another host": Scenario(
        {"bad": {"fail": True}, "good": {}},
        routes=[{"retries": {"attempts": 1, "on": "5xx,unavailable"}}],
        calls=6,
        check=_retried_elsewhere,
    ),
    "outlier ejection": Scenario(
        {"bad": {"fail": True}, "good": {}},
        policy={
            "outlier_detection": {
                "consecutive_5xx": 2,
                "interval": "60s",
                "base_ejection_time": "60s",
                "max_ejection_percent": 50,
            }
        },
        calls=16,
        last=(10, Result("ok", False, "good")),
        hits={"bad": 2},
    ),
    "fault abort": Scenario(
        {"a": {}},
        routes=[{"fault": {"abort": {"status": 503, "percent": 100}}}],
        expect=Result("unavailable", True, ""),
        hits={"a": 0},
    ),
    "fault delay": Scenario(
        {"a": {}},
        routes=[{"fault": {"delay": {"fixed": "200ms", "percent": 100}}}],
        expect=Result("ok", False, "a"),
        hits={"a": 1},
    ),
    "retry budget": Scenario(
        {"a": {"fail": True}},
        routes=[{"retries": _RETRY}],
        policy={"circuit_breakers": {"max_retries": 3}},
        cluster_edit=_budget_none,
        expect=Result("unavailable", False, "a"),
        hits={"a": 1},
    ),
    "weighted round robin (ORCA)": Scenario(
        {"light": {"utilization": 0.2}, "heavy": {"utilization": 0.8}},
        policy={
            "lb": "CLIENT_SIDE_WEIGHTED_ROUND_ROBIN",
            "weighted_round_robin": {"blackout_period": "0s", "weight_update_period": "100ms"},
        },
        calls=2000,
        check=_weighted_by_load,
    ),
    "degraded tier": Scenario(
        {"ok": {}, "deg": {}},
        endpoints_edit=_second_degraded,
        calls=40,
        protocol_check=_degraded_tier,
    ),
    "aggregate spill-over": Scenario(
        {"p": {}, "u": {}, "f": {}},
        aggregate={"primary": [("p", "HEALTHY"), ("u", "UNHEALTHY")], "fallback": [("f", "")]},
        calls=40,
        check=_aggregate_spill,
    ),
    "route timeout": Scenario(
        {"a": {"delays": (5.0,)}},
        routes=[{"timeout": "300ms"}],
        route_edit=_route(_stream_cap),
        expect=Result("timeout", True, ""),
        hits={"a": 1},
    ),
}


@pytest.fixture
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        yield cp


@pytest.mark.parametrize("driver", list(DRIVERS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_parity(
    scenario: str, driver: str, control_plane: ControlPlane, request: pytest.FixtureRequest
) -> None:
    sc = SCENARIOS[scenario]
    protocol, run = DRIVERS[driver]
    hosts = {name: Host(name, **opts) for name, opts in sc.hosts.items()}
    try:
        port = HTTP_PORT if protocol == "http" else GRPC_PORT
        svc: dict[str, Any] = {
            "port": port,
            "protocol": protocol,
            "endpoints": [h.address(protocol) for h in hosts.values()],
            "routes": sc.routes,
            "traffic_policy": sc.policy,
        }
        if sc.aggregate is not None:
            svc["endpoints"] = []
            svc["versions"] = {
                leaf: {
                    "endpoints": [
                        {"address": hosts[n].address(protocol), "health": health or "HEALTHY"}
                        for n, health in members
                    ]
                }
                for leaf, members in sc.aggregate.items()
            }
        snap = edited_mesh(
            {"services": {"svc": svc}},
            route=sc.route_edit,
            cluster=sc.cluster_edit,
            endpoints=sc.endpoints_edit,
        )
        if sc.aggregate is not None:
            snap = via_aggregate(snap, [f"outbound|{port}|{v}|svc" for v in sc.aggregate])
        control_plane.set_snapshot(snap)
        boot = bootstrap_for(control_plane, node_id=f"parity/{request.node.name}")
        with pymesh.Mesh(boot, seed=7) as mesh:
            started = time.monotonic()
            results = run(mesh, sc.calls)
            elapsed = time.monotonic() - started
            runtimes = mesh.clusters()
        expect, hits = sc.expect, sc.hits
        if protocol == "grpc" and sc.grpc_expect is not None:
            expect = sc.grpc_expect
        if protocol == "grpc" and sc.grpc_hits is not None:
            hits = sc.grpc_hits
        if expect is not None:
            assert results == [expect] * sc.calls
        if sc.last is not None:
            n, expected = sc.last
            assert results[-n:] == [expected] * n
        if sc.check is not None:
            sc.check(results, hosts)
        if sc.protocol_check is not None:
            sc.protocol_check(protocol, results, hosts)
        assert {name: hosts[name].hits for name in hits} == hits
        if scenario == "fault delay":
            assert elapsed >= 0.2  # the delay was served (a lower bound cannot flake)
        # Every slot taken was given back (hedged losers and retries included).
        for rt in runtimes.values():
            breaker = rt.breaker
            assert breaker is not None
            assert (breaker.active_requests, breaker.active_retries) == (0, 0), rt.name
            assert (breaker.pending_requests, breaker.active_connections) == (0, 0), rt.name
            if protocol in sc.overflow:
                overflow = (breaker.overflow.connections, breaker.overflow.pending)
                assert overflow == sc.overflow[protocol], rt.name
    finally:
        for h in hosts.values():
            h.close()


# -- stateful session (cookie): Envoy's filter over HTTP, gRPC A55 in metadata ---------

SESSION_COOKIE = "svc-session"


def _session_filter(lis: Any) -> None:
    add_http_filter(
        lis,
        "envoy.filters.http.stateful_session",
        stateful_session(SESSION_COOKIE, ttl_s=60),
    )


def _set_cookie(values: list[str]) -> str | None:
    for v in values:
        name, _, rest = v.split(";")[0].partition("=")
        if name.strip() == SESSION_COOKIE:
            return rest.strip().strip('"')
    return None


# Each driver: n calls, the first without a cookie, the others with the cookie the first
# answer set; returns (host per call, whether each answer set a cookie).
Sessions = Callable[[pymesh.Mesh, int], tuple[list[str], list[bool]]]


def _session_http(asynchronous: bool) -> Sessions:
    def run(mesh: pymesh.Mesh, n: int) -> tuple[list[str], list[bool]]:
        async def go() -> tuple[list[str], list[bool]]:
            hosts, sets = [], []
            cookie: str | None = None
            transport: Any = (
                pymesh.AsyncMeshTransport(mesh) if asynchronous else pymesh.MeshTransport(mesh)
            )
            client: Any = (httpx.AsyncClient if asynchronous else httpx.Client)(
                transport=transport, timeout=20
            )
            for _ in range(n):
                headers = {"cookie": f'{SESSION_COOKIE}="{cookie}"'} if cookie else {}
                client.cookies.clear()  # only the cookie this test sends
                r = client.get(f"http://svc:{HTTP_PORT}/", headers=headers)
                r = await r if asynchronous else r
                got = _set_cookie(r.headers.get_list("set-cookie"))
                cookie = cookie or got
                hosts.append(r.text.partition(":")[0])
                sets.append(got is not None)
            await client.aclose() if asynchronous else client.close()
            return hosts, sets

        return asyncio.run(go())

    return run


def _session_grpc_sync(mesh: pymesh.Mesh, n: int) -> tuple[list[str], list[bool]]:
    hosts, sets = [], []
    cookie: str | None = None
    with pymesh.grpc.insecure_channel(f"xds:///svc:{GRPC_PORT}", mesh) as ch:
        call = ch.unary_unary(METHOD)
        for _ in range(n):
            md = (("cookie", f"{SESSION_COOKIE}={cookie}"),) if cookie else None
            reply, c = call.with_call(b"", timeout=20, metadata=md)
            got = _set_cookie([v for k, v in c.initial_metadata() if k == "set-cookie"])
            cookie = cookie or got
            hosts.append(reply.decode().partition(":")[0])
            sets.append(got is not None)
    return hosts, sets


def _session_grpc_aio(mesh: pymesh.Mesh, n: int) -> tuple[list[str], list[bool]]:
    async def go() -> tuple[list[str], list[bool]]:
        hosts, sets = [], []
        cookie: str | None = None
        async with pymesh.grpc.aio.insecure_channel(f"xds:///svc:{GRPC_PORT}", mesh) as ch:
            multi = ch.unary_unary(METHOD)
            for _ in range(n):
                md = (("cookie", f"{SESSION_COOKIE}={cookie}"),) if cookie else None
                c = multi(b"", timeout=20, metadata=md)
                reply = await c
                initial = await c.initial_metadata()
                got = _set_cookie([v for k, v in initial if k == "set-cookie"])
                cookie = cookie or got
                hosts.append(reply.decode().partition(":")[0])
                sets.append(got is not None)
        return hosts, sets

    return asyncio.run(go())


SESSION_DRIVERS: dict[str, tuple[str, Sessions]] = {
    "httpx-sync": ("http", _session_http(False)),
    "httpx-async": ("http", _session_http(True)),
    "grpc-sync": ("grpc", _session_grpc_sync),
    "grpc-aio": ("grpc", _session_grpc_aio),
}


@pytest.mark.parametrize("driver", list(SESSION_DRIVERS))
def test_stateful_session_pins_calls_to_the_cookies_endpoint(
    driver: str, control_plane: ControlPlane, request: pytest.FixtureRequest
) -> None:
    """The first call (no cookie) is load balanced and answered with a cookie naming its
    endpoint; every later call carrying it goes to that endpoint (round robin would
    alternate) and sets no new cookie."""
    protocol, run = SESSION_DRIVERS[driver]
    hosts = {name: Host(name) for name in ("a", "b", "c")}
    try:
        config = {
            "services": {
                "svc": {
                    "port": HTTP_PORT if protocol == "http" else GRPC_PORT,
                    "protocol": protocol,
                    "endpoints": [h.address(protocol) for h in hosts.values()],
                }
            }
        }
        control_plane.set_snapshot(edited_mesh(config, listener=_session_filter))
        boot = bootstrap_for(control_plane, node_id=f"parity/{request.node.name}")
        with pymesh.Mesh(boot, seed=7) as mesh:
            served, set_cookie = run(mesh, 8)
        assert len(set(served)) == 1, served
        assert set_cookie == [True] + [False] * 7
        assert hosts[served[0]].hits == 8
    finally:
        for h in hosts.values():
            h.close()
