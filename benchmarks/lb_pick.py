"""Nanoseconds per pick for each load-balancing policy over 1,000 endpoints.

``client_side_weighted_round_robin`` runs with every endpoint's weight from an ORCA report
(equal, or random utilizations in the weighted rows); the last lines time what a per-call
report costs the client (parse + fold into the weight) in each header form.

Run (in the venv of the README's test command): python benchmarks/lb_pick.py [--picks N]
"""

from __future__ import annotations

import argparse
import random
import time

from pymesh.lb import EndpointStates, build_picker
from pymesh.orca import ServerMetricsRecorder, load_metrics_header
from pymesh.xds.resources.cluster import Cluster, LbPolicy, LbPolicyName, WrrConfig
from pymesh.xds.resources.endpoint import (
    ClusterLoadAssignment,
    Endpoint,
    Locality,
    LocalityEndpoints,
)
from pymesh.xds.resources.orca import REPORT_TEXT, LoadReport, parse_header

POLICIES: tuple[LbPolicyName, ...] = (
    "round_robin",
    "least_request",
    "random",
    "ring_hash",
    "maglev",
    "pick_first",
    "peak_ewma",
    "client_side_weighted_round_robin",
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
            wrr = WrrConfig(blackout_period=0) if name.startswith("client_side") else None
            cluster = Cluster("bench", lb_policy=LbPolicy(name=name, wrr=wrr))
            states = EndpointStates()
            if wrr is not None:  # every endpoint has reported (weighted: utilizations vary)
                build_picker(cluster, cla, states=states, rng=random.Random(2))
                util = random.Random(3)
                for st in states.values():
                    u = util.uniform(0.1, 0.9) if weighted else 0.5
                    st.orca.on_report(LoadReport(cpu_utilization=u, qps=100.0))
            t0 = time.perf_counter()
            picker = build_picker(cluster, cla, states=states, rng=random.Random(2))
            build = time.perf_counter() - t0
            pick = picker.pick
            t0 = time.perf_counter_ns()
            for i in range(args.picks):
                pick(keys[i & 1023])
            ns = (time.perf_counter_ns() - t0) / args.picks
            label = "weighted" if weighted else "equal"
            short = "cs_wrr" if wrr is not None else name
            print(f"{short:<14} {label:<8} {build * 1e3:>9.1f} {ns:>9.0f}")
    report_cost(args.picks // 10)


def report_cost(n: int) -> None:
    """ns to parse one per-call ORCA report and fold it into an endpoint's weight."""
    metrics = ServerMetricsRecorder()
    metrics.set_application_utilization(0.5)
    metrics.set_qps(250.0)
    metrics.set_eps(1.0)
    states = EndpointStates()
    cla = assignment(1, False)
    cluster = Cluster(
        "bench", lb_policy=LbPolicy(name="client_side_weighted_round_robin", wrr=WrrConfig())
    )
    build_picker(cluster, cla, states=states, rng=random.Random(2))
    weight = next(iter(states.values())).orca
    for fmt in ("BIN", "TEXT"):
        value = load_metrics_header(metrics.snapshot(), fmt)  # type: ignore[arg-type]
        assert value is not None
        t0 = time.perf_counter_ns()
        for _ in range(n):
            weight.on_report(parse_header(value))
        ns = (time.perf_counter_ns() - t0) / n
        print(f"ORCA report {fmt:<5} parse + weight update {ns:>9.0f} ns")
        t0 = time.perf_counter_ns()
        for _ in range(n):
            weight.on_raw_report(value, REPORT_TEXT)
        ns = (time.perf_counter_ns() - t0) / n
        print(f"ORCA report {fmt:<5} same as the last one  {ns:>9.0f} ns")


if __name__ == "__main__":
    main()
