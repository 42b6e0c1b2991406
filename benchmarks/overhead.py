"""What pymesh adds to a request, side by side with plain httpx and an Envoy hop.

One run, one process for the clients, the same xDS config for pymesh and Envoy:
a table of 50 routes (the request matches the last one), a cluster of 1 000 endpoints
(one fast keep-alive upstream process listening on 1 000 loopback addresses),
LEAST_REQUEST (issue #12's setting; ``--lb ROUND_ROBIN`` for another policy).

    python benchmarks/overhead.py              # defaults: 3000 sync requests, 64-way async
    python benchmarks/overhead.py --requests 20000 --concurrency 64
    python benchmarks/overhead.py --lb ROUND_ROBIN

Variants: plain httpx to one endpoint (one hot keep-alive connection); plain httpx
spreading over the same 1 000 endpoints itself (round robin, one httpx transport per
endpoint: the same upstream work as the mesh's); httpx + MeshTransport; httpx +
MeshTransport routed to a one-endpoint cluster (same routes and policy, the endpoint of
"plain httpx, 1 endpoint": like for like with that one connection); httpx through an
Envoy hop. Reports p50/p99 latency and client CPU µs per request for sync sequential
requests, and requests/s for async with N concurrent requests, plus the figures issue #12
targets: MeshTransport adds ≤ 10 µs p50 over plain httpx spreading over the same
endpoints and ≤ 25 µs over plain httpx's one connection, and ≤ 3 % CPU; an Envoy hop adds
≥ 15× what pymesh adds in the same run; async throughput ≥ 0.95× plain httpx. Tracing
on/off is reported when an OpenTelemetry SDK provider is installed with --tracing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpcore
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
MESH_URL = "http://bench:8080/api"
#: The same routes and policy, a cluster of one endpoint (plain httpx's one endpoint).
MESH_ONE_URL = "http://one:8080/api"
#: How long idle connections are kept: the cluster's idle_timeout, which pymesh takes
#: from CDS with Envoy's default of 1 h (httpx's own default is 5 s).
KEEP_ALIVE = 3600.0
ASYNC_ROUNDS = 3  # pairs of rounds, one in each order
#: Issue #12's targets: what MeshTransport may add to the p50 over plain httpx spreading
#: over the same endpoints and over plain httpx's one connection (µs), and how many
#: times that an Envoy hop must add.
TARGET_SPREAD_US = 10.0
TARGET_ONE_US = 25.0
TARGET_ENVOY_X = 15.0
BASE_ONE = "plain httpx, 1 endpoint"
MESH = "httpx + MeshTransport"
MESH_ONE = "httpx + MeshTransport, 1 endpoint"
ENVOY = "httpx → Envoy hop"


def base_many(n: int) -> str:
    return f"plain httpx, {n} endpoints rr"


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


def mesh_config(port: int, n_endpoints: int, n_routes: int, lb: str) -> dict[str, Any]:
    routes: list[dict[str, Any]] = [
        {"match": {"prefix": f"/other{i}/"}, "split": {"v1": 100}} for i in range(n_routes - 1)
    ]
    routes.append({"match": {"prefix": "/"}, "split": {"v1": 100}})
    hosts = loopback_hosts(n_endpoints)

    def service(endpoints: list[str]) -> dict[str, Any]:
        return {
            "port": 8080,
            "versions": {"v1": {"endpoints": [f"{h}:{port}" for h in endpoints]}},
            "routes": routes,
            "traffic_policy": {"lb": lb},
        }

    return {"services": {"bench": service(hosts), "one": service(hosts[:1])}}


def _limits(concurrency: int) -> httpx.Limits:
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


class Target:
    """One client and the URLs it requests in turn (``per_worker``: async, a client of
    its own for each concurrent worker instead)."""

    def __init__(self, client: Any, urls: list[str], per_worker: list[Any] | None = None) -> None:
        self.client = client
        self.urls = urls
        self.per_worker = per_worker or []
        self.i = 0

    def next(self) -> str:
        i = self.i
        self.i = (i + 1) % len(self.urls)
        return self.urls[i]


class ByHost(httpx.BaseTransport):
    """Plain httpx spreading requests over the endpoints itself: one ``httpx.HTTPTransport``
    (one httpcore pool) per endpoint, chosen by the request's host. One transport per
    endpoint, not one for all, because httpcore's pool scans every connection it holds
    on every request (and keeps at most 100). They share one SSL context: httpx would
    otherwise load the CA bundle into each (about 0.8 MB apiece). Connections stay idle
    as long as the mesh's do (KEEP_ALIVE): with httpx's 5 s, round robin over 1 000
    endpoints in interleaved rounds comes back to an endpoint after its connection
    expired, and every request would reconnect."""

    def __init__(self, hosts: list[str]) -> None:
        ssl = httpx.create_ssl_context()
        limits = httpx.Limits(keepalive_expiry=KEEP_ALIVE)
        self.by_host = {h: httpx.HTTPTransport(verify=ssl, limits=limits) for h in hosts}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.by_host[request.url.host].handle_request(request)

    def close(self) -> None:
        for t in self.by_host.values():
            t.close()


class AsyncByHost(httpx.AsyncBaseTransport):
    """``ByHost`` for ``httpx.AsyncClient``."""

    def __init__(self, hosts: list[str], limits: httpx.Limits) -> None:
        ssl = httpx.create_ssl_context()
        self.by_host = {h: httpx.AsyncHTTPTransport(verify=ssl, limits=limits) for h in hosts}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.by_host[request.url.host].handle_async_request(request)

    async def aclose(self) -> None:
        for t in self.by_host.values():
            await t.aclose()


def _check(r: httpx.Response, url: str) -> None:
    if r.status_code != 200:
        raise SystemExit(f"{url}: HTTP {r.status_code}: {r.text[:200]}")


def sync_warm_up(endpoints: int) -> int:
    """Requests each sync variant makes before the measured rounds: enough that every
    endpoint has its connection open, whatever the policy. Round robin opens all of them
    in ``endpoints`` requests; random picks (least request, random, Envoy's too) need
    about ``endpoints * ln(endpoints)`` (the coupon collector: 6.9 per endpoint for
    1 000), and ``2 * endpoints`` left one endpoint in seven unconnected, so the mesh and
    Envoy paid connection set-ups inside the measured rounds that the baselines did not.
    With 8 per endpoint about e**-8 of them (0.3 of 1 000) are left."""
    return max(endpoints * 8, 500)


def sync_run(target: Target, n: int) -> tuple[list[float], float]:
    lat = []
    client = target.client
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        url = target.next()
        r = client.get(url)
        lat.append(time.perf_counter() - t0)
        _check(r, url)
    return lat, (time.process_time() - cpu0) / n


async def async_run(target: Target, n: int, concurrency: int) -> float:
    left = n
    clients = target.per_worker or [target.client]

    async def worker(client: Any) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            url = target.next()
            _check(await client.get(url), url)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(concurrency)))
    return n / (time.perf_counter() - t0)


def one_connection_clients(n: int, **kwargs: Any) -> list[httpx.AsyncClient]:
    """``n`` async clients of one kept-alive connection each, one per worker: for the
    variants that send everything to one address (plain httpx's one endpoint, the Envoy
    hop). One client holding all ``n`` connections to that address is httpx's pool at
    its worst: it looks at every connection it holds for each request, ~150 req/s here
    with 64 (docs/performance.md), which would measure httpx's pool, not the hop."""
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEP_ALIVE)
    return [httpx.AsyncClient(limits=one, **kwargs) for _ in range(n)]


def tracing_run(mesh: pymesh.Mesh, args: argparse.Namespace, warm: int) -> dict[str, float]:
    """MeshTransport again, with a global SDK TracerProvider whose processor drops every
    finished span: the cost of creating, filling and propagating spans, not of exporting.
    Runs last because OpenTelemetry's global provider cannot be uninstalled."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    provider = TracerProvider()
    provider.add_span_processor(SpanProcessor())  # the base class: on_end does nothing
    trace.set_tracer_provider(provider)
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        sync_run(Target(client, [MESH_URL]), sync_warm_up(args.endpoints))
        lat, cpu = sync_run(Target(client, [MESH_URL]), args.requests)
    out = {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "cpu": cpu, "mean": statistics.fmean(lat)}

    async def arun() -> float:
        async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)) as client:
            await async_run(Target(client, [MESH_URL]), warm, args.concurrency)
            return await async_run(Target(client, [MESH_URL]), args.requests, args.concurrency)

    out["rps"] = asyncio.run(arun())
    return out


class CannedPool(httpcore.ConnectionPool):
    """A connection pool that answers every request at once with the same small 200: the
    I/O taken out, so what is left is each transport's own work."""

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        return httpcore.Response(200, headers=[(b"content-length", b"2")], content=b"ok")

    def close(self) -> None:
        pass


def in_process_cost(mesh: pymesh.Mesh, rounds: int = 40, n: int = 2000) -> float:
    """Seconds MeshTransport.handle_request takes beyond httpx.HTTPTransport.handle_request
    per request, both over a CannedPool: routing, the pick, breaker/outlier bookkeeping,
    building the upstream request and wrapping the response, minus what httpx's own
    transport does in their place. Median of paired differences over interleaved rounds."""
    pool = CannedPool()
    mesh_transport = pymesh.MeshTransport(mesh)
    mesh_transport._pool = lambda rt, ep: pool  # type: ignore[method-assign]
    plain_transport = httpx.HTTPTransport()
    plain_transport._pool = pool
    mesh_request = httpx.Client().build_request("GET", MESH_URL)
    plain_request = httpx.Client().build_request("GET", "http://127.0.0.1:8080/api")

    def run(transport: httpx.BaseTransport, request: httpx.Request) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            response = transport.handle_request(request)
            response.read()
            response.close()
        return (time.perf_counter() - t0) / n

    run(mesh_transport, mesh_request)
    run(plain_transport, plain_request)
    diffs = [
        run(mesh_transport, mesh_request) - run(plain_transport, plain_request)
        for _ in range(rounds)
    ]
    return statistics.median(diffs)


def variants(
    mesh: pymesh.Mesh, hosts: list[str], port: int, envoy_port: int, concurrency: int = 0
) -> dict[str, Target]:
    """The clients side by side: sync ones, or async ones when ``concurrency`` is given."""
    urls = [f"http://{h}:{port}/api" for h in hosts]
    envoy_url = f"http://127.0.0.1:{envoy_port}/api"
    out: dict[str, Target] = {}
    if not concurrency:
        out[BASE_ONE] = Target(httpx.Client(), urls[:1])
        if len(hosts) > 1:
            # Beside the connection it is compared with, and never right before MESH
            # (rounds alternate their order): a variant runs faster after one that
            # warmed the same code, so MESH keeps the neighbours it had without it.
            one = httpx.Client(transport=pymesh.MeshTransport(mesh))
            out[MESH_ONE] = Target(one, [MESH_ONE_URL])
            out[base_many(len(hosts))] = Target(httpx.Client(transport=ByHost(hosts)), urls)
        out[MESH] = Target(httpx.Client(transport=pymesh.MeshTransport(mesh)), [MESH_URL])
        if envoy_port:
            out[ENVOY] = Target(httpx.Client(headers=ENVOY_HOST), [envoy_url])
        return out
    # Keep-alive for every concurrent request (httpx keeps only 20 by default and would
    # reconnect the rest each time).
    limits = httpx.Limits(
        max_connections=concurrency,
        max_keepalive_connections=concurrency,
        keepalive_expiry=KEEP_ALIVE,
    )
    out[BASE_ONE] = Target(
        httpx.AsyncClient(limits=limits), urls[:1], one_connection_clients(concurrency)
    )
    if len(hosts) > 1:
        spread = AsyncByHost(hosts, limits)
        out[base_many(len(hosts))] = Target(httpx.AsyncClient(transport=spread), urls)
    mesh_transport = pymesh.AsyncMeshTransport(mesh)
    out[MESH] = Target(httpx.AsyncClient(transport=mesh_transport), [MESH_URL])
    if envoy_port:
        envoy_client = httpx.AsyncClient(limits=limits, headers=ENVOY_HOST)
        hop = one_connection_clients(concurrency, headers=ENVOY_HOST)
        out[ENVOY] = Target(envoy_client, [envoy_url], hop)
    return out


def ordered(targets: dict[str, Target], i: int) -> list[tuple[str, Target]]:
    items = list(targets.items())
    return items[::-1] if i % 2 else items


def paired_added(
    rounds: dict[str, list[tuple[float, float, float]]], name: str, base: str
) -> tuple[float, float]:
    """What ``name`` adds over ``base``: (p50 seconds, CPU fraction), each the median of
    per-round paired differences, so drifts of a shared machine (which move every variant
    of a round alike) cancel out instead of landing in one variant's median."""
    rs, bs = rounds[name], rounds[base]
    return (
        statistics.median(r[0] - b[0] for r, b in zip(rs, bs, strict=True)),
        statistics.median(r[2] / b[2] - 1 for r, b in zip(rs, bs, strict=True)),
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--routes", type=int, default=50)
    ap.add_argument(
        "--lb",
        default="LEAST_REQUEST",
        help="the cluster's load balancing policy, for pymesh and Envoy alike (issue #12: "
        "LEAST_REQUEST; plain httpx's own spreading is always round robin)",
    )
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
    hosts = loopback_hosts(args.endpoints)
    like = base_many(args.endpoints) if args.endpoints > 1 else BASE_ONE
    envoy = None
    results: dict[str, dict[str, float]] = {}
    added: dict[tuple[str, str], tuple[float, float]] = {}
    try:
        with ControlPlane() as cp:
            config = mesh_config(port, args.endpoints, args.routes, args.lb)
            snap = compile_mesh(config, "overhead")
            cp.set_snapshot(snap)
            envoy_port = 0
            if not args.no_envoy:
                from pymesh.testing.envoy import envoy_snapshot, free_port, start_envoy

                envoy_port = free_port()
                cp.set_snapshot(envoy_snapshot(snap, {"bench:8080": envoy_port}), node_id="envoy")
                envoy = start_envoy(cp.port, "envoy")
                envoy.wait_listening([envoy_port])
            with pymesh.Mesh(bootstrap=bootstrap_for(cp, "bench")) as mesh:
                warm = max(args.endpoints * 2, 500)
                # Rounds interleave the variants (a quiet spell or a CPU frequency step
                # then touches all of them); each figure is the median over the rounds.
                targets = variants(mesh, hosts, port, envoy_port)
                for target in targets.values():
                    sync_run(target, sync_warm_up(args.endpoints))
                rounds: dict[str, list[tuple[float, float, float]]] = {n: [] for n in targets}
                per_round = max(1, args.requests // args.rounds)
                for i in range(args.rounds):
                    # Every other round runs the variants in reverse order: the variant
                    # that runs right after another pays for what that one left cold.
                    for name, target in ordered(targets, i):
                        lat, cpu = sync_run(target, per_round)
                        rounds[name].append((pct(lat, 0.5), pct(lat, 0.99), cpu))
                for name, target in targets.items():
                    target.client.close()
                    rs = rounds[name]
                    results[name] = {
                        "p50": statistics.median(r[0] for r in rs),
                        "p99": statistics.median(r[1] for r in rs),
                        "cpu": statistics.median(r[2] for r in rs),
                    }
                    for base in (BASE_ONE, like):
                        added[name, base] = paired_added(rounds, name, base)
                own = in_process_cost(mesh)

                async def arun() -> None:
                    # Interleaved rounds again; the figure is the median round.
                    atargets = variants(mesh, hosts, port, envoy_port, args.concurrency)
                    arounds: dict[str, list[float]] = {n: [] for n in atargets}
                    for target in atargets.values():
                        await async_run(target, warm, args.concurrency)
                    for i in range(ASYNC_ROUNDS * 2):
                        for name, target in ordered(atargets, i):
                            arounds[name].append(
                                await async_run(
                                    target, args.requests // ASYNC_ROUNDS // 2, args.concurrency
                                )
                            )
                    for name, target in atargets.items():
                        for client in [target.client, *target.per_worker]:
                            await client.aclose()
                        results[name]["rps"] = statistics.median(arounds[name])

                asyncio.run(arun())
                if args.tracing:
                    results["MeshTransport + tracing"] = tracing_run(mesh, args, warm)
    finally:
        if envoy is not None:
            envoy.stop()
        upstream.kill()
        upstream.wait()
    report(args, results, added, own, like)


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, float]],
    added: dict[tuple[str, str], tuple[float, float]],
    own: float,
    like: str,
) -> None:
    print(
        f"\n{args.requests} requests, {args.endpoints} endpoints, {args.routes} routes, "
        f"{args.lb}, async concurrency {args.concurrency}\n"
    )
    print(f"{'variant':33} {'p50 µs':>9} {'p99 µs':>9} {'CPU µs/req':>11} {'async req/s':>12}")
    for name, r in results.items():
        rps = f"{r['rps']:12.0f}" if "rps" in r else f"{'-':>12}"  # sync only: MESH_ONE
        print(f"{name:33} {r['p50'] * 1e6:9.1f} {r['p99'] * 1e6:9.1f} {r['cpu'] * 1e6:11.1f} {rps}")
    base, mesh_r = results[like], results[MESH]
    own_us = own * 1e6
    p50, cpu = added[MESH, like]
    print(
        f"\nMeshTransport's own work beyond httpx's transport (in process, no I/O): "
        f"{own_us:.1f} µs per request ({100 * own_us / (base['cpu'] * 1e6):.1f} % of plain "
        f"httpx's CPU per request)\n"
        f"Over {like} (the same upstream work): MeshTransport adds {p50 * 1e6:.1f} µs p50 "
        f"(target ≤ {TARGET_SPREAD_US if like != BASE_ONE else TARGET_ONE_US:g}), "
        f"CPU {100 * cpu:+.1f} % (target ≤ 3 %), "
        f"async throughput {mesh_r['rps'] / base['rps']:.2f}× (target ≥ 0.95)"
    )
    if like != BASE_ONE:
        p50_1, cpu_1 = added[MESH, BASE_ONE]
        spread_p50, spread_cpu = added[like, BASE_ONE]
        print(
            f"Over {BASE_ONE} (one hot connection): MeshTransport adds {p50_1 * 1e6:.1f} µs "
            f"p50 (target ≤ {TARGET_ONE_US:g}), CPU {100 * cpu_1:+.1f} %, "
            f"async {mesh_r['rps'] / results[BASE_ONE]['rps']:.2f}×; "
            f"of that, spreading over {args.endpoints} endpoints costs plain httpx itself "
            f"{spread_p50 * 1e6:.1f} µs p50, CPU {100 * spread_cpu:+.1f} %"
        )
        p50_same, cpu_same = added[MESH_ONE, BASE_ONE]
        print(
            f"Like for like on that one connection ({MESH_ONE}: the same routes and policy, "
            f"a one-endpoint cluster): MeshTransport adds {p50_same * 1e6:.1f} µs p50 "
            f"(target ≤ {TARGET_ONE_US:g}), CPU {100 * cpu_same:+.1f} %"
        )
    print(f"(medians over {args.rounds} rounds of paired differences)")
    if ENVOY in results:
        env_added = added[ENVOY, like][0] * 1e6
        ours = max(p50 * 1e6, own_us)
        print(
            f"Envoy hop adds {env_added:.1f} µs p50 over {like}: {env_added / ours:.1f}× what "
            f"pymesh adds (the larger of its in-process and end-to-end figures; "
            f"target ≥ {TARGET_ENVOY_X:g}×)"
        )


if __name__ == "__main__":
    main()
