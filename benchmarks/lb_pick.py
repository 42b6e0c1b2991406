"""Nanoseconds per pick for each load-balancing policy over 1,000 endpoints.

Run (in the venv of the README's test command): python benchmarks/lb_pick.py [--picks N]
"""

from __future__ import annotations

import argparse
import random
import time

from pymesh.lb import EndpointStates, build_picker
from pymesh.xds.resources.cluster import Cluster, LbPolicy, LbPolicyName
from pymesh.xds.resources.endpoint import (
    ClusterLoadAssignment,
    Endpoint,
    Locality,
    LocalityEndpoints,
)

POLICIES: tuple[LbPolicyName, ...] = (
    "round_robin",
    "least_request",
    "random",
    "ring_hash",
    "maglev",
    "pick_first",
    "peak_ewma",
)


def assignment(n: int, weighted: bool) -> ClusterLoadAssignment:
    rng = random.Random(0)
    endpoints = tuple(
        Endpoint(
            f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            8080,
            weight=rng.randint(1, 10) if weighted else 1,
        )
        for i in range(n)
    )
    return ClusterLoadAssignment("bench", (LocalityEndpoints(Locality("r", "z"), endpoints),))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--picks", type=int, default=200_000)
    args = parser.parse_args()
    keys = [random.Random(1).getrandbits(64) for _ in range(1024)]
    print(f"{'policy':<14} {'weights':<8} {'build ms':>9} {'ns/pick':>9}")
    for weighted in (False, True):
        cla = assignment(args.endpoints, weighted)
        for name in POLICIES:
            cluster = Cluster("bench", lb_policy=LbPolicy(name=name))
            t0 = time.perf_counter()
            picker = build_picker(cluster, cla, states=EndpointStates(), rng=random.Random(2))
            build = time.perf_counter() - t0
            pick = picker.pick
            t0 = time.perf_counter_ns()
            for i in range(args.picks):
                pick(keys[i & 1023])
            ns = (time.perf_counter_ns() - t0) / args.picks
            label = "weighted" if weighted else "equal"
            print(f"{name:<14} {label:<8} {build * 1e3:>9.1f} {ns:>9.0f}")


if __name__ == "__main__":
    main()
