"""Client-side weighted round robin (gRFC A58) end to end: three real servers on
127.0.0.1 report fixed utilizations through pymesh.orca (gRPC trailer, HTTP header), and
pymesh's control plane serves their cluster with client_side_weighted_round_robin.

grpcio's own xDS client and pymesh's four drivers must split calls in inverse proportion
to the utilizations (qps is the same everywhere, so weight = qps / utilization), and a
server whose utilization rises loses its share once a report of it has been seen and one
weight update period has passed. Shares are counted over hundreds of calls made after a
warm-up that covers the blackout period; tolerances are generous (the split itself is
deterministic: gRPC's static stride scheduler).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
import httpx
import pytest

import pymesh
import pymesh.grpc
from pymesh import orca
from pymesh.server import ControlPlane, compile_mesh
from pymesh.testing import bootstrap_for
from pymesh.testing.envoy import ENVOY_NODE, envoy_snapshot, free_port, start_envoy

METHOD = "/pymesh.wrr.Svc/Call"
STREAM = "/pymesh.wrr.Svc/Stream"
HTTP_PORT = 9080
GRPC_PORT = 50051
QPS = 100.0
UTILIZATIONS = {"a": 0.2, "b": 0.4, "c": 0.8}
# weight = qps / utilization: shares 4/7, 2/7, 1/7.
EXPECTED = {"a": 4 / 7, "b": 2 / 7, "c": 1 / 7}
TOLERANCE = 0.08  # absolute, per share
BLACKOUT = 0.2  # seconds
UPDATE = 0.1  # weight_update_period (A58's floor)
COUNTED = 700


class Host:
    """A gRPC server (OrcaServerInterceptor) and an HTTP server (the header) reporting
    ``application_utilization`` and a fixed qps; answers name the host."""

    def __init__(self, name: str, utilization: float, *, oob: bool = False) -> None:
        self.name = name
        #: The header form the HTTP server sends (Envoy reads all three).
        self.fmt: orca.HeaderFormat = "BIN"
        self.metrics = orca.ServerMetricsRecorder()
        self.metrics.set_application_utilization(utilization)
        self.metrics.set_qps(QPS)
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                body = host.name.encode()
                self.send_response(200)
                value = orca.load_metrics_header(host.metrics.snapshot(), host.fmt)
                assert value is not None
                self.send_header(orca.ORCA_HEADER, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        futures.ThreadPoolExecutor(1).submit(self._http.serve_forever)

        def call(request: bytes, context: grpc.ServicerContext) -> bytes:
            return host.name.encode()

        def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            yield host.name.encode()

        # ``oob``: reports only on the OpenRcaService stream, none per call.
        interceptors = [] if oob else [orca.OrcaServerInterceptor(self.metrics)]
        self._grpc = grpc.server(futures.ThreadPoolExecutor(8), interceptors=interceptors)
        if oob:
            orca.OrcaService(self.metrics, min_report_interval=0.05).add_to_server(self._grpc)
        self._grpc.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "pymesh.wrr.Svc",
                    {
                        "Call": grpc.unary_unary_rpc_method_handler(call),
                        "Stream": grpc.unary_stream_rpc_method_handler(stream),
                    },
                ),
            )
        )
        self._grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()

    def address(self, protocol: str) -> str:
        port = self._http.server_address[1] if protocol == "http" else self._grpc_port
        return f"127.0.0.1:{port}"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(0).wait(10)


@pytest.fixture
def hosts() -> Iterator[dict[str, Host]]:
    made = {name: Host(name, u) for name, u in UTILIZATIONS.items()}
    try:
        yield made
    finally:
        for h in made.values():
            h.close()


def _config(hosts: dict[str, Host], protocol: str, oob: bool = False) -> dict[str, Any]:
    wrr = {
        "blackout_period": f"{int(BLACKOUT * 1000)}ms",
        "weight_update_period": f"{int(UPDATE * 1000)}ms",
    }
    if oob:
        wrr.update(enable_oob_load_report=True, oob_reporting_period="50ms")  # type: ignore[arg-type]
    return {
        "services": {
            "svc": {
                "port": HTTP_PORT if protocol == "http" else GRPC_PORT,
                "protocol": protocol,
                "endpoints": [h.address(protocol) for h in hosts.values()],
                "traffic_policy": {
                    "lb": "CLIENT_SIDE_WEIGHTED_ROUND_ROBIN",
                    "weighted_round_robin": wrr,
                },
            }
        }
    }


def _shares(names: list[str]) -> dict[str, float]:
    counts = collections.Counter(names)
    return {n: counts[n] / len(names) for n in EXPECTED}


def _assert_split(names: list[str], expected: dict[str, float] = EXPECTED) -> None:
    shares = _shares(names)
    for n, want in expected.items():
        assert abs(shares[n] - want) <= TOLERANCE, (shares, expected)


# -- pymesh's drivers: call(n) makes n calls and returns the answering hosts ----------


Caller = Callable[[int], list[str]]


def _run_phases(call: Caller, hosts: dict[str, Host]) -> None:
    """Warm up past the blackout, count the split; then a turns busy and, after calls
    for one blackout + update period (reports of a's new load arrive with them), the
    split follows."""
    deadline = time.monotonic() + BLACKOUT + 3 * UPDATE
    while time.monotonic() < deadline:
        call(10)
    _assert_split(call(COUNTED))
    # a turns busy: utilization 0.2 → 1.6 (weights 500, 250, 125 → 62.5, 250, 125).
    hosts["a"].metrics.set_application_utilization(1.6)
    deadline = time.monotonic() + BLACKOUT + 3 * UPDATE
    while time.monotonic() < deadline:
        call(10)
    _assert_split(call(COUNTED), {"a": 1 / 7, "b": 4 / 7, "c": 2 / 7})


def _mesh(
    cp: ControlPlane, hosts: dict[str, Host], protocol: str, node: str, oob: bool = False
) -> pymesh.Mesh:
    cp.set_snapshot(compile_mesh(_config(hosts, protocol, oob)))
    return pymesh.Mesh(bootstrap_for(cp, node_id=node), seed=11)


def test_pymesh_grpc_sync_splits_by_load(hosts: dict[str, Host]) -> None:
    with (
        ControlPlane() as cp,
        _mesh(cp, hosts, "grpc", "wrr-grpc-sync") as mesh,
        pymesh.grpc.insecure_channel(f"xds:///svc:{GRPC_PORT}", mesh) as ch,
    ):
        stub = ch.unary_unary(METHOD)

        def call(n: int) -> list[str]:
            return [stub(b"", timeout=30).decode() for _ in range(n)]

        _run_phases(call, hosts)
        # The weights in use show in config_dump (a: 100 / 1.6, b: 100 / 0.4, c: 100 / 0.8).
        (dump,) = mesh.config_dump()["clusters_in_use"].values()
        weights = sorted(round(ep["orca_weight"], 1) for ep in dump["endpoints"])
        assert weights == [62.5, 125.0, 250.0]


def test_pymesh_grpc_futures_and_streams_split_by_load(hosts: dict[str, Host]) -> None:
    """The calls that bypass the attempt loop (a single-attempt ``future()``, a
    server-streaming call) report their trailers too."""
    with (
        ControlPlane() as cp,
        _mesh(cp, hosts, "grpc", "wrr-grpc-streams") as mesh,
        pymesh.grpc.insecure_channel(f"xds:///svc:{GRPC_PORT}", mesh) as ch,
    ):
        unary = ch.unary_unary(METHOD)
        streaming = ch.unary_stream(STREAM)

        def call(n: int) -> list[str]:
            out = []
            for i in range(n):
                if i % 2:
                    out.append(unary.future(b"", timeout=30).result().decode())
                else:
                    out.extend(m.decode() for m in streaming(b"", timeout=30))
            return out

        _run_phases(call, hosts)


def test_pymesh_out_of_band_reports_split_by_load() -> None:
    """enable_oob_load_report: the servers send no per-call reports, only the
    OpenRcaService stream (one per endpoint, opened by pymesh's picker)."""
    hosts = {name: Host(name, u, oob=True) for name, u in UTILIZATIONS.items()}
    try:
        with (
            ControlPlane() as cp,
            _mesh(cp, hosts, "grpc", "wrr-oob", oob=True) as mesh,
            pymesh.grpc.insecure_channel(f"xds:///svc:{GRPC_PORT}", mesh) as ch,
        ):
            stub = ch.unary_unary(METHOD)

            def call(n: int) -> list[str]:
                return [stub(b"", timeout=30).decode() for _ in range(n)]

            _run_phases(call, hosts)
            streams = [t for t in threading.enumerate() if t.name.startswith("pymesh-orca-oob")]
            assert len(streams) >= 3
        # Closing the mesh ends its streams.
        for t in streams:
            t.join(20)
        assert not any(t.is_alive() for t in streams)
    finally:
        for h in hosts.values():
            h.close()


def test_pymesh_grpc_aio_splits_by_load(hosts: dict[str, Host]) -> None:
    async def run() -> None:
        with ControlPlane() as cp, _mesh(cp, hosts, "grpc", "wrr-grpc-aio") as mesh:
            async with pymesh.grpc.aio.insecure_channel(f"xds:///svc:{GRPC_PORT}", mesh) as ch:
                stub = ch.unary_unary(METHOD)
                names: list[str] = []
                deadline = time.monotonic() + BLACKOUT + 3 * UPDATE
                while time.monotonic() < deadline:
                    await stub(b"", timeout=30)
                for _ in range(COUNTED):
                    names.append((await stub(b"", timeout=30)).decode())
                _assert_split(names)

    asyncio.run(run())


def test_pymesh_httpx_sync_splits_by_load(hosts: dict[str, Host]) -> None:
    with (
        ControlPlane() as cp,
        _mesh(cp, hosts, "http", "wrr-httpx-sync") as mesh,
        httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=30) as client,
    ):

        def call(n: int) -> list[str]:
            return [client.get(f"http://svc:{HTTP_PORT}/").text for _ in range(n)]

        _run_phases(call, hosts)


def test_pymesh_httpx_async_splits_by_load(hosts: dict[str, Host]) -> None:
    async def run() -> None:
        with ControlPlane() as cp, _mesh(cp, hosts, "http", "wrr-httpx-async") as mesh:
            transport = pymesh.AsyncMeshTransport(mesh)
            async with httpx.AsyncClient(transport=transport, timeout=30) as client:
                url = f"http://svc:{HTTP_PORT}/"
                deadline = time.monotonic() + BLACKOUT + 3 * UPDATE
                while time.monotonic() < deadline:
                    await client.get(url)
                _assert_split([(await client.get(url)).text for _ in range(COUNTED)])

    asyncio.run(run())


# -- grpcio's own xDS client ---------------------------------------------------------

# A fresh interpreter: GRPC_XDS_BOOTSTRAP must be set before grpc initialises.
GRPCIO_CLIENT = """
import collections, json, sys, time
import grpc

warmup, counted = float(sys.argv[2]), int(sys.argv[3])
with grpc.insecure_channel("xds:///svc:" + sys.argv[4]) as channel:
    call = channel.unary_unary(sys.argv[1])
    deadline = time.monotonic() + warmup
    while time.monotonic() < deadline:
        call(b"", timeout=30, wait_for_ready=True)
    seen = collections.Counter(
        call(b"", timeout=30, wait_for_ready=True).decode() for _ in range(counted)
    )
print(json.dumps(dict(seen)))
"""


def _grpcio_split(hosts: dict[str, Host], tmp_path: Path, oob: bool) -> dict[str, int]:
    with ControlPlane() as cp:
        snap = compile_mesh(_config(hosts, "grpc", oob))
        cp.set_snapshot(snap)
        boot = tmp_path / "bootstrap.json"
        boot.write_text(json.dumps(bootstrap_for(cp, node_id="wrr-grpcio")))
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(boot)}
        # The warm-up covers the blackout period and the first connections.
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                GRPCIO_CLIENT,
                METHOD,
                str(BLACKOUT + 1.0),
                str(COUNTED),
                str(GRPC_PORT),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        seen: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
        assert cp.nacks == []
    return seen


def test_grpcio_native_wrr_splits_by_load(hosts: dict[str, Host], tmp_path: Path) -> None:
    """grpcio reads the per-call -bin trailer itself (its weighted_round_robin)."""
    seen = _grpcio_split(hosts, tmp_path, oob=False)
    _assert_split([n for n, k in seen.items() for _ in range(k)])


def test_grpcio_native_wrr_reads_pymesh_oob_service(tmp_path: Path) -> None:
    """enable_oob_load_report: grpcio opens OpenRcaService streams to pymesh's
    OrcaService (the servers send no per-call reports)."""
    hosts = {name: Host(name, u, oob=True) for name, u in UTILIZATIONS.items()}
    try:
        seen = _grpcio_split(hosts, tmp_path, oob=True)
    finally:
        for h in hosts.values():
            h.close()
    _assert_split([n for n, k in seen.items() for _ in range(k)])


# -- Envoy as the client: it parses what pymesh.orca servers send ----------------------


def test_envoy_wrr_reads_pymesh_orca_headers(hosts: dict[str, Host]) -> None:
    """Envoy's client_side_weighted_round_robin, fed by the three header forms pymesh.orca
    writes (one per host): the split shows Envoy parsed every one of them."""
    for host, fmt in zip(hosts.values(), ("BIN", "TEXT", "JSON"), strict=True):
        host.fmt = fmt  # type: ignore[assignment]
    port = free_port()
    with ControlPlane() as cp:
        snap = compile_mesh(_config(hosts, "http"))
        cp.set_snapshot(snap)
        cp.set_snapshot(envoy_snapshot(snap, {f"svc:{HTTP_PORT}": port}), node_id=ENVOY_NODE)
        with start_envoy(cp.port) as envoy, httpx.Client(timeout=30) as client:
            envoy.wait_listening([port], 60)
            url = f"http://127.0.0.1:{port}/"
            headers = {"host": f"svc:{HTTP_PORT}"}
            deadline = time.monotonic() + BLACKOUT + 1.0
            while time.monotonic() < deadline:
                assert client.get(url, headers=headers).status_code == 200
            names = [client.get(url, headers=headers).text for _ in range(COUNTED)]
        assert cp.nacks == []
    _assert_split(names)


# -- WSGI servers behind OrcaWsgiMiddleware ---------------------------------------------


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        return None


class WsgiHost:
    """A WSGI app on wsgiref (a real socket) whose load the middleware reports; the app
    itself records a per-call metric."""

    def __init__(self, name: str, utilization: float) -> None:
        self.name = name
        self.metrics = orca.ServerMetricsRecorder()
        self.metrics.set_qps(QPS)

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            rec = orca.call_metrics_recorder()
            assert rec is not None
            rec.set_application_utilization(utilization)  # the call's own value
            start_response("200 OK", [("content-type", "text/plain")])
            return [name.encode()]

        self._server = make_server(
            "127.0.0.1",
            0,
            orca.OrcaWsgiMiddleware(app, self.metrics, fmt="TEXT"),
            server_class=_ThreadingWSGIServer,
            handler_class=_Quiet,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def address(self, protocol: str) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def test_wsgi_middleware_feeds_pymesh_wrr() -> None:
    hosts = {name: WsgiHost(name, u) for name, u in UTILIZATIONS.items()}
    try:
        with httpx.Client(timeout=30) as plain:
            r = plain.get(f"http://{hosts['a'].address('http')}/")
            assert r.headers[orca.ORCA_HEADER] == (
                "TEXT application_utilization:0.2, rps_fractional:100.0"
            )
        with (
            ControlPlane() as cp,
            _mesh(cp, hosts, "http", "wrr-wsgi") as mesh,  # type: ignore[arg-type]  # duck-typed hosts
            httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=30) as client,
        ):
            url = f"http://svc:{HTTP_PORT}/"
            deadline = time.monotonic() + BLACKOUT + 3 * UPDATE
            while time.monotonic() < deadline:
                client.get(url)
            _assert_split([client.get(url).text for _ in range(COUNTED)])
    finally:
        for h in hosts.values():
            h.close()
