"""What pymesh adds to a request, side by side with plain httpx and an Envoy hop.

One run, one process for the clients, the same xDS config for pymesh and Envoy:
a table of 50 routes (the request matches the last one), a cluster of 1 000 endpoints
(one fast keep-alive upstream process listening on 1 000 loopback addresses), ROUND_ROBIN.

    python benchmarks/overhead.py              # defaults: 3000 sync requests, 64-way async
    python benchmarks/overhead.py --requests 20000 --concurrency 64

Reports p50/p99 latency and client CPU µs per request for sync sequential requests, and
requests/s for async with N concurrent requests, plus the ratios the issue targets:
MeshTransport adds ≤ 25 µs p50 and ≤ 3 % CPU over plain httpx; Envoy's added latency is
≥ 10× ours; async throughput ≥ 0.95× plain httpx. Tracing on/off is reported when an
OpenTelemetry SDK provider is installed with --tracing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import pymesh
from pymesh.server import ControlPlane, compile_mesh
from pymesh.testing import bootstrap_for

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _stats import pct  # noqa: E402
from _upstream import loopback_hosts  # noqa: E402

# Envoy routes on the Host header: the same virtual host pymesh picks from the URL.
ENVOY_HOST = {"host": "bench:8080"}


def start_upstream(n: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_upstream.py"), "--hosts", str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "READY":
        proc.kill()
        raise SystemExit("upstream failed to start")
    return proc, int(line[1])


def mesh_config(port: int, n_endpoints: int, n_routes: int) -> dict[str, Any]:
    routes: list[dict[str, Any]] = [
        {"match": {"prefix": f"/other{i}/"}, "split": {"v1": 100}} for i in range(n_routes - 1)
    ]
    routes.append({"match": {"prefix": "/"}, "split": {"v1": 100}})
    return {
        "services": {
            "bench": {
                "port": 8080,
                "versions": {
                    "v1": {"endpoints": [f"{h}:{port}" for h in loopback_hosts(n_endpoints)]}
                },
                "routes": routes,
                "traffic_policy": {"lb": "ROUND_ROBIN"},
            }
        }
    }


def _limits(concurrency: int) -> httpx.Limits:
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


def sync_run(client: httpx.Client, url: str, n: int) -> tuple[list[float], float]:
    lat = []
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(url)
        lat.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise SystemExit(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
    return lat, (time.process_time() - cpu0) / n


async def async_run(client: httpx.AsyncClient, url: str, n: int, concurrency: int) -> float:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            r = await client.get(url)
            if r.status_code != 200:
                raise SystemExit(f"{url}: HTTP {r.status_code}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0)


def tracing_run(mesh: pymesh.Mesh, args: argparse.Namespace, warm: int) -> dict[str, float]:
    """MeshTransport again, with a global SDK TracerProvider whose processor drops every
    finished span: the cost of creating, filling and propagating spans, not of exporting.
    Runs last because OpenTelemetry's global provider cannot be uninstalled."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    provider = TracerProvider()
    provider.add_span_processor(SpanProcessor())  # the base class: on_end does nothing
    trace.set_tracer_provider(provider)
    url = "http://bench:8080/api"
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        sync_run(client, url, warm)
        lat, cpu = sync_run(client, url, args.requests)
    out = {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "cpu": cpu, "mean": statistics.fmean(lat)}

    async def arun() -> float:
        async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)) as client:
            await async_run(client, url, warm, args.concurrency)
            return await async_run(client, url, args.requests, args.concurrency)

    out["rps"] = asyncio.run(arun())
    return out


def in_process_cost(mesh: pymesh.Mesh, n: int = 20000) -> float:
    """Seconds of pymesh's own work per request, without I/O: routing, the endpoint pick,
    breaker/outlier bookkeeping and the upstream request (httpx's transport builds an
    httpcore request too, so this over-states what pymesh adds by that much). Best of 5."""
    from pymesh.transports import _httpx as T
    from pymesh.transports._attempts import Attempts

    transport = pymesh.MeshTransport(mesh)
    request = httpx.Client().build_request("GET", "http://bench:8080/api")
    state = mesh.slot("bench:8080").state
    assert state is not None
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            plan = transport._plan(state, request)
            assert not isinstance(plan, T.LocalReply)
            attempts = Attempts(plan, state, mesh.rng)
            t = attempts.start()
            assert not isinstance(t, T.LocalReply)
            T._upstream_request(plan, request, t.endpoint, t.deadline)
            attempts.answered(t, 200, None)
            t.release()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--routes", type=int, default=50)
    ap.add_argument(
        "--rounds", type=int, default=20, help="interleaved rounds (medians of paired differences)"
    )
    ap.add_argument("--no-envoy", action="store_true")
    ap.add_argument(
        "--tracing",
        action="store_true",
        help="also run MeshTransport with an SDK TracerProvider installed (spans recorded, "
        "not exported) and report tracing on vs off",
    )
    args = ap.parse_args()

    upstream, port = start_upstream(args.endpoints)
    envoy = None
    try:
        with ControlPlane() as cp:
            snap = compile_mesh(mesh_config(port, args.endpoints, args.routes), "overhead")
            cp.set_snapshot(snap)
            envoy_port = 0
            if not args.no_envoy:
                from pymesh.testing.envoy import envoy_snapshot, free_port, start_envoy

                envoy_port = free_port()
                cp.set_snapshot(envoy_snapshot(snap, {"bench:8080": envoy_port}), node_id="envoy")
                envoy = start_envoy(cp.port, "envoy")
                envoy.wait_listening([envoy_port])
            bootstrap = bootstrap_for(cp, "bench")
            with pymesh.Mesh(bootstrap=bootstrap) as mesh:
                direct_url = f"http://127.0.0.1:{port}/api"
                variants: list[tuple[str, Callable[[], httpx.Client], str]] = [
                    ("plain httpx", httpx.Client, direct_url),
                    (
                        "httpx + MeshTransport",
                        lambda: httpx.Client(transport=pymesh.MeshTransport(mesh)),
                        "http://bench:8080/api",
                    ),
                ]
                if envoy is not None:
                    variants.append(
                        (
                            "httpx → Envoy hop",
                            lambda: httpx.Client(headers=ENVOY_HOST),
                            f"http://127.0.0.1:{envoy_port}/api",
                        )
                    )
                results: dict[str, dict[str, float]] = {}
                warm = max(args.endpoints * 2, 500)
                # Rounds interleave the variants (a quiet spell or a CPU frequency step
                # then touches all of them); each figure is the median over the rounds.
                clients = {name: (make(), url) for name, make, url in variants}
                for client, url in clients.values():
                    sync_run(client, url, warm)
                rounds: dict[str, list[tuple[float, float, float]]] = {n: [] for n in clients}
                per_round = max(1, args.requests // args.rounds)
                for _ in range(args.rounds):
                    for name, (client, url) in clients.items():
                        lat, cpu = sync_run(client, url, per_round)
                        rounds[name].append((pct(lat, 0.5), pct(lat, 0.99), cpu))
                for name, (client, _url) in clients.items():
                    client.close()
                    rs = rounds[name]
                    results[name] = {
                        "p50": statistics.median(r[0] for r in rs),
                        "p99": statistics.median(r[1] for r in rs),
                        "cpu": statistics.median(r[2] for r in rs),
                    }
                # What a variant adds over plain httpx: the median of per-round paired
                # differences, so drifts of a shared machine (which move every variant of
                # a round alike) cancel out instead of landing in one variant's median.
                for name, rs in rounds.items():
                    base_rs = rounds["plain httpx"]
                    results[name]["added_p50"] = statistics.median(
                        r[0] - b[0] for r, b in zip(rs, base_rs, strict=True)
                    )
                    results[name]["added_cpu"] = statistics.median(
                        r[2] / b[2] - 1 for r, b in zip(rs, base_rs, strict=True)
                    )
                results["(in-process) pymesh work"] = {"cpu": in_process_cost(mesh)}

                async def arun() -> None:
                    avariants: list[tuple[str, Callable[[], httpx.AsyncClient], str]] = [
                        (
                            "plain httpx",
                            # Keep-alive for every concurrent request (httpx keeps only 20
                            # by default and would reconnect the rest each time).
                            lambda: httpx.AsyncClient(limits=_limits(args.concurrency)),
                            direct_url,
                        ),
                        (
                            "httpx + MeshTransport",
                            lambda: httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)),
                            "http://bench:8080/api",
                        ),
                    ]
                    if envoy is not None:
                        avariants.append(
                            (
                                "httpx → Envoy hop",
                                lambda: httpx.AsyncClient(
                                    limits=_limits(args.concurrency), headers=ENVOY_HOST
                                ),
                                f"http://127.0.0.1:{envoy_port}/api",
                            )
                        )
                    for name, make, url in avariants:
                        async with make() as client:
                            await async_run(client, url, warm, args.concurrency)
                            results[name]["rps"] = await async_run(
                                client, url, args.requests, args.concurrency
                            )

                asyncio.run(arun())
                if args.tracing:
                    results["MeshTransport + tracing"] = tracing_run(mesh, args, warm)
    finally:
        if envoy is not None:
            envoy.stop()
        upstream.kill()
        upstream.wait()

    print(
        f"\n{args.requests} requests, {args.endpoints} endpoints, {args.routes} routes, "
        f"async concurrency {args.concurrency}\n"
    )
    print(f"{'variant':26} {'p50 µs':>9} {'p99 µs':>9} {'CPU µs/req':>11} {'async req/s':>12}")
    for name, r in results.items():
        if "p50" not in r:
            continue
        print(
            f"{name:26} {r['p50'] * 1e6:9.1f} {r['p99'] * 1e6:9.1f} {r['cpu'] * 1e6:11.1f} "
            f"{r.get('rps', 0):12.0f}"
        )
    base, mesh_r = results["plain httpx"], results["httpx + MeshTransport"]
    own = results["(in-process) pymesh work"]["cpu"] * 1e6
    added = mesh_r["added_p50"] * 1e6
    print(
        f"\npymesh's own work per request (in process, no I/O): {own:.1f} µs "
        f"({100 * own / (base['cpu'] * 1e6):.1f} % of plain httpx's CPU per request)\n"
        f"MeshTransport adds {added:.1f} µs p50 end to end (target ≤ 25), "
        f"CPU {100 * mesh_r['added_cpu']:+.1f} % (target ≤ 3 %), "
        f"async throughput {mesh_r['rps'] / base['rps']:.2f}× plain (target ≥ 0.95)\n"
        f"(medians over {args.rounds} rounds of paired differences with plain httpx)"
    )
    if "httpx → Envoy hop" in results:
        env = results["httpx → Envoy hop"]
        env_added = env["added_p50"] * 1e6
        ours = max(added, own)
        print(
            f"Envoy hop adds {env_added:.1f} µs p50: {env_added / ours:.1f}× what pymesh adds "
            f"(the larger of the two figures above; target ≥ 10×)"
        )


if __name__ == "__main__":
    main()
