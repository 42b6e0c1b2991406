"""Unary gRPC server side: plain ``grpc.server`` vs ``pymesh.grpc.server`` (gRFC A36).

    python benchmarks/xds_server.py [--calls 5000] [--rounds 3]

Three servers with the same handler on 127.0.0.1, plaintext: plain grpcio, pymesh's xDS
server with a Listener of one chain and one ``*`` route (no RBAC), and the same with
two RBAC filters (a DENY policy that does not match and an ALLOW policy on the path, as
the mesh file's ``inbound.authorization`` compiles). The client is a plain grpcio
channel in a fresh interpreter, sequential unary calls after a warm-up; rounds alternate
the servers and the best round of each is reported, with the ratio to plain grpcio.
What pymesh adds is its per-call interceptor: filter chain (memoised per connection),
route match and RBAC; its in-process cost (``authorize`` alone, µs per call) is printed
last, the stable number on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent import futures
from typing import Any

import grpc

import pymesh
import pymesh.grpc
from pymesh.server import ControlPlane, compile_mesh
from pymesh.testing import bootstrap_for

SERVICE = "pymesh.bench.Echo"
METHOD = f"/{SERVICE}/Echo"

CLIENT = """
import json, sys, time
import grpc
address, calls, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with grpc.insecure_channel(address) as channel:
    call = channel.unary_unary(sys.argv[4])
    call(b"w", timeout=30, wait_for_ready=True)
    for _ in range(warmup):
        call(b"w", timeout=30)
    lat = []
    clock = time.perf_counter
    start = clock()
    for _ in range(calls):
        t0 = clock()
        call(b"ping", timeout=30)
        lat.append(clock() - t0)
    total = clock() - start
lat.sort()
p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
print(json.dumps({"rps": calls / total, "p50": p50, "p99": p99}))
"""


def handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(lambda r, _c: r)}
    )


def mesh_file(port: int, rbac: bool) -> dict[str, Any]:
    inbound: dict[str, Any] = {"mtls": "DISABLE", "listen": [f"127.0.0.1:{port}"]}
    if rbac:
        inbound["authorization"] = [
            {"name": "no-admin", "action": "DENY",
             "rules": [{"to": [{"operation": {"paths": ["*/Admin"]}}]}]},
            {"name": "echo", "rules": [{"to": [{"operation": {"paths": [f"/{SERVICE}/*"]}}]}]},
        ]  # fmt: skip
    return {"port": port, "protocol": "grpc", "inbound": inbound}


class _Context:
    """What authorize() reads from a grpcio ServicerContext (a plaintext peer)."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


def check_cost(server: pymesh.grpc.XdsServer, n: int = 100_000) -> float:
    """Seconds per authorize() call on ``server``'s published config (best of 3)."""
    from pymesh.grpc._xds_server import authorize

    config = server.ports[0].config
    assert config is not None
    ctx, md = _Context(), (("user-agent", "grpc-python"),)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            assert authorize(config, ctx, METHOD, md, "") is None
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def run_client(address: str, calls: int, warmup: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, address, str(calls), str(warmup), METHOD],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pool = futures.ThreadPoolExecutor(4)
    plain = grpc.server(pool)
    plain.add_generic_rpc_handlers((handler(),))
    plain_port = plain.add_insecure_port("127.0.0.1:0")
    plain.start()
    with ControlPlane() as cp:
        boot = bootstrap_for(cp, node_id="bench-server")
        boot["server_listener_resource_name_template"] = "bench/%s"
        mesh = pymesh.Mesh(boot)
        servers: dict[str, str] = {"plain grpcio": f"127.0.0.1:{plain_port}"}
        xds: list[pymesh.grpc.XdsServer] = []
        services: dict[str, Any] = {}
        ready = []
        for label, rbac in (("pymesh xDS server", False), ("pymesh xDS server + RBAC", True)):
            serving = threading.Event()
            s = pymesh.grpc.server(
                pool, mesh=mesh, on_serving_mode=lambda _a, ok, _e, ev=serving: ok and ev.set()
            )
            s.add_generic_rpc_handlers((handler(),))
            port = s.add_xds_port("127.0.0.1:0")
            services[f"svc{len(xds)}"] = mesh_file(port, rbac)
            servers[label] = f"127.0.0.1:{port}"
            xds.append(s)
            ready.append(serving)
        for svc in services.values():
            svc["inbound"]["listener_name_template"] = "bench/%s"
        cp.set_snapshot(compile_mesh({"services": services}, "bench"))
        for s in xds:
            s.start()
        for ev in ready:
            assert ev.wait(30), "an xDS server did not get its Listener"
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for label, address in servers.items():
                r = run_client(address, args.calls, max(200, args.calls // 10))
                if label not in best or r["rps"] > best[label]["rps"]:
                    best[label] = r
        base = best["plain grpcio"]
        print(f"{args.calls} sequential unary calls, best of {args.rounds} rounds")
        print(f"{'server':28} {'calls/s':>9} {'p50 µs':>8} {'p99 µs':>8} {'p50 ratio':>10}")
        for label, r in best.items():
            print(
                f"{label:28} {r['rps']:9.0f} {r['p50'] * 1e6:8.0f} {r['p99'] * 1e6:8.0f} "
                f"{r['p50'] / base['p50']:10.2f}"
            )
        print()
        print("in-process cost of the per-call check (pymesh.grpc._xds_server.authorize):")
        for label, s in zip(list(servers)[1:], xds, strict=True):
            print(f"  {label:26} {check_cost(s) * 1e6:6.1f} µs per call")
        for s in xds:
            s.stop(None).wait(10)
        mesh.close()
    plain.stop(None)


if __name__ == "__main__":
    main()
