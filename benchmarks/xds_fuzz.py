"""Fuzz the xDS client with 100 000+ mutated resources through pymesh's control plane.

    python benchmarks/xds_fuzz.py [--resources 100000] [--per-response 50] [--services 20]

Each response carries ``--per-response`` mutants of one resource type (cycling
through Listener, RouteConfiguration, Cluster, ClusterLoadAssignment) of a small, richly
configured valid set. After every response the run checks that the client ACKed or
NACKed it, that a NACK names the resource and field, that NACKed and absent resources
kept their last good value, and that accepted route tables route random requests
(pymesh.testing._proto_fuzz). Reports counts, the throughput, and sample NACK lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time

from pymesh.bootstrap import load_bootstrap
from pymesh.server import ControlPlane
from pymesh.testing._proto_fuzz import FuzzRun, run_rounds
from pymesh.xds.client import Backoff, XdsClient


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resources", type=int, default=100_000)
    p.add_argument("--per-response", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--services", type=int, default=20, help="listeners in the valid base set")
    args = p.parse_args()
    # Every mutant with an unsupported field logs a warning; the counts are what matter.
    logging.getLogger("pymesh").setLevel(logging.CRITICAL)
    rounds = -(-args.resources // args.per_response)
    rng = random.Random(args.seed)
    with ControlPlane(port=0) as cp:
        server = {"server_uri": cp.address, "channel_creds": [{"type": "insecure"}]}
        bootstrap = load_bootstrap({"xds_servers": [server], "node": {"id": "fuzz-bench"}})
        with XdsClient(bootstrap, backoff=Backoff(base=0.2, maximum=1.0)) as client:
            fuzz = FuzzRun(cp, client, "fuzz-bench", services=args.services)
            fuzz.subscribe()
            t0 = time.perf_counter()
            stats = fuzz.stats
            while stats.resources < args.resources:  # one name per resource in a response
                run_rounds(fuzz, [rng.getrandbits(32) for _ in range(rounds)], args.per_response)
            elapsed = time.perf_counter() - t0
            out = {
                "responses": stats.responses,
                "resources": stats.resources,
                "acked_responses": stats.acks,
                "nacked_responses": stats.nacks,
                "route_selections": stats.routed,
                "stream_failures": client.stats.stream_failures,
                "seconds": round(elapsed, 1),
                "resources_per_s": round(stats.resources / elapsed),
                "sample_nacks": stats.nack_examples[:8],
            }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
