"""An xDS server for benchmarks/xds_scale.py, run as its own process.

    python benchmarks/_ads_bench_server.py --services 3000 --backend 127.0.0.1:PORT \
        [--mode pymesh|chatty]

Serves ``svcI:9080`` listeners (RDS ``svcI`` -> EDS cluster of 3 endpoints) for
``--services`` services; ``svc0`` points at ``--backend`` (a real HTTP server), the
others at addresses nobody dials. ``--mode pymesh`` is pymesh's own ControlPlane
(answers subscription changes, ignores stale nonces); ``chatty`` answers *every*
request, ACKs included, with the full subscribed set, as some control planes do.

Prints its port. On stdin, ``eds N`` replaces svc1's endpoints with N fresh ones (``eds N
moved``: the same N but the first, which gets another address) and
prints ``sent <time.time()>`` right before handing the snapshot to the server, then
``written <time.time()>`` when the server's stream hands the EDS response to grpc (to be
serialized and written). What a control plane does once per snapshot (packing every type,
the per-type digests that tell which types changed, the consistency check) is done before
``sent``: it is the server's cost, not the update's.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from pymesh.server import ENDPOINT_TYPE, ControlPlane, Snapshot, compile_mesh
from pymesh.server.ads import SotwStream
from pymesh.server.delta import DeltaStream


def mesh_config(
    services: int, backend: str, svc1_endpoints: int = 3, svc1_moved: bool = False
) -> dict[str, Any]:
    """``svc1_moved``: svc1's first endpoint has another address (x.x.x.251, which no
    other endpoint has), the rest as they were: one endpoint of many replaced."""
    out: dict[str, Any] = {}
    for i in range(services):
        if i == 0:
            endpoints = [backend]
        else:
            n = svc1_endpoints if i == 1 else 3
            endpoints = [
                f"10.{i >> 8 & 255}.{i & 255}.{k % 250 + 1}:{8000 + k // 250}" for k in range(n)
            ]
            if i == 1 and svc1_moved:
                endpoints[0] = f"10.{i >> 8 & 255}.{i & 255}.251:8000"
        out[f"svc{i}"] = {"port": 9080, "endpoints": endpoints}
    return {"services": out}


class Chatty(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Answers every DiscoveryRequest with every subscribed resource it has."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.nonces = itertools.count(1)

    def StreamAggregatedResources(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        for req in requests:
            packed = self.snapshot.packed(req.type_url)
            names = set(req.resource_names)
            yield discovery_pb2.DiscoveryResponse(
                type_url=req.type_url,
                version_info=self.snapshot.version,
                nonce=str(next(self.nonces)),
                resources=[a for n, a in packed.items() if n in names],
            )


def _say(line: str) -> None:
    # One write per line: print() writes the text and its newline separately, so the
    # two threads that stamp could interleave into "sent 1written 2".
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _stamp_eds_writes() -> None:
    """Print ``written <time>`` as each stream (SotW or delta) yields an EDS response."""
    sotw, delta = SotwStream.on_change, DeltaStream.on_change

    def stamped(self: SotwStream) -> Iterator[discovery_pb2.DiscoveryResponse]:
        for resp in sotw(self):
            if resp.type_url == ENDPOINT_TYPE:
                _say(f"written {time.time()}")
            yield resp

    def stamped_delta(self: DeltaStream) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        out = delta(self)
        if any(resp.type_url == ENDPOINT_TYPE for resp in out):
            _say(f"written {time.time()}")
        return out

    SotwStream.on_change = stamped  # type: ignore[method-assign]
    DeltaStream.on_change = stamped_delta  # type: ignore[method-assign]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=3000)
    p.add_argument("--backend", required=True)
    p.add_argument("--mode", choices=["pymesh", "chatty"], default="pymesh")
    args = p.parse_args()
    snapshot = compile_mesh(mesh_config(args.services, args.backend))
    if args.mode == "chatty":
        server = grpc.server(
            futures.ThreadPoolExecutor(4),
            options=[("grpc.max_send_message_length", 512 * 1024 * 1024)],
        )
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Chatty(snapshot), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(port, flush=True)
        sys.stdin.read()
        server.stop(0)
        return
    _stamp_eds_writes()
    with ControlPlane(port=0) as cp:
        cp.set_snapshot(snapshot)
        print(cp.port, flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if cmd and cmd[0] == "eds":
                moved = cmd[2:] == ["moved"]
                config = mesh_config(args.services, args.backend, int(cmd[1]), moved)
                new = compile_mesh(config)
                for type_url in new.resources:  # the server's own cost, not the send's
                    new.type_digest(type_url)
                new.consistent()
                sent = time.time()
                cp.set_snapshot(new)
                _say(f"sent {sent}")
    threading.Event().set()


if __name__ == "__main__":
    main()
