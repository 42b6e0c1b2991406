"""grpc.aio unary calls of plain grpcio, grpcio's native xds:/// and pymesh.grpc.aio, in ONE
process, in alternating blocks: a steadier comparison than grpc_channel.py on a shared
machine.

    python benchmarks/grpc_aio_paired.py [--rounds 20] [--block 1000]

grpc_channel.py runs each client in its own process, so a neighbour's load that comes and
goes lands on one client and not another (its best-of-N ratios swung from 0.8x to 1.1x
within one session on a shared 2-core VM). Here the three channels share one process, one
event loop and one backend; each round runs a block of sequential calls on each, in a
shuffled order (fixed seed), and the report is the median over rounds of each client's
wall time and CPU (all threads) per call, and the median of the per-round differences
(pymesh minus the other, same round). The pymesh channel's sub-channel is a plain grpc.aio
channel to the endpoint, so "pymesh - plain" is what pymesh adds to a call.

GRPC_XDS_BOOTSTRAP must be set before grpc starts its xDS client, so the script starts
itself again as the client process with it set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _procs import client_json
from grpc_channel import METHOD, TARGET, echo_mesh

MODES = ("plain", "grpcio-xds", "pymesh")


async def _client(address: str, bootstrap: str, rounds: int, block: int) -> dict[str, Any]:
    import grpc

    import pymesh
    import pymesh.grpc.aio

    mesh = pymesh.Mesh(bootstrap, seed=1)
    channels: dict[str, Any] = {
        "plain": grpc.aio.insecure_channel(address),
        "grpcio-xds": grpc.aio.insecure_channel(TARGET),
        "pymesh": pymesh.grpc.aio.insecure_channel(TARGET, mesh),
    }
    calls = {mode: ch.unary_unary(METHOD) for mode, ch in channels.items()}
    for call in calls.values():
        await call(b"w", timeout=30, wait_for_ready=True)
        for _ in range(300):
            await call(b"w", timeout=30)
    wall: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    order = list(MODES)
    rng = random.Random(1)
    for _ in range(rounds):
        rng.shuffle(order)
        for mode in order:
            call = calls[mode]
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(block):
                await call(b"ping", timeout=30)
            wall[mode].append((time.perf_counter() - w0) / block * 1e6)
            cpu[mode].append((time.process_time() - c0) / block * 1e6)
    for ch in channels.values():
        await ch.close()
    mesh.close()
    return {"wall": wall, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=1000, help="calls per client per round")
    ap.add_argument("--client", nargs=2, help=argparse.SUPPRESS)  # address, bootstrap
    args = ap.parse_args()
    if args.client:
        out = asyncio.run(_client(*args.client, args.rounds, args.block))
        print(json.dumps(out))
        return

    with echo_mesh() as (address, bootstrap, env):
        client = [__file__, "--client", address, str(bootstrap)]
        rounds = ["--rounds", str(args.rounds), "--block", str(args.block)]
        r = client_json([*client, *rounds], env, timeout=1800)

    wall, cpu = r["wall"], r["cpu"]
    med = statistics.median
    print(f"grpc.aio unary, {args.rounds} rounds x {args.block} calls per client, one process")
    print(f"{'client':<12} {'calls/s':>9} {'wall us/call':>13} {'cpu us/call':>12}")
    for mode in MODES:
        w = med(wall[mode])
        print(f"{mode:<12} {1e6 / w:>9.0f} {w:>13.0f} {med(cpu[mode]):>12.0f}")
    for other in ("plain", "grpcio-xds"):
        dw = med(a - b for a, b in zip(wall["pymesh"], wall[other], strict=True))
        dc = med(a - b for a, b in zip(cpu["pymesh"], cpu[other], strict=True))
        print(f"pymesh - {other:<11} wall {dw:+6.1f} us/call, cpu {dc:+6.1f} us/call")
    ratio = med(wall["grpcio-xds"]) / med(wall["pymesh"])
    print(f"pymesh / grpcio-xds throughput (median rounds): {ratio:.2f}x")


if __name__ == "__main__":
    main()
