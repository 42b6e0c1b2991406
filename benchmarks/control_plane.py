"""One `pymesh serve` and N concurrent ADS clients: server memory and edit-to-ACK time.

    python benchmarks/control_plane.py [--clients 1000] [--edits 5] [--modes sotw,delta]

Starts ``pymesh serve`` (its own process, ``--port 0``) on a small mesh file, then opens
N lightweight grpc.aio ADS streams from this process, each on its own TCP connection, as
a proxyless client would: LDS and RDS by name, CDS and EDS by ``*``; every response is
ACKed at once. It reports the server's RSS idle and with all clients connected, and for
each edit of the mesh file (a weight shift, as a canary rollout does) the time from the
edit to the first client's response and to the LAST client's ACK of every changed type.
The file edit goes through ``pymesh serve``'s watcher (~0.2 s debounce), so "edit → first
response" is mostly the watcher; "first → last" is the fan-out to N clients.

Baseline, side by side in the same run: the same server with ONE client. The ratio of
the two edit-to-last-ACK times is what N clients cost over one. The clients run in this one
process (one core): on a small machine they, not the server, may be the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import pct

PREFIX = "type.googleapis.com/envoy."
LDS = PREFIX + "config.listener.v3.Listener"
RDS = PREFIX + "config.route.v3.RouteConfiguration"
CDS = PREFIX + "config.cluster.v3.Cluster"
EDS = PREFIX + "config.endpoint.v3.ClusterLoadAssignment"
SUBSCRIPTIONS = {LDS: ["web:8080"], RDS: ["web:8080"], CDS: ["*"], EDS: ["*"]}


def mesh_yaml(canary: int) -> str:
    """A service with two versions and a weighted split; ``canary`` is v2's percent."""
    return (
        "services:\n"
        "  web:\n"
        "    port: 8080\n"
        "    versions:\n"
        "      v1: {endpoints: ['127.0.0.1:9001', '127.0.0.1:9002']}\n"
        "      v2: {endpoints: ['127.0.0.1:9003']}\n"
        "    routes:\n"
        "      - match: {headers: {end-user: jason}}\n"
        "        split: v2\n"
        f"      - split: {{v1: {100 - canary}, v2: {canary}}}\n"
    )


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB, from /proc (Linux)."""
    text = Path(f"/proc/{pid}/status").read_text()
    fields = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M))
    return int(fields["VmRSS"]), int(fields["VmHWM"])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Client:
    """One ADS stream (SotW or delta): subscribes, ACKs everything, timestamps ACKs."""

    index: int
    delta: bool
    out: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    # version -> {type_url: monotonic time the ACK was sent}
    acks: dict[str, dict[str, float]] = field(default_factory=dict)
    first_response: dict[str, float] = field(default_factory=dict)
    waiters: list[tuple[str, set[str], asyncio.Future[None]]] = field(default_factory=list)

    async def requests(self) -> AsyncIterator[Any]:
        node = base_pb2.Node(id=f"bench-{self.index}", cluster="bench")
        for i, (url, names) in enumerate(SUBSCRIPTIONS.items()):
            if self.delta:
                req: Any = discovery_pb2.DeltaDiscoveryRequest(
                    type_url=url, resource_names_subscribe=names
                )
            else:
                req = discovery_pb2.DiscoveryRequest(type_url=url, resource_names=names)
            if i == 0:
                req.node.CopyFrom(node)
            yield req
        while (item := await self.out.get()) is not None:
            yield item

    def on_response(self, resp: Any) -> None:
        url = resp.type_url
        if self.delta:
            version = resp.system_version_info
            ack: Any = discovery_pb2.DeltaDiscoveryRequest(type_url=url, response_nonce=resp.nonce)
        else:
            version = resp.version_info
            ack = discovery_pb2.DiscoveryRequest(
                type_url=url,
                resource_names=SUBSCRIPTIONS[url],
                version_info=version,
                response_nonce=resp.nonce,
            )
        now = time.monotonic()
        self.first_response.setdefault(version, now)
        self.out.put_nowait(ack)
        self.acks.setdefault(version, {})[url] = now
        for waiter in list(self.waiters):
            v, types, fut = waiter
            if v == version and types <= self.acks[version].keys() and not fut.done():
                fut.set_result(None)
                self.waiters.remove(waiter)

    async def acked(self, version: str, types: set[str]) -> None:
        if types <= self.acks.get(version, {}).keys():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append((version, types, fut))
        await fut


async def run_clients(
    address: str, n: int, delta: bool
) -> tuple[list[Client], list[Any], list[asyncio.Task[None]]]:
    clients = [Client(i, delta) for i in range(n)]
    channels, tasks = [], []
    for c in clients:
        # A local subchannel pool: a separate TCP connection per client, as separate
        # processes would have (channels with equal arguments otherwise share one).
        ch = grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch)
        method = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        call = method(c.requests())

        async def read(call: Any = call, c: Client = c) -> None:
            async for resp in call:
                c.on_response(resp)

        channels.append(ch)
        tasks.append(asyncio.ensure_future(read()))
    return clients, channels, tasks


def snapshot_version(text: str) -> str:
    from pymesh.server import compile_text

    return compile_text(text, "bench").version


def changed_types(before: str, after: str, delta: bool) -> set[str]:
    """Types a client must ACK after an edit: SotW versions are snapshot-wide, so all four;
    delta sends only resources whose content changed."""
    if not delta:
        return set(SUBSCRIPTIONS)
    from pymesh.server import compile_text

    a, b = compile_text(before, "bench"), compile_text(after, "bench")
    return {url for url in SUBSCRIPTIONS if a.resource_versions(url) != b.resource_versions(url)}


async def measure(n: int, delta: bool, edits: int, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pymesh-bench-cp-") as tmp:
        path = Path(tmp) / "mesh.yaml"
        text = mesh_yaml(10)
        path.write_text(text)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pymesh", "serve", str(path), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            m = re.search(r"on (\S+:\d+)", line)
            assert m, f"unexpected pymesh serve output: {line!r}"
            address = m.group(1)
            idle_rss, _ = rss_kib(proc.pid)
            started = time.monotonic()
            clients, channels, tasks = await run_clients(address, n, delta)
            version = snapshot_version(text)
            await asyncio.wait_for(
                asyncio.gather(*(c.acked(version, set(SUBSCRIPTIONS)) for c in clients)), timeout
            )
            connect_s = time.monotonic() - started
            loaded_rss, _ = rss_kib(proc.pid)
            cpu_before = cpu_s(proc.pid)
            rounds = []
            for i in range(edits):
                new_text = mesh_yaml(20 + 10 * i)
                new_version = snapshot_version(new_text)
                types = changed_types(text, new_text, delta)
                tmp_file = path.with_suffix(".tmp")
                tmp_file.write_text(new_text)
                t0 = time.monotonic()
                os.replace(tmp_file, path)  # as an editor saves
                await asyncio.wait_for(
                    asyncio.gather(*(c.acked(new_version, types) for c in clients)), timeout
                )
                acks = [max(c.acks[new_version][t] for t in types) for c in clients]
                firsts = [c.first_response[new_version] for c in clients]
                rounds.append(
                    {
                        "edit_to_first_response_s": min(firsts) - t0,
                        "edit_to_last_ack_s": max(acks) - t0,
                        "fanout_first_to_last_ack_s": max(acks) - min(firsts),
                        "p50_ack_s": pct([a - t0 for a in acks], 0.5),
                    }
                )
                text = new_text
            cpu_per_edit = (cpu_s(proc.pid) - cpu_before) / max(edits, 1)
            _, peak_rss = rss_kib(proc.pid)
            for t in tasks:
                t.cancel()
            for ch in channels:
                await ch.close()
            return {
                "clients": n,
                "mode": "delta" if delta else "sotw",
                "server_rss_idle_mib": idle_rss / 1024,
                "server_rss_loaded_mib": loaded_rss / 1024,
                "server_rss_peak_mib": peak_rss / 1024,
                "per_stream_kib": (loaded_rss - idle_rss) / max(n, 1),
                "connect_all_s": connect_s,
                "server_cpu_per_edit_s": cpu_per_edit,
                "rounds": rounds,
            }
        finally:
            proc.terminate()
            proc.wait(10)


def summary(r: dict[str, Any]) -> dict[str, float]:
    rounds = r["rounds"]
    return {
        k: statistics.median(x[k] for x in rounds)
        for k in (
            "edit_to_first_response_s",
            "edit_to_last_ack_s",
            "fanout_first_to_last_ack_s",
            "p50_ack_s",
        )
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--edits", type=int, default=5)
    ap.add_argument("--modes", default="sotw,delta", help="comma-separated: sotw, delta")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = ap.parse_args()
    # One socket per client, plus the channels' own: lift the soft limit to the hard one.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = []
    for mode in args.modes.split(","):
        delta = mode.strip() == "delta"
        for n in (1, args.clients):  # the one-client baseline first, in the same run
            results.append(asyncio.run(measure(n, delta, args.edits, args.timeout)))
    if args.json:
        print(json.dumps(results, indent=2))
    print(
        f"{'mode':6} {'clients':>7} {'RSS idle':>9} {'RSS N':>8} {'KiB/stream':>10} "
        f"{'edit→1st':>9} {'edit→last ACK':>13} {'fan-out':>8} {'vs 1 client':>11} "
        f"{'server CPU/edit':>15}"
    )
    base: dict[str, float] = {}
    for r in results:
        s = summary(r)
        if r["clients"] == 1:
            base[r["mode"]] = s["edit_to_last_ack_s"]
        ratio = s["edit_to_last_ack_s"] / max(base.get(r["mode"], 0.0), 1e-6)
        print(
            f"{r['mode']:6} {r['clients']:7d} {r['server_rss_idle_mib']:7.1f}Mi "
            f"{r['server_rss_loaded_mib']:6.1f}Mi {r['per_stream_kib']:10.1f} "
            f"{s['edit_to_first_response_s'] * 1000:7.0f}ms "
            f"{s['edit_to_last_ack_s'] * 1000:11.0f}ms "
            f"{s['fanout_first_to_last_ack_s'] * 1000:6.0f}ms {ratio:10.1f}x "
            f"{r['server_cpu_per_edit_s'] * 1000:13.0f}ms"
        )
    print(
        f"(medians over {args.edits} edits; server CPU/edit includes its file watcher; "
        "peak RSS and connect time per run in --json)"
    )


if __name__ == "__main__":
    main()
