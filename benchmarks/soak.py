"""Soak: a million requests through the mesh while the endpoints change every second.

    python benchmarks/soak.py [--requests 1000000] [--threads 4] [--tasks 32]

`pymesh serve` (its own process) serves a mesh file that this script rewrites every
second (endpoint weights rotate: an EDS update each time); three echo backends run in
their own processes. Traffic: ``--threads`` sync httpx clients plus one asyncio loop
with ``--tasks`` concurrent tasks, all through one Mesh, until ``--requests`` are done.

Reported: failures (any exception or non-2xx), RSS after warm-up (10 % of the requests)
and at the end, threads and open file descriptors before and after, EDS updates applied.
Targets (issue: the xDS client under real load): 0 failures, RSS growth <= 5 % after
warm-up, no leaked thread or descriptor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from _procs import echo_backend, rss_mb

import pymesh


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def mesh_file(path: Path, backends: list[str], turn: int) -> None:
    endpoints = [{"address": b, "weight": 1 + (i + turn) % 3} for i, b in enumerate(backends)]
    config = {"services": {"soak": {"port": 9080, "endpoints": endpoints}}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    tmp.replace(path)  # as an editor does: the watcher sees one complete file


class Counts:
    def __init__(self, target: int) -> None:
        self.target = target
        self.done = 0
        self.failures: dict[str, int] = {}
        self.lock = threading.Lock()
        self.finished = threading.Event()

    def add(self, error: str | None) -> bool:
        with self.lock:
            self.done += 1
            if error is not None:
                self.failures[error] = self.failures.get(error, 0) + 1
            if self.done >= self.target:
                self.finished.set()
            return not self.finished.is_set()


def sync_worker(mesh: pymesh.Mesh, counts: Counts) -> None:
    with httpx.Client(transport=pymesh.MeshTransport(mesh, passthrough=False)) as client:
        while True:
            try:
                r = client.get("http://soak:9080/", timeout=30)
                error = None if r.status_code == 200 else f"HTTP {r.status_code}"
            except Exception as e:
                error = type(e).__name__
            if not counts.add(error):
                return


async def async_workers(mesh: pymesh.Mesh, counts: Counts, tasks: int) -> None:
    transport = pymesh.AsyncMeshTransport(mesh, passthrough=False)
    async with httpx.AsyncClient(transport=transport) as client:

        async def one() -> None:
            while True:
                try:
                    r = await client.get("http://soak:9080/", timeout=30)
                    error = None if r.status_code == 200 else f"HTTP {r.status_code}"
                except Exception as e:
                    error = type(e).__name__
                if not counts.add(error):
                    return

        await asyncio.gather(*(one() for _ in range(tasks)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--tasks", type=int, default=32)
    args = p.parse_args()
    children = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            backends = []
            for i in range(3):
                proc, address = echo_backend(f"b{i}")
                children.append(proc)
                backends.append(address)
            path = Path(tmp) / "mesh.yaml"
            mesh_file(path, backends, 0)
            cp = subprocess.Popen(
                [sys.executable, "-m", "pymesh", "serve", str(path), "--port", "0"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            children.append(cp)
            assert cp.stdout is not None
            line = cp.stdout.readline()
            address = line.rsplit(" on ", 1)[1].split()[0]
            out = run(args, address, path, backends)
        finally:
            for c in children:
                c.kill()
    print(json.dumps(out, indent=1))


def run(args: Any, address: str, path: Path, backends: list[str]) -> dict[str, Any]:
    bootstrap = {
        "xds_servers": [{"server_uri": address, "channel_creds": [{"type": "insecure"}]}],
        "node": {"id": "soak"},
    }
    threads0, fds0 = threading.active_count(), fds()
    counts = Counts(args.requests)
    warm = Counts(args.requests // 10)
    stop_churn = threading.Event()
    with pymesh.Mesh(bootstrap=bootstrap, seed=1) as mesh:
        updates0 = mesh.xds_stats.updates.get(
            "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", 0
        )

        def churn() -> None:
            turn = 0
            while not stop_churn.wait(1.0):
                turn += 1
                mesh_file(path, backends, turn)

        rss_warm: list[float] = []

        def watch_warmup() -> None:
            while not counts.finished.is_set():
                if counts.done >= warm.target and not rss_warm:
                    rss_warm.append(rss_mb()[0])
                time.sleep(0.05)

        t0 = time.perf_counter()
        workers = [
            threading.Thread(target=sync_worker, args=(mesh, counts), name=f"soak-{i}")
            for i in range(args.threads)
        ]
        workers.append(
            threading.Thread(
                target=lambda: asyncio.run(async_workers(mesh, counts, args.tasks)),
                name="soak-async",
            )
        )
        helpers = [
            threading.Thread(target=churn, name="soak-churn"),
            threading.Thread(target=watch_warmup, name="soak-rss"),
        ]
        for t in workers + helpers:
            t.start()
        for t in workers:
            t.join()
        stop_churn.set()
        for t in helpers:
            t.join()
        elapsed = time.perf_counter() - t0
        rss_end = rss_mb()[0]
        updates = (
            mesh.xds_stats.updates.get(
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", 0
            )
            - updates0
        )
    time.sleep(0.5)  # let closed transports' threads finish
    return {
        "requests": counts.done,
        "failures": counts.failures,
        "seconds": round(elapsed, 1),
        "requests_per_s": round(counts.done / elapsed),
        "eds_updates_applied": updates,
        "rss_after_warmup_mb": round(rss_warm[0], 1) if rss_warm else None,
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_after_warmup_pct": (
            round(100 * (rss_end - rss_warm[0]) / rss_warm[0], 1) if rss_warm else None
        ),
        "threads_before_after": [threads0, threading.active_count()],
        "fds_before_after": [fds0, fds()],
    }


if __name__ == "__main__":
    main()
