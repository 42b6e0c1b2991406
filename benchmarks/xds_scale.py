"""The xDS client at Istio scale: thousands of services, a 10 000-endpoint EDS update.

    python benchmarks/xds_scale.py [--services 3000] [--eds-endpoints 10000] \
        [--mode pymesh|chatty|both] [--gc-freeze] [--delta]

The control plane (benchmarks/_ads_bench_server.py) and one real HTTP backend run in
their own processes; this process is only the client. Measured, per server mode:

- ready: time from subscribing every listener (as first requests do, all at once from
  one thread) until every listener has a complete config;
- DiscoveryRequests written per type, and resource names they carried in total;
- client RSS growth (after, and peak) over the warm process;
- request stalls: sequential real requests to an already warm service during the load,
  against the same number of requests just before it (the baseline, same run): p50 and
  max latency of each, and the max of those no full (gen2) collection ran into (what
  pymesh's own work costs a request; CPython's full collections stop every thread);
  ``during_subscribe_after_driver``: the same once the driving thread has made its 3 000
  subscriptions and only waits (the xDS thread's receive-and-apply alone);
- full collections: tracked objects and the time of one ``gc.collect()`` in the warm
  process before the load and with every service's config live after it;
- EDS (pymesh mode): a 10 000-endpoint ClusterLoadAssignment, from the server's stream
  handing the response to grpc (send) to the client having applied it, and the other
  service's request stalls meanwhile; also how long the server took from the new
  snapshot to that send (``snapshot_to_written_ms``, its own work, not the client's).
  Only EDS is sent (the server resends only the types a snapshot changed); the SotW EDS
  response carries every subscribed assignment again, and unchanged ones are not
  decoded twice. ``eds_one_moved``: then the same 10 000 endpoints but one, which gets
  another address (what a control plane sends when one pod of the cluster is replaced).

``--delta`` speaks incremental xDS (server feature ``xds_delta``) with pymesh's control
plane: an EDS update then carries only the assignment that changed.

``--gc-freeze`` calls ``gc.collect(); gc.freeze()`` after the subscriptions, before the
EDS update, as an application with a large, stable config may (docs/performance.md): it
shows the update without a full collection of the 3 000 services' config landing in it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import echo_backend, rss_mb
from _stats import pct

import pymesh
from pymesh.xds.client import EDS

HERE = Path(__file__).resolve().parent


class GcPauses:
    """The longest pause of each garbage-collector generation (gc.callbacks), and when
    each full (gen2) collection ran."""

    def __init__(self) -> None:
        self.longest = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        #: (start, end) of every full collection, time.time(); kept for the whole run.
        self.full: list[tuple[float, float]] = []
        self._t0 = 0.0
        self._wall0 = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0, self._wall0 = time.perf_counter(), time.time()
            return
        gen = info["generation"]
        self.count[gen] += 1
        self.longest[gen] = max(self.longest[gen], time.perf_counter() - self._t0)
        if gen == 2:
            self.full.append((self._wall0, time.time()))

    def take(self) -> dict[str, Any]:
        out = {"gen2_count": self.count[2], "longest_ms": [round(x * 1e3, 1) for x in self.longest]}
        self.longest, self.count = [0.0, 0.0, 0.0], [0, 0, 0]
        return out

    def overlaps_full(self, start: float, end: float) -> bool:
        """Whether a full collection ran between ``start`` and ``end`` (time.time())."""
        return any(a <= end and b >= start for a, b in self.full)


PAUSES = GcPauses()


class Prober:
    """Sequential GETs to a warm service from one thread; latencies per phase."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self.client, self.url = client, url
        self.phase = "idle"
        self.samples: dict[str, list[float]] = {}
        #: When each sample's request started (time.time()), per phase.
        self.started: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="prober")

    def _run(self) -> None:
        while not self._stop.is_set():
            start, t0 = time.time(), time.perf_counter()
            self.client.get(self.url)
            self.samples.setdefault(self.phase, []).append(time.perf_counter() - t0)
            self.started.setdefault(self.phase, []).append(start)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def baseline(self, n: int) -> None:
        """Record ``n`` requests as the quiet baseline."""
        self.phase = "baseline"
        while len(self.samples.get("baseline", [])) < n:
            time.sleep(0.01)

    def summary(
        self, phase: str, since: float = 0.0, until: float = float("inf")
    ) -> dict[str, float]:
        """n, p50 and max of ``phase``'s requests that were under way at some time
        between ``since`` and ``until`` (time.time())."""
        # strict=False: the prober thread may be between its two appends.
        samples, started = self.samples.get(phase, []), self.started.get(phase, [])
        spans = [
            (start, dt)
            for dt, start in zip(samples, started, strict=False)
            if start <= until and start + dt >= since
        ]
        xs = [dt for _, dt in spans]
        # What pymesh's own work costs a request, apart from CPython's full collections
        # (which stop every thread for time proportional to the whole heap).
        outside = [dt for start, dt in spans if not PAUSES.overlaps_full(start, start + dt)]
        return {
            "n": len(xs),
            "p50_ms": round(pct(xs, 0.5) * 1e3, 2),
            "max_ms": round(max(xs) * 1e3, 1),
            "max_ms_outside_full_gc": round(max(outside, default=0.0) * 1e3, 1),
        }


def full_collection() -> dict[str, float]:
    """The tracked objects now, and how long one full collection of them takes."""
    t0 = time.perf_counter()
    gc.collect()
    return {"tracked": len(gc.get_objects()), "ms": round((time.perf_counter() - t0) * 1e3, 1)}


def start_server(mode: str, services: int, backend: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_ads_bench_server.py"), "--services", str(services),
         "--backend", backend, "--mode", mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def run(
    mode: str,
    services: int,
    eds_endpoints: int,
    backend: str,
    freeze: bool = False,
    delta: bool = False,
) -> dict[str, Any]:
    proc, port = start_server(mode, services, backend)
    server: dict[str, Any] = {
        "server_uri": f"127.0.0.1:{port}",
        "channel_creds": [{"type": "insecure"}],
    }
    if delta:
        server["server_features"] = ["xds_delta"]
    bootstrap = {"xds_servers": [server], "node": {"id": f"scale-{mode}"}}
    out: dict[str, Any] = {"mode": mode, "services": services, "delta": delta}
    try:
        with (
            pymesh.Mesh(bootstrap=bootstrap, seed=1, resource_timeout=600) as mesh,
            httpx.Client(transport=pymesh.MeshTransport(mesh, passthrough=False)) as client,
        ):
            client.get("http://svc0:9080/", timeout=60)  # warm: one service, connections
            with Prober(client, "http://svc0:9080/") as prober:
                out["full_gc_before"] = full_collection()
                prober.baseline(300)
                rss0, _ = rss_mb()
                prober.phase = "subscribe"
                t0 = time.perf_counter()
                slots = [mesh.slot(f"svc{i}:9080") for i in range(services)]
                # From here on only the xDS thread works (the driver waits): what the
                # client's background work costs other requests. Before, the driver itself
                # holds the GIL for the first requests' CPU (~70 ms for 3 000).
                subscribed = time.time()
                for slot in slots:
                    mesh.wait_state(slot, 600)
                out["ready_s"] = time.perf_counter() - t0
                prober.phase = "after"
                rss1, peak = rss_mb()
                stats = mesh.xds_stats
                out["requests_per_type"] = {
                    k.rsplit(".", 1)[-1]: v for k, v in sorted(stats.requests.items())
                }
                out["rss_growth_mb"] = round(rss1 - rss0, 1)
                out["rss_peak_growth_mb"] = round(peak - rss0, 1)
                out["does_not_exist"] = stats.does_not_exist
                out["baseline"] = prober.summary("baseline")
                out["during_subscribe"] = prober.summary("subscribe")
                out["during_subscribe_after_driver"] = prober.summary("subscribe", since=subscribed)
                out["gc_pauses_subscribe"] = PAUSES.take()
                out["full_gc_after"] = full_collection()
                if mode == "pymesh" and eds_endpoints:
                    if freeze:
                        gc.collect()
                        gc.freeze()
                    out["eds"] = eds_update(proc, mesh, prober, eds_endpoints)
                    out["eds_one_moved"] = eds_update(proc, mesh, prober, eds_endpoints, moved=True)
                    gc.unfreeze()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.kill()
        proc.wait(30)
    return out


def eds_update(
    proc: subprocess.Popen[str], mesh: pymesh.Mesh, prober: Prober, n: int, moved: bool = False
) -> dict[str, Any]:
    """Time a big EDS update from the server's send to the client's apply: svc1 gets
    ``n`` endpoints, or (``moved``) keeps them but for one, which gets another address
    (what a control plane sends a 10 000-endpoint cluster when one pod is replaced)."""
    applied = threading.Event()
    stamp: list[float] = []

    def arrived(value: Any) -> bool:
        endpoints = value.endpoints
        return len(endpoints) == n and endpoints[0].host.endswith(".251") == moved

    class Watcher:
        # Registered after the mesh's own watcher: it runs once the mesh has applied.
        def on_resource(self, name: str, value: Any) -> None:
            if arrived(value) and not stamp:
                stamp.append(time.time())
                applied.set()

        def on_error(self, name: str, error: Any) -> None: ...

        def on_does_not_exist(self, name: str) -> None: ...

    cluster = mesh.clusters()["outbound|9080||svc1"]
    assert cluster.cluster is not None
    eds_name = cluster.cluster.eds_resource_name
    mesh._client.watch(EDS, eds_name, Watcher())
    skipped = mesh.xds_stats.decodes_skipped
    # Where the time goes: when each response's decode-and-apply started and ended.
    handled: list[tuple[str, float, float]] = []
    client = mesh._client.default  # the top-level servers' XdsClient
    original = client._apply

    def timed(ts: Any, *args: Any) -> Any:
        t0, cpu0 = time.time(), time.thread_time()
        try:
            return original(ts, *args)
        finally:
            cpu = time.thread_time() - cpu0
            handled.append((ts.type_url.rsplit(".", 1)[-1], t0, time.time(), cpu))

    client._apply = timed  # type: ignore[method-assign]
    assert proc.stdin is not None and proc.stdout is not None
    prober.phase = "eds_baseline"
    time.sleep(1.0)
    PAUSES.take()
    prober.phase = "eds"
    proc.stdin.write(f"eds {n}{' moved' if moved else ''}\n")
    proc.stdin.flush()
    # "sent" (snapshot handed to the server) and "written" (its EDS response handed to
    # grpc), in whichever order the server's two threads print them.
    stamps = dict(proc.stdout.readline().split() for _ in range(2))
    sent, written = float(stamps["sent"]), float(stamps["written"])
    assert applied.wait(120), "the EDS update never arrived"
    time.sleep(0.2)
    client._apply = original  # type: ignore[method-assign]
    return {
        "endpoints": n,
        "send_to_applied_ms": round((stamp[0] - written) * 1e3, 1),
        "snapshot_to_written_ms": round((written - sent) * 1e3, 1),
        # Per response: its type, when its decode-and-apply started and ended (ms after
        # the send), and the CPU time the xDS thread spent on it (ms).
        "responses_ms_after_send": [
            (t, round((a - written) * 1e3, 1), round((b - written) * 1e3, 1), round(c * 1e3, 1))
            for t, a, b, c in handled
        ],
        "decodes_skipped": mesh.xds_stats.decodes_skipped - skipped,
        "baseline": prober.summary("eds_baseline"),
        # Requests under way while the client received, decoded and applied the update
        # (not those of the seconds the server spends compiling the new snapshot).
        "during": prober.summary("eds", since=written, until=stamp[0]),
        "gc_pauses": PAUSES.take(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--services", type=int, default=3000)
    p.add_argument("--eds-endpoints", type=int, default=10_000)
    p.add_argument("--mode", choices=["pymesh", "chatty", "both"], default="both")
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() before the EDS update")
    p.add_argument(
        "--delta", action="store_true", help="incremental xDS with pymesh's control plane"
    )
    args = p.parse_args()
    if args.delta and args.mode != "pymesh":
        p.error("--delta needs --mode pymesh (the chatty server speaks SotW only)")
    modes = ["pymesh", "chatty"] if args.mode == "both" else [args.mode]
    # The backend runs in its own process, so its threads do not compete for our GIL.
    backend, address = echo_backend("warm")
    try:
        for mode in modes:
            result = run(
                mode, args.services, args.eds_endpoints, address, args.gc_freeze, args.delta
            )
            print(json.dumps(result, indent=1))
            sys.stdout.flush()
    finally:
        backend.kill()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
