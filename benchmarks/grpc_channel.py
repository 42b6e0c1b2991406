"""Unary gRPC: plain grpcio vs grpcio's native xds:/// vs pymesh.grpc, side by side.

    python benchmarks/grpc_channel.py [--calls 5000] [--rounds 3] [--aio]

``--aio`` runs the same with grpc.aio channels (pymesh.grpc.aio), one call at a time.

``grpcio-xds+mesh`` is grpcio's native client again with a pymesh.Mesh merely open in the
same process (no pymesh channel): what the Mesh's presence costs a client. With grpc.aio
that is most of the gap, see docs/performance.md.

One backend (its own process) and pymesh's embedded control plane. Each client runs in
its own fresh interpreter (grpcio reads GRPC_XDS_BOOTSTRAP once, at start), makes
sequential unary calls from one thread after a warm-up, and reports throughput and
p50/p99 latency (the best round of each; rounds alternate the clients) and the client
process's CPU per call (all its threads; the lowest round), which a shared machine
disturbs far less than throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _procs import client_json

METHOD = "/pymesh.bench.Echo/Echo"
TARGET = "xds:///echo:50051"

SERVER = """
import sys
from concurrent import futures
import grpc
handler = grpc.method_handlers_generic_handler(
    "pymesh.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda r, c: r)}
)
server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()  # until the parent closes our stdin
server.stop(0)
"""


def run_aio_client(mode: str, address: str, bootstrap: str, calls: int, warmup: int) -> None:
    """:func:`run_client` with grpc.aio channels."""
    import asyncio

    import grpc

    async def run() -> tuple[list[float], float, float]:
        mesh = None
        if mode == "plain":
            channel: Any = grpc.aio.insecure_channel(address)
        elif mode.startswith("grpcio-xds"):
            if mode == "grpcio-xds+mesh":
                import pymesh

                mesh = pymesh.Mesh(bootstrap, seed=1)
            channel = grpc.aio.insecure_channel(TARGET)
        else:
            import pymesh
            import pymesh.grpc

            mesh = pymesh.Mesh(bootstrap, seed=1)
            channel = pymesh.grpc.aio.insecure_channel(TARGET, mesh)
        call = channel.unary_unary(METHOD)
        await call(b"w", timeout=30, wait_for_ready=True)
        for _ in range(warmup):
            await call(b"w", timeout=30)
        lat = []
        clock = time.perf_counter
        cpu = time.process_time()
        start = clock()
        for _ in range(calls):
            t0 = clock()
            await call(b"ping", timeout=30)
            lat.append(clock() - t0)
        total = clock() - start
        cpu = time.process_time() - cpu
        await channel.close()
        if mesh is not None:
            mesh.close()
        return lat, total, cpu

    lat, total, cpu = asyncio.run(run())
    _report(calls, total, lat, cpu)


def _report(calls: int, total: float, lat: list[float], cpu: float) -> None:
    lat.sort()
    print(
        json.dumps(
            {
                "rps": calls / total,
                "p50_us": lat[len(lat) // 2] * 1e6,
                "p99_us": lat[int(len(lat) * 0.99)] * 1e6,
                # CPU of the whole client process (every thread) per call: steadier than
                # throughput on a shared machine, and it counts the Mesh's threads.
                "cpu_us": cpu / calls * 1e6,
            }
        )
    )


def run_client(mode: str, address: str, bootstrap: str, calls: int, warmup: int) -> None:
    """In a child process: time ``calls`` sequential unary calls; print JSON."""
    import grpc

    mesh = None
    if mode == "plain":
        channel: Any = grpc.insecure_channel(address)
    elif mode.startswith("grpcio-xds"):
        if mode == "grpcio-xds+mesh":
            import pymesh

            mesh = pymesh.Mesh(bootstrap, seed=1)
        channel = grpc.insecure_channel(TARGET)
    else:
        import pymesh
        import pymesh.grpc

        mesh = pymesh.Mesh(bootstrap, seed=1)
        channel = pymesh.grpc.insecure_channel(TARGET, mesh)
    call = channel.unary_unary(METHOD)
    call(b"w", timeout=30, wait_for_ready=True)
    for _ in range(warmup):
        call(b"w", timeout=30)
    lat = []
    clock = time.perf_counter
    cpu = time.process_time()
    start = clock()
    for _ in range(calls):
        t0 = clock()
        call(b"ping", timeout=30)
        lat.append(clock() - t0)
    total = clock() - start
    _report(calls, total, lat, time.process_time() - cpu)
    channel.close()
    if mesh is not None:
        mesh.close()


@contextlib.contextmanager
def echo_mesh() -> Iterator[tuple[str, Path, dict[str, str]]]:
    """The gRPC echo backend (a process of its own) behind pymesh's control plane: its
    address, a bootstrap file naming the control plane, and an environment whose
    ``GRPC_XDS_BOOTSTRAP`` points grpcio's own xDS client at it."""
    from pymesh.server import ControlPlane, compile_mesh

    backend = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert backend.stdout is not None
        address = f"127.0.0.1:{int(backend.stdout.readline())}"
        with ControlPlane() as cp, tempfile.TemporaryDirectory() as tmp:
            services = {"echo": {"port": 50051, "protocol": "grpc", "endpoints": [address]}}
            cp.set_snapshot(compile_mesh({"services": services}, "bench"))
            bootstrap = Path(tmp) / "bootstrap.json"
            server = {
                "server_uri": cp.address,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
            bootstrap.write_text(json.dumps({"xds_servers": [server], "node": {"id": "bench"}}))
            yield address, bootstrap, {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)}
    finally:
        if backend.stdin is not None:
            backend.stdin.close()
        backend.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--aio", action="store_true", help="grpc.aio channels instead of sync")
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client = run_aio_client if args.aio else run_client
        client(args.client, args.address, args.bootstrap, args.calls, args.warmup)
        return

    with echo_mesh() as (address, bootstrap, env):
        modes = ("plain", "grpcio-xds", "grpcio-xds+mesh", "pymesh")
        best: dict[str, dict[str, float]] = {}
        cpus: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(args.rounds):
            for mode in modes:
                client = [__file__, "--client", mode, "--address", address]
                calls = ["--calls", str(args.calls), "--warmup", str(args.warmup)]
                r = client_json(
                    [*client, "--bootstrap", str(bootstrap), *calls]
                    + (["--aio"] if args.aio else []),
                    env,
                    timeout=600,
                )
                cpus[mode].append(r["cpu_us"])
                if mode not in best or r["rps"] > best[mode]["rps"]:
                    best[mode] = r

    kind = "aio" if args.aio else "sync"
    print(f"{kind} unary, {args.calls} sequential calls, best of {args.rounds} rounds")
    print(f"{'client':<16} {'calls/s':>9} {'p50 us':>8} {'p99 us':>8} {'cpu us/call':>12}")
    for mode in modes:
        r = best[mode]
        line = f"{mode:<16} {r['rps']:>9.0f} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f}"
        print(f"{line} {min(cpus[mode]):>12.0f}")
    native = best["grpcio-xds"]["rps"]
    with_mesh = best["grpcio-xds+mesh"]["rps"]
    ours = best["pymesh"]["rps"]
    print(f"pymesh / grpcio-xds throughput:          {ours / native:.2f}x")
    print(f"grpcio-xds with a Mesh open / without:   {with_mesh / native:.2f}x")
    print(f"pymesh / grpcio-xds with a Mesh open:    {ours / with_mesh:.2f}x")
    print(f"pymesh / plain throughput:               {ours / best['plain']['rps']:.2f}x")


if __name__ == "__main__":
    main()
