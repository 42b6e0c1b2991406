"""Load-balancing quality when one endpoint turns slow: round robin vs least request vs
peak EWMA, on real backends (one process serving 11 loopback endpoints).

Each endpoint answers after ``--latency`` ms; for the middle half of the run one of them
answers 10x slower. A request succeeds when it completes within ``--timeout`` ms. Reports
success-within-timeout and p50/p99/p99.9 latency per policy, same traffic for each.

    python benchmarks/lb_quality.py                # ~30 s
    python benchmarks/lb_quality.py --requests 20000 --concurrency 16

Peak EWMA is pymesh's own policy, selected through ``load_balancing_policy`` with a
TypedStruct of type ``type.googleapis.com/pymesh.lb.v1.PeakEwma``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import struct_pb2  # type: ignore[import-untyped, unused-ignore]
from xds.type.v3 import typed_struct_pb2

import pymesh
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _stats import pct  # noqa: E402
from _upstream import loopback_hosts  # noqa: E402

# A tiny asyncio upstream: N loopback hosts on one port; host 0 turns slow on /__slow/on.
UPSTREAM = textwrap.dedent(
    """
    import asyncio, socket, sys
    n, latency = int(sys.argv[1]), float(sys.argv[2])
    slow = {"on": False}
    OK = b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok"

    def handler(index):
        async def handle(reader, writer):
            try:
                while True:
                    head = await reader.readuntil(b"\\r\\n\\r\\n")
                    if b"/__slow/" in head[:40]:
                        slow["on"] = b"/__slow/on" in head[:40]
                    delay = latency * (10 if index == 0 and slow["on"] else 1)
                    await asyncio.sleep(delay)
                    writer.write(OK)
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

POLICIES = ["ROUND_ROBIN", "LEAST_REQUEST", "PEAK_EWMA"]


def _peak_ewma(cluster: cluster_pb2.Cluster) -> None:
    cluster.ClearField("lb_policy")
    cluster.load_balancing_policy.Clear()
    policy = cluster.load_balancing_policy.policies.add()
    policy.typed_extension_config.name = "pymesh.peak_ewma"
    ts = typed_struct_pb2.TypedStruct(type_url="type.googleapis.com/pymesh.lb.v1.PeakEwma")
    ts.value.CopyFrom(struct_pb2.Struct(fields={"decay_time": struct_pb2.Value(number_value=2)}))
    policy.typed_extension_config.typed_config.Pack(ts)


def snapshot(port: int, n: int, policy: str) -> Snapshot:
    lb = "ROUND_ROBIN" if policy == "PEAK_EWMA" else policy
    snap = compile_mesh(
        {
            "services": {
                "svc": {
                    "port": 8080,
                    "endpoints": [f"{h}:{port}" for h in loopback_hosts(n)],
                    "traffic_policy": {"lb": lb},
                }
            }
        }
    )
    clusters = []
    for c in snap.get(CLUSTER_TYPE).values():
        copy = cluster_pb2.Cluster()
        copy.CopyFrom(c)
        if policy == "PEAK_EWMA":
            _peak_ewma(copy)
        clusters.append(copy)
    return Snapshot.of(
        f"{policy}-1",
        listeners=snap.get(LISTENER_TYPE).values(),
        routes=snap.get(ROUTE_TYPE).values(),
        clusters=clusters,
        endpoints=snap.get(ENDPOINT_TYPE).values(),
    )


async def drive(
    client: httpx.AsyncClient, slow_ctl: str, n: int, concurrency: int, timeout: float
) -> list[float]:
    latencies: list[float] = []
    left = n
    control = httpx.AsyncClient()

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            done = n - left
            if done == n // 4:
                await control.get(f"{slow_ctl}/__slow/on")
            elif done == 3 * n // 4:
                await control.get(f"{slow_ctl}/__slow/off")
            t0 = time.perf_counter()
            try:
                r = await client.get("http://svc:8080/", timeout=timeout * 20)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0 if ok else float("inf"))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await control.get(f"{slow_ctl}/__slow/off")
    await control.aclose()
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--endpoints", type=int, default=11)
    ap.add_argument("--latency", type=float, default=20.0, help="ms per answer")
    ap.add_argument("--timeout", type=float, default=80.0, help="ms: success within this")
    args = ap.parse_args()
    upstream = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM, str(args.endpoints), str(args.latency / 1000)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert upstream.stdout is not None
    port = int(upstream.stdout.readline().split()[1])
    slow_ctl = f"http://127.0.0.1:{port}"
    results: dict[str, dict[str, Any]] = {}
    try:
        with ControlPlane() as cp:
            bootstrap = bootstrap_for(cp, "lb-quality")
            for policy in POLICIES:
                cp.set_snapshot(snapshot(port, args.endpoints, policy))
                with pymesh.Mesh(bootstrap=bootstrap, seed=1) as mesh:

                    async def run() -> list[float]:
                        transport = pymesh.AsyncMeshTransport(mesh)
                        async with httpx.AsyncClient(transport=transport) as client:
                            await drive(client, slow_ctl, 500, args.concurrency, 1.0)  # warm
                            return await drive(
                                client,
                                slow_ctl,
                                args.requests,
                                args.concurrency,
                                args.timeout / 1000,
                            )

                    lat = asyncio.run(run())
                ok = sum(1 for v in lat if v <= args.timeout / 1000)
                results[policy] = {
                    "success": ok / len(lat),
                    "p50": pct(lat, 0.5),
                    "p99": pct(lat, 0.99),
                    "p999": pct(lat, 0.999),
                }
    finally:
        upstream.kill()
        upstream.wait()
    print(
        f"\n{args.requests} requests, {args.endpoints} endpoints at {args.latency} ms, one 10x "
        f"slower for the middle half; success = done within {args.timeout} ms\n"
    )
    print(f"{'policy':15} {'success':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}")
    for policy, r in results.items():
        print(
            f"{policy:15} {100 * r['success']:8.2f}% {r['p50'] * 1e3:8.1f} "
            f"{r['p99'] * 1e3:8.1f} {r['p999'] * 1e3:9.1f}"
        )
    print("\ntarget: peak EWMA >= 99.9 % (round robin lands near 95 %)")


if __name__ == "__main__":
    main()
