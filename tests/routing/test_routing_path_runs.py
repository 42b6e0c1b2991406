"""Runs of plain path routes are looked up by dict: same answers as testing each route."""

from __future__ import annotations

import random

from pymesh.routing import RequestInfo, RouteTable
from pymesh.xds.resources.route import (
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)

PREFIXES = ["/", "/a", "/a/", "/a/b", "/ab", "/b", "/b/c", "/api", "/api/v1", "/c"]
PATHS = ["/a", "/a/b", "/a/b/c", "/ab", "/b/c", "/api/v1/x", "/c", "/", "/zzz", "/api", ""]


def _table(seed: int) -> tuple[RouteTable, list[Route]]:
    r = random.Random(seed)
    routes = []
    for i in range(r.randint(4, 30)):
        kind = r.choice(["prefix", "prefix", "path"])
        value = r.choice(PREFIXES if kind == "prefix" else PATHS[:-1])
        routes.append(
            Route(RouteMatch(kind, value), RouteAction(cluster=f"c{i}"), name=f"r{i}")  # type: ignore[arg-type]
        )
    rc = RouteConfiguration("rc", (VirtualHost("vh", ("*",), tuple(routes)),))
    return RouteTable.compile(rc), routes


def _naive(routes: list[Route], path: str) -> str | None:
    for route in routes:
        m = route.match
        if (m.path_kind == "prefix" and path.startswith(m.path)) or (
            m.path_kind == "path" and path == m.path
        ):
            assert isinstance(route.action, RouteAction)
            return route.action.cluster
    return None


def test_runs_agree_with_first_match_over_random_tables() -> None:
    checked = 0
    for seed in range(300):
        table, routes = _table(seed)
        for path in PATHS:
            decision = table.select(RequestInfo("GET", "h", path + "?q=1", {}), 0)
            got = decision.cluster if decision is not None else None
            assert got == _naive(routes, path), (seed, path, [r.match for r in routes])
            checked += 1
    assert checked == 300 * len(PATHS)
