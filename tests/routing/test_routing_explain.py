from __future__ import annotations

import dataclasses
import json

from routing_helpers import hdr, match, qp, req, route, sm, table

from pymesh.routing import RouteTable, explain
from pymesh.xds.resources.route import (
    ClusterWeight,
    NonForwardingAction,
    RedirectAction,
    Route,
    RouteAction,
    RouteConfiguration,
    VirtualHost,
)


def test_explain_walks_routes_and_gives_first_reasons() -> None:
    t = table(
        route(match("prefix", "/api"), "api", name="api"),
        route(
            match("prefix", "/", headers=[hdr("x-user", sm("exact", "jason"))]),
            "jason",
            name="user",
        ),
        route(match("prefix", "/", headers=[hdr("x-team", sm("exact", "a"))]), "team", name="team"),
        route(match("prefix", "/", query=[qp("v", sm("exact", "2"))]), "v2", name="query"),
        route(match("prefix", "/", fraction=(10, 100)), "canary", name="canary"),
        route(match("prefix", "/", grpc=True), "grpc", name="grpc"),
        Route(
            match("prefix", "/"),
            RouteAction(
                weighted_clusters=(ClusterWeight("a", 1), ClusterWeight("b", 3)), total_weight=4
            ),
            name="split",
        ),
        domains=("reviews", "*.svc"),
    )
    r = req("/web?v=1", {"x-user": "bob"}, authority="x.svc")
    e = explain(t, r, 1234)
    assert e.virtual_host == "vh" and e.domain == "*.svc" and e.domain_kind == "suffix_wildcard"
    reasons = [c.reason for c in e.routes]
    assert reasons == [
        "prefix '/api' does not match path '/web'",
        "header 'x-user' value 'bob' does not match exact 'jason'",
        "header 'x-team' missing",
        "query parameter 'v' value '1' does not match exact '2'",
        "runtime_fraction 10/100: random value % 100 = 34 >= 10",
        "route matches gRPC requests only",
        None,
    ]
    assert [c.matched for c in e.routes] == [False] * 6 + [True]
    assert e.route_index == 6 and e.route_name == "split" and e.action == "route"
    assert e.weight_pick == "1234 % 4 = 2"
    assert e.cluster == "b"
    assert [(c.name, c.weight, c.chosen) for c in e.clusters] == [("a", 1, False), ("b", 3, True)]
    d = t.select(r, 1234)
    assert d is not None and d.cluster == e.cluster and d.route_index == e.route_index
    json.dumps(dataclasses.asdict(e))  # JSON-able


def test_explain_no_virtual_host() -> None:
    t = table(route(match(), "c"), domains=("reviews",))
    e = explain(t, req(authority="reviews:9080"), 0)
    assert e.virtual_host is None and e.route_index is None and e.routes == ()
    assert "reviews:9080" in e.virtual_host_reason


def test_explain_no_route_and_special_routes() -> None:
    vh = VirtualHost(
        "vh",
        ("*",),
        (
            Route(match(), NonForwardingAction(), name="nf"),
            Route(match("path", "/r"), RedirectAction(host_redirect="h"), name="redir"),
            route(match("safe_regex", "/x[0-9]"), "x"),
            route(match("prefix", "/p", headers=[hdr("h", present=True)]), "p"),
        ),
    )
    t = RouteTable.compile(RouteConfiguration("rc", (vh,)))
    e = explain(t, req("/zz"), 0)
    assert e.domain_kind == "any" and e.route_index is None and e.cluster is None
    assert [c.reason for c in e.routes] == [
        "non_forwarding_action (server-side only)",
        "path '/r' does not match path '/zz'",
        "regex '/x[0-9]' does not match path '/zz'",
        "prefix '/p' does not match path '/zz'",
    ]
    e = explain(t, req("/p"), 0)
    assert e.routes[-1].reason == "header 'h' is missing, want present"
    e = explain(t, req("/r"), 0)
    assert e.action == "redirect" and e.route_name == "redir" and e.cluster is None
    e = explain(t, req("/x1"), 0)
    assert e.action == "route" and e.cluster == "x"
    assert [(c.name, c.chosen) for c in e.clusters] == [("x", True)]
