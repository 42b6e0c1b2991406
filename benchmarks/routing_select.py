"""Time ``RouteTable.select`` on a 50-route table (one ``*`` virtual host).

Run: ``python benchmarks/routing_select.py [--iterations N]``; prints ns/op per scenario.
"""

from __future__ import annotations

import argparse
import random
import time

from pymesh.routing import RequestInfo, RouteTable
from pymesh.xds.resources.matchers import HeaderMatcher, StringMatcher
from pymesh.xds.resources.route import (
    ClusterWeight,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)


def build_table(n_routes: int = 50) -> RouteTable:
    """Routes cycle through prefix, exact path, header-matched prefix and regex; the last
    route is a weighted catch-all."""
    routes: list[Route] = []
    for i in range(n_routes - 1):
        kind = i % 4
        if kind == 0:
            m = RouteMatch("prefix", f"/svc{i}/")
        elif kind == 1:
            m = RouteMatch("path", f"/exact/{i}")
        elif kind == 2:
            header = HeaderMatcher("x-tenant", StringMatcher.make("exact", f"t{i}"))
            m = RouteMatch("prefix", "/", headers=(header,))
        else:
            m = RouteMatch("safe_regex", f"/re{i}/[0-9]+")
        routes.append(Route(m, RouteAction(cluster=f"c{i}"), name=f"r{i}"))
    split = RouteAction(
        weighted_clusters=(ClusterWeight("stable", 90), ClusterWeight("canary", 10)),
        total_weight=100,
    )
    routes.append(Route(RouteMatch("prefix", "/"), split, name="default"))
    vh = VirtualHost("all", ("*",), tuple(routes))
    return RouteTable.compile(RouteConfiguration("bench", (vh,)))


def bench(
    table: RouteTable, path: str, headers: dict[str, str], iterations: int, rounds: int
) -> float:
    """Best-of-``rounds`` ns per select(), a fresh RequestInfo per call (as transports do)."""
    rng = random.Random(7)
    values = [rng.getrandbits(64) for _ in range(1024)]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for i in range(iterations):
            req = RequestInfo("GET", "reviews:9080", path, headers)
            table.select(req, values[i & 1023])
        best = min(best, (time.perf_counter_ns() - start) / iterations)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    table = build_table()
    scenarios = {
        "first route (prefix)": ("/svc0/items?id=1", {}),
        "middle route (regex #23)": ("/re23/42", {}),
        "header route (#46)": ("/any", {"x-tenant": "t46"}),
        "catch-all after 49 misses": ("/nothing/here", {"x-tenant": "none"}),
    }
    for name, (path, headers) in scenarios.items():
        ns = bench(table, path, headers, args.iterations, args.rounds)
        print(f"{name:30s} {ns:10.0f} ns/op")


if __name__ == "__main__":
    main()
