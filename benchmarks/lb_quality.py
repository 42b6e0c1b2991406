"""Load-balancing quality when one endpoint turns slow: round robin vs least request vs
peak EWMA vs client-side weighted round robin (ORCA, gRFC A58), on real backends (one
process serving 11 loopback endpoints).

Each endpoint answers after ``--latency`` ms; for the middle half of the run one of them
answers 10x slower. A request succeeds when it completes within ``--timeout`` ms. Reports
success-within-timeout and p50/p99/p99.9 latency per policy, same traffic for each, with
the failures and how many of them the slow endpoint served (the policy's choice; the
others are the machine's noise, which ``--no-slow`` measures alone).

    python benchmarks/lb_quality.py                # ~40 s
    python benchmarks/lb_quality.py --requests 20000 --concurrency 16
    python benchmarks/lb_quality.py --simulate --repeat 10   # deterministic, ~2 s
    python benchmarks/lb_quality.py --policies peak_ewma --repeat 5 --verbose

``--simulate`` runs pymesh's real picker and EndpointStates on a virtual clock against
simulated endpoints and client (deterministic per seed, no machine noise). Peak EWMA is
pymesh's own policy, selected through ``load_balancing_policy`` with a TypedStruct of
type ``type.googleapis.com/pymesh.lb.v1.PeakEwma`` and ``--decay-time`` (default 10 s,
the policy's own default; earlier runs used 2 s, which probes a slow host more often).

``WRR`` is ``client_side_weighted_round_robin`` fed by per-call ORCA reports: each host
reports, in Envoy's ``endpoint-load-metrics`` header, its request rate and its mean
requests in flight over the last second (Little's law: what a server can measure of
itself), so weight = qps / utilization = 1 / mean latency. Blackout 1 s and weight
update 100 ms (``--wrr-blackout``), not the 10 s / 1 s defaults: the whole run is ~8 s.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import struct_pb2  # type: ignore[import-untyped, unused-ignore]
from xds.type.v3 import typed_struct_pb2

import pymesh
from pymesh.lb import EndpointStates, build_picker
from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
    Snapshot,
    compile_mesh,
)
from pymesh.testing import bootstrap_for
from pymesh.xds.resources.cluster import Cluster, LbPolicy, WrrConfig
from pymesh.xds.resources.endpoint import (
    ClusterLoadAssignment,
    Endpoint,
    Locality,
    LocalityEndpoints,
)
from pymesh.xds.resources.orca import LoadReport

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _stats import pct  # noqa: E402
from _upstream import loopback_hosts  # noqa: E402

# A tiny asyncio upstream: N loopback hosts on one port; host 0 turns slow on /__slow/on.
UPSTREAM = textwrap.dedent(
    """
    import asyncio, collections, socket, sys, time
    n, latency = int(sys.argv[1]), float(sys.argv[2])
    slow = {"on": False}
    def ok(index, orca):
        body = str(index).encode()
        head = b"HTTP/1.1 200 OK\\r\\ncontent-length: %d\\r\\n%s\\r\\n" % (len(body), orca)
        return head + body

    def handler(index):
        done = collections.deque()  # (end, seconds) of the last second's requests

        def report(now):
            # ORCA: rate and mean in-flight (busy seconds per second) over the last 1 s.
            while done and done[0][0] < now - 1.0:
                done.popleft()
            busy = sum(d for _, d in done)
            if not done or busy <= 0:
                return b""
            fields = b"application_utilization:%.6f, rps_fractional:%d" % (busy, len(done))
            return b"endpoint-load-metrics: TEXT " + fields + b"\\r\\n"

        async def handle(reader, writer):
            try:
                while True:
                    head = await reader.readuntil(b"\\r\\n\\r\\n")
                    if b"/__slow/" in head[:40]:
                        slow["on"] = b"/__slow/on" in head[:40]
                    delay = latency * (10 if index == 0 and slow["on"] else 1)
                    start = time.monotonic()
                    await asyncio.sleep(delay)
                    now = time.monotonic()
                    done.append((now, now - start))
                    # The body names the host, so the client can tell who served.
                    writer.write(ok(index, report(now)))
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
        return handle

    async def main():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        hosts = [f"127.0.0.{i + 1}" for i in range(n)]
        servers = [await asyncio.start_server(handler(i), h, port) for i, h in enumerate(hosts)]
        print("READY", port, flush=True)
        await asyncio.gather(*(s.serve_forever() for s in servers))

    asyncio.run(main())
    """
)

POLICIES = ["ROUND_ROBIN", "LEAST_REQUEST", "PEAK_EWMA", "WRR"]


def _peak_ewma(cluster: cluster_pb2.Cluster, decay_time: float) -> None:
    cluster.ClearField("lb_policy")
    cluster.load_balancing_policy.Clear()
    policy = cluster.load_balancing_policy.policies.add()
    policy.typed_extension_config.name = "pymesh.peak_ewma"
    ts = typed_struct_pb2.TypedStruct(type_url="type.googleapis.com/pymesh.lb.v1.PeakEwma")
    ts.value.CopyFrom(
        struct_pb2.Struct(fields={"decay_time": struct_pb2.Value(number_value=decay_time)})
    )
    policy.typed_extension_config.typed_config.Pack(ts)


def _traffic_policy(policy: str, blackout: float) -> dict[str, Any]:
    if policy == "WRR":
        return {
            "lb": "CLIENT_SIDE_WEIGHTED_ROUND_ROBIN",
            "weighted_round_robin": {
                "blackout_period": f"{int(blackout * 1000)}ms",
                "weight_update_period": "100ms",
            },
        }
    return {"lb": "ROUND_ROBIN" if policy == "PEAK_EWMA" else policy}


def snapshot(port: int, n: int, policy: str, decay_time: float, blackout: float) -> Snapshot:
    snap = compile_mesh(
        {
            "services": {
                "svc": {
                    "port": 8080,
                    "endpoints": [f"{h}:{port}" for h in loopback_hosts(n)],
                    "traffic_policy": _traffic_policy(policy, blackout),
                }
            }
        }
    )
    clusters = []
    for c in snap.get(CLUSTER_TYPE).values():
        copy = cluster_pb2.Cluster()
        copy.CopyFrom(c)
        if policy == "PEAK_EWMA":
            _peak_ewma(copy, decay_time)
        clusters.append(copy)
    return Snapshot.of(
        f"{policy}-1",
        listeners=snap.get(LISTENER_TYPE).values(),
        routes=snap.get(ROUTE_TYPE).values(),
        clusters=clusters,
        endpoints=snap.get(ENDPOINT_TYPE).values(),
    )


class Result(NamedTuple):
    """One request: seconds to complete (inf on error), the host that answered (-1 on
    error), and whether it was issued while the slow host was slow."""

    latency: float
    host: int
    slow_phase: bool
    started: float  # seconds since the slow host turned slow (negative before; or the start)


async def drive(
    client: httpx.AsyncClient,
    slow_ctl: str,
    n: int,
    concurrency: int,
    timeout: float,
    *,
    slow: bool = True,
) -> list[Result]:
    results: list[Result] = []
    left = n
    slow_now = False
    slow_at = [time.perf_counter()]  # the run's start until the slow phase begins
    control = httpx.AsyncClient()

    async def worker() -> None:
        nonlocal left, slow_now
        while left > 0:
            left -= 1
            done = n - left
            if slow and done == n // 4:
                # Host 0 turns slow as it reads this request, before answering it.
                slow_now = True
                slow_at[0] = time.perf_counter()
                await control.get(f"{slow_ctl}/__slow/on")
            elif slow and done == 3 * n // 4:
                await control.get(f"{slow_ctl}/__slow/off")
                slow_now = False
            phase = slow_now
            t0 = time.perf_counter()
            try:
                r = await client.get("http://svc:8080/", timeout=timeout * 20)
                host = int(r.content) if r.status_code == 200 else -1
            except httpx.HTTPError:
                host = -1
            elapsed = time.perf_counter() - t0 if host >= 0 else float("inf")
            results.append(Result(elapsed, host, phase, t0))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await control.get(f"{slow_ctl}/__slow/off")
    await control.aclose()
    return [r._replace(started=r.started - slow_at[0]) for r in results]


def summarize(results: list[Result], timeout: float) -> dict[str, Any]:
    lat = [r.latency for r in results]
    failed = [r for r in results if r.latency > timeout]
    return {
        "success": 1 - len(failed) / len(results),
        "p50": pct(lat, 0.5),
        "p99": pct(lat, 0.99),
        "p999": pct(lat, 0.999),
        "failed": len(failed),
        # Failures the slow host served: the policy's choice. The other failures are
        # the load generator's or the machine's (see --no-slow).
        "to_slow": sum(1 for r in results if r.host == 0 and r.latency > timeout),
    }


def run_policy(bootstrap: dict[str, Any], slow_ctl: str, args: argparse.Namespace) -> list[Result]:
    with pymesh.Mesh(bootstrap=bootstrap, seed=1) as mesh:

        async def run() -> list[Result]:
            transport = pymesh.AsyncMeshTransport(mesh)
            async with httpx.AsyncClient(transport=transport) as client:
                # Warm-up so every policy starts with history; with its own slow phase
                # unless --cold (then the slowdown in the measured run is a surprise).
                warm_slow = not (args.no_slow or args.cold)
                await drive(client, slow_ctl, 500, args.concurrency, 1.0, slow=warm_slow)
                return await drive(
                    client,
                    slow_ctl,
                    args.requests,
                    args.concurrency,
                    args.timeout / 1000,
                    slow=not args.no_slow,
                )

        return asyncio.run(run())


class _Sim:
    """Closed-loop clients on a virtual clock against simulated hosts (see simulate)."""

    def __init__(self, policy: str, args: argparse.Namespace, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.states = EndpointStates(clock=self.clock)
        name = "peak_ewma" if policy == "PEAK_EWMA" else policy.lower()
        wrr = None
        if policy == "WRR":
            name = "client_side_weighted_round_robin"
            wrr = WrrConfig(blackout_period=args.wrr_blackout, weight_update_period=0.1)
        lb = LbPolicy(name=name, decay_time=args.decay_time, wrr=wrr)  # type: ignore[arg-type]
        # WRR: each host's last second of (end, latency), for its simulated ORCA report.
        self.done: list[list[tuple[float, float]]] = [[] for _ in range(args.endpoints)]
        self.hosts = tuple(Endpoint(h, 8080) for h in loopback_hosts(args.endpoints))
        cla = ClusterLoadAssignment("svc", (LocalityEndpoints(Locality(), self.hosts),))
        self.picker = build_picker(
            Cluster("svc", lb_policy=lb),
            cla,
            states=self.states,
            rng=random.Random(seed),
            clock=self.clock,
        )
        self.latency = args.latency / 1000
        self.concurrency = args.concurrency

    def clock(self) -> float:
        return self.now

    def report(self, i: int, now: float, took: float) -> LoadReport:
        """Host ``i``'s ORCA report, as the live upstream makes it: rate and mean
        in-flight over the last second."""
        done = self.done[i]
        done.append((now, took))
        while done and done[0][0] < now - 1.0:
            done.pop(0)
        return LoadReport(application_utilization=sum(d for _, d in done), qps=len(done))

    def phase(self, total: int, slow: bool) -> list[Result]:
        """``total`` requests; host 0 is 10x slower for the middle half when ``slow``."""
        events: list[tuple[float, int, int, float, bool]] = []  # end, seq, host, start, slow
        out: list[Result] = []
        issued = 0
        slow_on = False
        t = slow_at = self.now
        for w in range(self.concurrency + total):
            if w >= self.concurrency:  # a client is free again: its request completes
                if not events:
                    break
                end, _, i, started, phase = heapq.heappop(events)
                self.now = t = end
                state = self.states[self.hosts[i].address]
                state.on_finish(end - started, end)
                if state.orca is not None:
                    state.orca.on_report(self.report(i, end, end - started), end)
                out.append(Result(end - started, i, phase, started))
            if issued == total:
                continue
            issued += 1
            if slow and issued == total // 4 + 1:
                slow_on, slow_at = True, t
            elif slow and issued == 3 * total // 4 + 1:
                slow_on = False
            self.now = t
            ep = self.picker.pick()
            assert ep is not None
            i = self.hosts.index(ep)
            self.states.get_or_create(ep.address).on_start()
            # Service time plus the client's own overhead (~4 ms a request, with a tail).
            took = self.latency * (10 if i == 0 and slow_on else 1)
            took += self.rng.expovariate(1 / 0.004)
            heapq.heappush(events, (t + took, issued, i, t, slow_on))
        self.now += 1.0  # a pause between warm-up and run, as in the live benchmark
        return [r._replace(started=r.started - slow_at) for r in out]


def simulate(policy: str, args: argparse.Namespace, seed: int) -> list[Result]:
    """The same experiment on a virtual clock: pymesh's real picker and EndpointStates,
    simulated hosts and client. Deterministic for a seed and free of the machine's noise,
    so it shows what the policy itself decides (the live run shows the whole stack)."""
    sim = _Sim(policy, args, seed)
    sim.phase(500, not (args.no_slow or args.cold))  # warm-up, as live
    return sim.phase(args.requests, not args.no_slow)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--endpoints", type=int, default=11)
    ap.add_argument("--latency", type=float, default=20.0, help="ms per answer")
    ap.add_argument("--timeout", type=float, default=80.0, help="ms: success within this")
    ap.add_argument(
        "--decay-time", type=float, default=10.0, help="peak EWMA decay_time, s (policy default)"
    )
    ap.add_argument(
        "--wrr-blackout", type=float, default=1.0, help="WRR blackout_period, s (default 10 s)"
    )
    ap.add_argument(
        "--cold", action="store_true", help="no slow phase in the warm-up: a first slowdown"
    )
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated")
    ap.add_argument("--repeat", type=int, default=1, help="runs per policy")
    ap.add_argument(
        "--verbose", action="store_true", help="list when the slow host was picked while slow"
    )
    ap.add_argument(
        "--no-slow", action="store_true", help="no host turns slow: the load generator's ceiling"
    )
    ap.add_argument(
        "--simulate",
        action="store_true",
        help="virtual clock, simulated hosts, real pickers: deterministic (seed = run number)",
    )
    args = ap.parse_args()
    policies = [p.strip().upper() for p in args.policies.split(",") if p.strip()]
    if args.simulate:
        runs = [
            (p, simulate(p, args, seed)) for seed in range(1, args.repeat + 1) for p in policies
        ]
    else:
        runs = live(policies, args)
    report(runs, args)


def live(policies: list[str], args: argparse.Namespace) -> list[tuple[str, list[Result]]]:
    """Run every policy ``args.repeat`` times against real loopback backends."""
    upstream = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM, str(args.endpoints), str(args.latency / 1000)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert upstream.stdout is not None
    port = int(upstream.stdout.readline().split()[1])
    slow_ctl = f"http://127.0.0.1:{port}"
    runs: list[tuple[str, list[Result]]] = []
    try:
        with ControlPlane() as cp:
            bootstrap = bootstrap_for(cp, "lb-quality")
            for _ in range(args.repeat):
                for policy in policies:
                    cp.set_snapshot(
                        snapshot(port, args.endpoints, policy, args.decay_time, args.wrr_blackout)
                    )
                    runs.append((policy, run_policy(bootstrap, slow_ctl, args)))
    finally:
        upstream.kill()
        upstream.wait()
    return runs


def report(runs: list[tuple[str, list[Result]]], args: argparse.Namespace) -> None:
    timeout = args.timeout / 1000
    if args.verbose:
        for policy, results in runs:
            failed = [r.started for r in results if r.host == 0 and r.latency > timeout]
            end = max((r.started for r in results if r.slow_phase), default=0.0)
            print(
                f"{policy}: slow phase {end:.2f} s; slow host's failed requests sent at "
                + ", ".join(f"{t:.3f}" for t in failed)
            )
    what = "no host slow (ceiling)" if args.no_slow else "one 10x slower for the middle half"
    how = "simulated" if args.simulate else "live"
    print(
        f"\n{how}: {args.requests} requests, {args.endpoints} endpoints at {args.latency} ms, "
        f"{what}; success = done within {args.timeout} ms; peak EWMA decay_time "
        f"{args.decay_time} s{'; cold' if args.cold else ''}\n"
    )
    header = f"{'policy':15} {'success':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}"
    print(f"{header} {'failed':>7} {'to slow':>8}")
    totals: dict[str, list[Result]] = {}
    for policy, results in runs:
        totals.setdefault(policy, []).extend(results)
        r = summarize(results, timeout)
        print(
            f"{policy:15} {100 * r['success']:8.2f}% {r['p50'] * 1e3:8.1f} "
            f"{r['p99'] * 1e3:8.1f} {r['p999'] * 1e3:9.1f} {r['failed']:7d} {r['to_slow']:8d}"
        )
    if args.repeat > 1:
        print("\nall runs together:")
        for policy, results in totals.items():
            r = summarize(results, timeout)
            print(
                f"{policy:15} {100 * r['success']:8.2f}% {r['p50'] * 1e3:8.1f} "
                f"{r['p99'] * 1e3:8.1f} {r['p999'] * 1e3:9.1f} {r['failed']:7d} "
                f"{r['to_slow']:8d}"
            )
    print("\ntarget: peak EWMA >= 99.9 % (round robin lands near 95 %)")


if __name__ == "__main__":
    main()
