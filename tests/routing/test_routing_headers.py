"""Header mutations: per-level semantics and Envoy's default level order.

Expected values were checked against Envoy 1.40 with an echo upstream.
"""

from __future__ import annotations

from routing_helpers import req

from pymesh.routing import HeaderMutation, RouteTable, request_header_ops, response_header_ops
from pymesh.xds.resources.route import (
    AppendAction,
    ClusterWeight,
    HeaderOps,
    HeaderValueOption,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)

H = list[tuple[str, str]]


def opt(
    key: str, value: str, action: AppendAction = "APPEND_IF_EXISTS_OR_ADD", keep: bool = False
) -> HeaderValueOption:
    return HeaderValueOption(key, value, action, keep)


def level(*adds: HeaderValueOption, remove: tuple[str, ...] = ()) -> HeaderOps:
    return HeaderOps(request_headers_to_add=adds, request_headers_to_remove=remove)


def apply(ops: HeaderOps, headers: H) -> H:
    return HeaderMutation.request([ops]).apply(headers)


def test_append_adds_another_value() -> None:
    assert apply(level(opt("x", "2")), [("x", "1")]) == [("x", "1"), ("x", "2")]


def test_add_if_absent() -> None:
    ops = level(opt("x", "2", "ADD_IF_ABSENT"))
    assert apply(ops, [("x", "1")]) == [("x", "1")]
    assert apply(ops, []) == [("x", "2")]


def test_overwrite_if_exists_or_add_replaces_every_value() -> None:
    ops = level(opt("x", "new", "OVERWRITE_IF_EXISTS_OR_ADD"))
    assert apply(ops, [("x", "1"), ("y", "y"), ("x", "2")]) == [("y", "y"), ("x", "new")]
    assert apply(ops, []) == [("x", "new")]


def test_overwrite_if_exists() -> None:
    ops = level(opt("x", "new", "OVERWRITE_IF_EXISTS"))
    assert apply(ops, [("x", "old")]) == [("x", "new")]
    assert apply(ops, []) == []


def test_same_level_decisions_see_the_headers_before_that_level() -> None:
    # Envoy 1.40: x-n 1 (append) and x-n 2 (add-if-absent) are both added to a request
    # without x-n, because ADD_IF_ABSENT is decided before the level's additions land.
    ops = level(
        opt("x-n", "1"), opt("x-n", "2", "ADD_IF_ABSENT"), opt("x-o", "v", "OVERWRITE_IF_EXISTS")
    )
    assert apply(ops, []) == [("x-n", "1"), ("x-n", "2")]


def test_overwrites_land_before_appends() -> None:
    ops = level(opt("x", "a"), opt("x", "o", "OVERWRITE_IF_EXISTS_OR_ADD"))
    assert apply(ops, [("x", "old")]) == [("x", "o"), ("x", "a")]


def test_empty_values_are_dropped_unless_keep_empty_value() -> None:
    ops = level(opt("e", "", keep=True), opt("f", ""))
    assert apply(ops, []) == [("e", "")]


def test_removals_come_first_and_are_case_insensitive() -> None:
    ops = level(opt("x", "added"), remove=("X", "gone"))
    assert apply(ops, [("x", "1"), ("gone", "g"), ("k", "k")]) == [("k", "k"), ("x", "added")]


def test_keys_are_lower_cased_and_values_literal() -> None:
    ops = level(opt("X-Up", "%REQ(x)%"))
    assert apply(ops, []) == [("x-up", "%REQ(x)%")]


def test_apply_returns_a_new_list_and_empty_mutation() -> None:
    m = HeaderMutation.request([HeaderOps()])
    src = [("a", "1")]
    out = m.apply(src)
    assert m.empty and out == src and out is not src


def build(weighted: bool) -> RouteTable:
    def ops(tag: str) -> HeaderOps:
        return HeaderOps(
            request_headers_to_add=(
                opt("x-lvl", tag, "OVERWRITE_IF_EXISTS_OR_ADD"),
                opt("x-app", tag),
            ),
            response_headers_to_add=(
                opt("r-lvl", tag, "OVERWRITE_IF_EXISTS_OR_ADD"),
                opt("r-app", tag),
            ),
        )

    action = (
        RouteAction(
            weighted_clusters=(
                ClusterWeight("a", 1, ops("wc-a")),
                ClusterWeight("b", 1, ops("wc-b")),
            ),
            total_weight=2,
        )
        if weighted
        else RouteAction(cluster="c")
    )
    vh = VirtualHost(
        "vh",
        ("*",),
        (Route(RouteMatch("prefix", "/"), action, header_ops=ops("route")),),
        header_ops=ops("vh"),
    )
    return RouteTable.compile(RouteConfiguration("rc", (vh,), header_ops=ops("rc")))


def test_level_order_most_specific_first() -> None:
    # Envoy 1.40 sent: x-app wc, route, vh, rc and x-lvl rc (the least specific wins).
    t = build(weighted=True)
    d = t.select(req(), 0)
    assert d is not None and d.cluster == "a"
    out = request_header_ops(t, d).apply([("x-lvl", "client")])
    assert [v for k, v in out if k == "x-app"] == ["wc-a", "route", "vh", "rc"]
    assert [v for k, v in out if k == "x-lvl"] == ["rc"]
    resp = response_header_ops(t, d).apply([])
    assert [v for k, v in resp if k == "r-app"] == ["wc-a", "route", "vh", "rc"]
    assert [v for k, v in resp if k == "r-lvl"] == ["rc"]
    d = t.select(req(), 1)
    assert d is not None and d.cluster == "b"
    out = request_header_ops(t, d).apply([])
    assert [v for k, v in out if k == "x-app"] == ["wc-b", "route", "vh", "rc"]


def test_level_order_without_weighted_clusters() -> None:
    t = build(weighted=False)
    d = t.select(req(), 0)
    assert d is not None
    out = request_header_ops(t, d).apply([])
    assert [v for k, v in out if k == "x-app"] == ["route", "vh", "rc"]
