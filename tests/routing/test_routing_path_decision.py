"""RouteTable.path_decision: the decision when the path alone decides, else None.

Whenever it gives an answer, select() must give the same one for any headers, query and
random value; and it must decline whenever a route with other conditions, a weighted
split or a cluster_header could change the outcome.
"""

from __future__ import annotations

import random

from pymesh.routing import RequestInfo, RouteTable
from pymesh.routing._table import _PATH_MEMO_LIMIT
from pymesh.xds.resources.matchers import HeaderMatcher, StringMatcher
from pymesh.xds.resources.route import (
    ClusterWeight,
    DirectResponseAction,
    HashPolicy,
    HeaderOps,
    HeaderValueOption,
    RetryPolicy,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)

PREFIXES = ["/", "/a", "/a/", "/a/b", "/ab", "/b", "/api", "/api/v1"]
PATHS = ["/a", "/a/b", "/a/b/c", "/ab", "/b/c", "/api/v1/x", "/api", "/zzz", "/"]
HEADER_SETS: list[dict[str, str]] = [{}, {"x-canary": "1"}, {"x-canary": "0", "x-c": "c1"}]


def _route(r: random.Random, i: int) -> Route:
    kind = r.choice(["prefix", "prefix", "path", "safe_regex"])
    value = {"prefix": r.choice(PREFIXES), "path": r.choice(PATHS)}.get(kind, r"/a.*")
    headers: tuple[HeaderMatcher, ...] = ()
    if r.random() < 0.3:
        headers = (HeaderMatcher("x-canary", StringMatcher.make("exact", "1")),)
    match = RouteMatch(kind, value, case_sensitive=r.random() < 0.8, headers=headers)  # type: ignore[arg-type]
    shape = r.random()
    action: RouteAction | DirectResponseAction
    if shape < 0.15:
        action = RouteAction(weighted_clusters=(ClusterWeight("w1", 1), ClusterWeight("w2", 3)))
    elif shape < 0.25:
        action = RouteAction(cluster_header="x-c")
    elif shape < 0.3:
        action = DirectResponseAction(200, b"ok")
    else:
        action = RouteAction(cluster=f"c{i}")
    return Route(match, action, name=f"r{i}")


def _table(seed: int) -> RouteTable:
    r = random.Random(seed)
    routes = tuple(_route(r, i) for i in range(r.randint(1, 24)))
    vhs = (
        VirtualHost("vh", ("svc", "svc:80"), routes),
        VirtualHost("other", ("*",), (Route(RouteMatch("prefix", "/"), RouteAction(cluster="o")),)),
    )
    return RouteTable.compile(RouteConfiguration("rc", vhs))


def test_path_decision_agrees_with_select_for_any_headers_and_random_value() -> None:
    answered = declined = 0
    for seed in range(400):
        table = _table(seed)
        rng = random.Random(seed)
        for authority in ("svc", "svc:80", "elsewhere"):
            for path in PATHS:
                fast = table.path_decision(authority, path)
                outcomes = set()
                for headers in HEADER_SETS:
                    for query in ("", "?q=1"):
                        info = RequestInfo("GET", authority, path + query, headers)
                        got = table.select(info, rng.getrandbits(64))
                        outcomes.add(
                            None
                            if got is None
                            else (got.route_index, got.cluster, got.virtual_host.name)
                        )
                        if fast is not None:
                            assert got is fast, (seed, authority, path, headers)
                if fast is None:
                    declined += 1
                else:
                    answered += 1
                    assert len(outcomes) == 1
    # Both answers occur over these tables (the test exercises both branches).
    assert answered > 1000 and declined > 1000, (answered, declined)


def _rc(*routes: Route) -> RouteTable:
    return RouteTable.compile(RouteConfiguration("rc", (VirtualHost("vh", ("*",), routes),)))


def test_a_header_route_whose_path_passes_makes_the_path_not_enough() -> None:
    canary = Route(
        RouteMatch(
            "prefix", "/api", headers=(HeaderMatcher("x-canary", StringMatcher.make("exact", "1")),)
        ),
        RouteAction(cluster="canary"),
    )
    table = _rc(canary, Route(RouteMatch("prefix", "/"), RouteAction(cluster="stable")))
    assert table.path_decision("h", "/api/x") is None  # the canary route may match
    other = table.path_decision("h", "/web")  # the canary route fails on the path
    assert other is not None and other.cluster == "stable"


def test_weighted_and_cluster_header_routes_are_never_path_decisions() -> None:
    table = _rc(
        Route(RouteMatch("prefix", "/w"), RouteAction(weighted_clusters=(ClusterWeight("a", 1),))),
        Route(RouteMatch("prefix", "/h"), RouteAction(cluster_header="x-c")),
        Route(RouteMatch("prefix", "/d"), DirectResponseAction(204)),
    )
    assert table.path_decision("h", "/w") is None
    assert table.path_decision("h", "/h") is None
    assert table.path_decision("h", "/d") is None
    assert table.path_decision("h", "/none") is None  # no route at all: select answers


def test_the_memo_stays_bounded() -> None:
    table = _rc(Route(RouteMatch("prefix", "/"), RouteAction(cluster="c")))
    for i in range(_PATH_MEMO_LIMIT + 10):
        decision = table.path_decision("h", f"/item/{i}")
        assert decision is not None and decision.cluster == "c"
    assert len(table._by_path) <= _PATH_MEMO_LIMIT


def test_routes_that_read_the_request_are_never_path_decisions() -> None:
    canary = HeaderMatcher("x-canary", StringMatcher.make("exact", "1"))
    plain = RouteAction(cluster="c")
    reading = {
        "/hash": RouteAction(cluster="c", hash_policies=(HashPolicy("header", "x-user"),)),
        "/rewrite": RouteAction(cluster="c", prefix_rewrite="/v2"),
        "/host": RouteAction(cluster="c", host_rewrite_literal="other"),
        "/retry": RouteAction(
            cluster="c", retry_policy=RetryPolicy(retriable_request_headers=(canary,))
        ),
    }
    routes = [Route(RouteMatch("prefix", p), a) for p, a in reading.items()]
    edit = HeaderOps(request_headers_to_add=(HeaderValueOption("x-via", "mesh"),))
    routes.append(Route(RouteMatch("prefix", "/edit"), plain, header_ops=edit))
    routes.append(Route(RouteMatch("prefix", "/"), plain))
    table = _rc(*routes)
    for path in [*reading, "/edit"]:
        assert table.path_decision("h", path) is None, path
        decision = table.select(RequestInfo("GET", "h", path, {}), 0)
        assert decision is not None and decision.cluster == "c"  # select still routes it
    plain_decision = table.path_decision("h", "/other")
    assert plain_decision is not None and plain_decision.cluster == "c"
