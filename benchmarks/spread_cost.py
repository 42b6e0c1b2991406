"""Where the cost of spreading requests over many endpoints goes: client vs upstream vs kernel.

``overhead.py`` compares MeshTransport with plain httpx's one kept-alive connection; most
of what it finds there is what talking to 1 000 endpoints costs anyone. This script
splits that cost. The same upstream process (``_upstream.py``, 1 000 loopback
addresses), sync sequential requests, variants interleaved in rounds (every other
round reversed), and for each variant per request:

* ``wall``: mean wall time; ``p50``: median latency;
* ``user`` / ``sys``: the client thread's CPU (``getrusage(RUSAGE_THREAD)``; ``sys``
  includes the loopback delivery its own sends trigger);
* ``upstream``: the upstream process's CPU (``/proc/<pid>/schedstat``).

Variants: plain httpx to one endpoint; plain httpx spreading over the endpoints itself
(one ``httpx.HTTPTransport`` per endpoint, as ``overhead.py``) in round-robin order and
in random order; MeshTransport with LEAST_REQUEST, ROUND_ROBIN and RANDOM clusters over
the same endpoints; and ``--raw``, the same visits made by a minimal socket client (no
Python HTTP stack: what the kernel and the upstream pay for the order of visits).

    python benchmarks/spread_cost.py [--requests 1000 --rounds 20] [--raw]

Every figure is the median over rounds; the last block is each variant minus the
first, as medians of per-round paired differences.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import resource
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

import pymesh
from pymesh.server import ControlPlane, compile_mesh
from pymesh.testing import bootstrap_for

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import overhead  # noqa: E402
from _stats import pct  # noqa: E402
from _upstream import RESPONSE, loopback_hosts  # noqa: E402

COLUMNS = ("wall", "p50", "user", "sys", "upstream")
#: The mesh's clusters: one service per policy, all over the same endpoints.
MESH_LB = {"LEAST_REQUEST": "bench", "ROUND_ROBIN": "benchrr", "RANDOM": "benchrandom"}


def upstream_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def measure(send: Callable[[int], None], n: int, upstream: int) -> tuple[float, ...]:
    """Per request (µs): wall, p50, client user CPU, client sys CPU, upstream CPU."""
    lat = []
    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    u0 = upstream_cpu(upstream)
    w0 = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        send(i)
        lat.append(time.perf_counter() - t0)
    w1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_THREAD)
    u1 = upstream_cpu(upstream)
    per = 1e6 / n
    return (
        (w1 - w0) * per,
        pct(lat, 0.5) * 1e6,
        (r1.ru_utime - r0.ru_utime) * per,
        (r1.ru_stime - r0.ru_stime) * per,
        (u1 - u0) * per,
    )


def http_variants(
    mesh: pymesh.Mesh, hosts: list[str], port: int
) -> tuple[dict[str, Callable[[int], None]], list[httpx.Client]]:
    urls = [f"http://{h}:{port}/api" for h in hosts]
    rng = random.Random(1)
    one = httpx.Client()
    rr = httpx.Client(transport=overhead.ByHost(hosts))
    rand = httpx.Client(transport=overhead.ByHost(hosts))
    mesh_client = httpx.Client(transport=pymesh.MeshTransport(mesh))
    n = len(urls)

    def get(client: httpx.Client, url: str) -> None:
        if client.get(url).status_code != 200:
            raise SystemExit(f"{url}: not 200")

    out: dict[str, Callable[[int], None]] = {
        "plain httpx, 1 endpoint": lambda i: get(one, urls[0]),
        "plain httpx, spread rr": lambda i: get(rr, urls[i % n]),
        "plain httpx, spread random": lambda i: get(rand, urls[int(rng.random() * n)]),
    }
    for lb, service in MESH_LB.items():
        url = f"http://{service}:8080/api"
        out[f"MeshTransport, {lb.lower()}"] = lambda i, url=url: get(mesh_client, url)
    return out, [one, rr, rand, mesh_client]


def raw_variants(hosts: list[str], port: int) -> dict[str, Callable[[int], None]]:
    """The same visits by a minimal socket client: one request, read the fixed response."""
    socks = []
    for h in hosts:
        s = socket.create_connection((h, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    request = (
        b"GET /api HTTP/1.1\r\nhost: bench:8080\r\naccept: */*\r\naccept-encoding: gzip, "
        b"deflate\r\nconnection: keep-alive\r\nuser-agent: python-httpx/0.29.0\r\n\r\n"
    )
    size = len(RESPONSE)
    rng = random.Random(1)
    n = len(socks)

    def send(s: socket.socket) -> None:
        s.sendall(request)
        got = 0
        while got < size:
            got += len(s.recv(65536))

    return {
        "raw socket, 1 connection": lambda i: send(socks[0]),
        "raw socket, spread rr": lambda i: send(socks[i % n]),
        "raw socket, spread random": lambda i: send(socks[int(rng.random() * n)]),
    }


def run(
    variants: dict[str, Callable[[int], None]], args: argparse.Namespace, upstream: int
) -> None:
    for send in variants.values():
        for i in range(args.endpoints * 8):  # every endpoint connected, whatever the order
            send(i)
    rounds: dict[str, list[tuple[float, ...]]] = {name: [] for name in variants}
    for r in range(args.rounds):
        items = list(variants.items())
        for name, send in items[::-1] if r % 2 else items:
            rounds[name].append(measure(send, args.requests, upstream))
    print(f"\nµs per request, medians of {args.rounds} rounds × {args.requests}")
    print(f"{'':32}" + "".join(f"{c:>10}" for c in COLUMNS))
    for name, rs in rounds.items():
        print(
            f"{name:32}" + "".join(f"{statistics.median(x[j] for x in rs):10.1f}" for j in range(5))
        )
    first = next(iter(rounds))
    print(f"minus {first!r} (paired per round)")
    for name, rs in list(rounds.items())[1:]:
        diffs = [
            statistics.median(x[j] - b[j] for x, b in zip(rs, rounds[first], strict=True))
            for j in range(5)
        ]
        print(f"{name:32}" + "".join(f"{d:+10.1f}" for d in diffs))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=1000, help="per variant and round")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--raw", action="store_true", help="also the minimal socket client")
    args = ap.parse_args()
    upstream, port = overhead.start_upstream(args.endpoints)
    hosts = loopback_hosts(args.endpoints)
    print(f"{args.endpoints} endpoints; load average {os.getloadavg()[0]:.1f} at start")
    try:
        config = overhead.mesh_config(port, args.endpoints, 50, "LEAST_REQUEST")
        for lb, service in MESH_LB.items():
            if service != "bench":
                config["services"][service] = copy.deepcopy(config["services"]["bench"])
                config["services"][service]["traffic_policy"] = {"lb": lb}
        with ControlPlane() as cp:
            cp.set_snapshot(compile_mesh(config, "spread"))
            with pymesh.Mesh(bootstrap=bootstrap_for(cp, "spread")) as mesh:
                variants, clients = http_variants(mesh, hosts, port)
                run(variants, args, upstream.pid)
                for client in clients:
                    client.close()
        if args.raw:
            run(raw_variants(hosts, port), args, upstream.pid)
    finally:
        upstream.kill()
        upstream.wait()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
