"""Unary gRPC calls of plain grpcio, grpcio's native xds:/// and pymesh.grpc, in ONE
process, in alternating blocks, sync and grpc.aio: a steadier comparison than
grpc_channel.py on a shared machine.

    python benchmarks/grpc_paired.py [--sync | --aio] [--rounds 20] [--block 1000]

With neither flag it runs both, sync first, each in a client process of its own.

grpc_channel.py runs each client in its own process, so a neighbour's load that comes and
goes lands on one client and not another (its best-of-N ratios swung from 0.8x to 1.1x
within one session on a shared 2-core VM). Here the three channels share one process
(sync: grpc.insecure_channel(address), grpc.insecure_channel("xds:///..."),
pymesh.grpc.insecure_channel; aio: the grpc.aio / pymesh.grpc.aio ones, on one event
loop) and one backend; each round runs a block of sequential calls on each, in a
shuffled order (fixed seed), and the report is the median over rounds of each client's
wall time and CPU (all threads) per call, the median of the per-round differences
(pymesh minus the other, same round) and of the per-round throughput ratios. The
pymesh channel's sub-channel is a plain grpc channel to the endpoint, so "pymesh -
plain" is what pymesh adds to a call.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _procs import client_json
from grpc_channel import METHOD, TARGET, echo_mesh

MODES = ("plain", "grpcio-xds", "pymesh")


class _Blocks:
    """The shuffled schedule of blocks (fixed seed) and each block's wall and CPU time
    per call, shared by the sync and aio clients."""

    def __init__(self, rounds: int, block: int) -> None:
        self.rounds = rounds
        self.block = block
        self.wall: dict[str, list[float]] = {mode: [] for mode in MODES}
        self.cpu: dict[str, list[float]] = {mode: [] for mode in MODES}

    def schedule(self) -> Iterator[str]:
        """Each round's modes in a shuffled order; each block is timed around the
        caller's loop between two items."""
        order = list(MODES)
        rng = random.Random(1)
        for _ in range(self.rounds):
            rng.shuffle(order)
            for mode in order:
                c0, w0 = time.process_time(), time.perf_counter()
                yield mode
                self.wall[mode].append((time.perf_counter() - w0) / self.block * 1e6)
                self.cpu[mode].append((time.process_time() - c0) / self.block * 1e6)

    def result(self) -> dict[str, Any]:
        return {"wall": self.wall, "cpu": self.cpu}


def _sync_client(address: str, bootstrap: str, rounds: int, block: int) -> dict[str, Any]:
    import grpc

    import pymesh
    import pymesh.grpc

    mesh = pymesh.Mesh(bootstrap, seed=1)
    channels: dict[str, Any] = {
        "plain": grpc.insecure_channel(address),
        "grpcio-xds": grpc.insecure_channel(TARGET),
        "pymesh": pymesh.grpc.insecure_channel(TARGET, mesh),
    }
    calls = {mode: ch.unary_unary(METHOD) for mode, ch in channels.items()}
    for call in calls.values():
        call(b"w", timeout=30, wait_for_ready=True)
        for _ in range(300):
            call(b"w", timeout=30)
    blocks = _Blocks(rounds, block)
    for mode in blocks.schedule():
        call = calls[mode]
        for _ in range(block):
            call(b"ping", timeout=30)
    for ch in channels.values():
        ch.close()
    mesh.close()
    return blocks.result()


async def _aio_client(address: str, bootstrap: str, rounds: int, block: int) -> dict[str, Any]:
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
    blocks = _Blocks(rounds, block)
    for mode in blocks.schedule():
        call = calls[mode]
        for _ in range(block):
            await call(b"ping", timeout=30)
    for ch in channels.values():
        await ch.close()
    mesh.close()
    return blocks.result()


def report(kind: str, r: dict[str, Any], rounds: int, block: int) -> float:
    """Print one kind's table; returns pymesh / grpcio-xds throughput."""
    wall, cpu = r["wall"], r["cpu"]
    med = statistics.median
    print(f"{kind} unary, {rounds} rounds x {block} calls per client, one process")
    print(f"{'client':<12} {'calls/s':>9} {'wall us/call':>13} {'cpu us/call':>12}")
    for mode in MODES:
        w = med(wall[mode])
        print(f"{mode:<12} {1e6 / w:>9.0f} {w:>13.1f} {med(cpu[mode]):>12.1f}")
    for other in ("plain", "grpcio-xds"):
        dw = med(a - b for a, b in zip(wall["pymesh"], wall[other], strict=True))
        dc = med(a - b for a, b in zip(cpu["pymesh"], cpu[other], strict=True))
        print(f"pymesh - {other:<11} wall {dw:+6.1f} us/call, cpu {dc:+6.1f} us/call")
    # Throughput ratio per round (same round, same neighbours), then its median: steadier
    # than the ratio of the two medians, which rounds of different load can pull apart.
    ratio: float = med(x / p for x, p in zip(wall["grpcio-xds"], wall["pymesh"], strict=True))
    of_medians = med(wall["grpcio-xds"]) / med(wall["pymesh"])
    print(f"{kind}: pymesh / grpcio-xds throughput: {ratio:.3f}x (median of per-round ratios)")
    print(f"{kind}: ratio of the median rounds: {of_medians:.3f}x")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kinds = ap.add_mutually_exclusive_group()
    kinds.add_argument("--sync", action="store_true", help="sync channels only")
    kinds.add_argument("--aio", action="store_true", help="grpc.aio channels only")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=1000, help="calls per client per round")
    ap.add_argument("--client", nargs=3, help=argparse.SUPPRESS)  # kind, address, bootstrap
    args = ap.parse_args()
    if args.client:
        kind, address, bootstrap = args.client
        if kind == "sync":
            out = _sync_client(address, bootstrap, args.rounds, args.block)
        else:
            out = asyncio.run(_aio_client(address, bootstrap, args.rounds, args.block))
        print(json.dumps(out))
        return

    run = ["sync"] if args.sync else ["aio"] if args.aio else ["sync", "aio"]
    results = {}
    with echo_mesh() as (address, bootstrap, env):
        for kind in run:
            client = [__file__, "--client", kind, address, str(bootstrap)]
            rounds = ["--rounds", str(args.rounds), "--block", str(args.block)]
            results[kind] = client_json([*client, *rounds], env, timeout=1800)
    for kind in run:
        report(kind, results[kind], args.rounds, args.block)


if __name__ == "__main__":
    main()
