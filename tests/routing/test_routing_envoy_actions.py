"""Redirect locations and response-header mutations compared with the real Envoy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from routing_envoy import Envoy, envoy_get

from pymesh.routing import RequestInfo, RouteTable, redirect_location, response_header_ops
from pymesh.xds.resources.matchers import compile_re2
from pymesh.xds.resources.route import (
    AppendAction,
    DirectResponseAction,
    HeaderOps,
    HeaderValueOption,
    RedirectAction,
    RegexRewrite,
    Route,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)


def opt(
    key: str, value: str, action: AppendAction = "APPEND_IF_EXISTS_OR_ADD"
) -> HeaderValueOption:
    return HeaderValueOption(key, value, action, keep_empty_value=key == "x-e")


RC_OPS = HeaderOps(
    response_headers_to_add=(
        opt("x-lvl", "rc", "OVERWRITE_IF_EXISTS_OR_ADD"),
        opt("x-app", "rc"),
        opt("x-ow", "rc", "OVERWRITE_IF_EXISTS"),
    ),
    response_headers_to_remove=("x-gone",),
)
VH_OPS = HeaderOps(
    response_headers_to_add=(
        opt("x-lvl", "vh", "OVERWRITE_IF_EXISTS_OR_ADD"),
        opt("x-app", "vh"),
        opt("x-abs", "vh", "ADD_IF_ABSENT"),
        opt("x-ow", "vh", "OVERWRITE_IF_EXISTS"),
    )
)
ROUTE_OPS = HeaderOps(
    response_headers_to_add=(
        opt("x-app", "route"),
        opt("x-abs", "route", "ADD_IF_ABSENT"),
        opt("x-abs", "route2", "ADD_IF_ABSENT"),
        opt("x-ow", "route", "OVERWRITE_IF_EXISTS"),
        opt("x-e", ""),
        opt("x-f", ""),
        opt("x-gone", "route"),
        opt("x-lvl", "route", "OVERWRITE_IF_EXISTS_OR_ADD"),
    )
)


def rr(pattern: str, substitution: str) -> RegexRewrite:
    return RegexRewrite(pattern, substitution, compile_re2(pattern))


REDIRECTS: list[tuple[RouteMatch, RedirectAction]] = [
    (RouteMatch("prefix", "/r1"), RedirectAction(scheme_redirect="https")),
    (RouteMatch("prefix", "/r2"), RedirectAction(port_redirect=8443)),
    (RouteMatch("prefix", "/r3"), RedirectAction(path_redirect="/new?k=v", strip_query=True)),
    (RouteMatch("prefix", "/r4"), RedirectAction(path_redirect="/new")),
    (RouteMatch("prefix", "/r5"), RedirectAction(path_redirect="/new", strip_query=True)),
    (
        RouteMatch("prefix", "/r6/"),
        RedirectAction(prefix_rewrite="/moved/", host_redirect="h.example", response_code=302),
    ),
    (
        RouteMatch("safe_regex", "/r7/.*"),
        RedirectAction(regex_rewrite=rr("^/r7/(.*)$", r"/x/\1"), response_code=307),
    ),
    (RouteMatch("prefix", "/r8"), RedirectAction(scheme_redirect="https", host_redirect="h.ex")),
    (RouteMatch("prefix", "/r9"), RedirectAction(strip_query=True, port_redirect=81)),
    (RouteMatch("prefix", "/R10", case_sensitive=False), RedirectAction(prefix_rewrite="/p")),
]


def build() -> RouteConfiguration:
    routes = [Route(m, a, name=f"redirect{i}") for i, (m, a) in enumerate(REDIRECTS)]
    routes.append(
        Route(RouteMatch("prefix", "/hdr"), DirectResponseAction(200, b"h"), header_ops=ROUTE_OPS)
    )
    vh = VirtualHost("vh", ("*",), tuple(routes), header_ops=VH_OPS)
    return RouteConfiguration("rc", (vh,), header_ops=RC_OPS)


# --- dataclasses -> Envoy JSON ---------------------------------------------------------


def hvo_json(o: HeaderValueOption) -> dict[str, Any]:
    return {
        "header": {"key": o.key, "value": o.value},
        "append_action": o.append_action,
        "keep_empty_value": o.keep_empty_value,
    }


def ops_json(ops: HeaderOps) -> dict[str, Any]:
    return {
        "response_headers_to_add": [hvo_json(o) for o in ops.response_headers_to_add],
        "response_headers_to_remove": list(ops.response_headers_to_remove),
    }


def redirect_json(a: RedirectAction) -> dict[str, Any]:
    out: dict[str, Any] = {"strip_query": a.strip_query}
    if a.scheme_redirect:
        out["scheme_redirect"] = a.scheme_redirect
    if a.host_redirect:
        out["host_redirect"] = a.host_redirect
    if a.port_redirect:
        out["port_redirect"] = a.port_redirect
    if a.path_redirect:
        out["path_redirect"] = a.path_redirect
    if a.prefix_rewrite:
        out["prefix_rewrite"] = a.prefix_rewrite
    if a.regex_rewrite:
        out["regex_rewrite"] = {
            "pattern": {"regex": a.regex_rewrite.pattern},
            "substitution": a.regex_rewrite.substitution,
        }
    codes = {301: "MOVED_PERMANENTLY", 302: "FOUND", 307: "TEMPORARY_REDIRECT"}
    out["response_code"] = codes[a.response_code]
    return out


def match_json(m: RouteMatch) -> dict[str, Any]:
    key = "safe_regex" if m.path_kind == "safe_regex" else m.path_kind
    value: Any = {"regex": m.path} if m.path_kind == "safe_regex" else m.path
    return {key: value, "case_sensitive": m.case_sensitive}


def route_config_json(rc: RouteConfiguration) -> dict[str, Any]:
    vh = rc.virtual_hosts[0]
    routes = []
    for r in vh.routes:
        entry: dict[str, Any] = {"name": r.name, "match": match_json(r.match)}
        entry.update(ops_json(r.header_ops))
        if isinstance(r.action, RedirectAction):
            entry["redirect"] = redirect_json(r.action)
        else:
            assert isinstance(r.action, DirectResponseAction)
            entry["direct_response"] = {"status": 200, "body": {"inline_string": "h"}}
        routes.append(entry)
    vh_json = {"name": vh.name, "domains": list(vh.domains), "routes": routes}
    vh_json.update(ops_json(vh.header_ops))
    out: dict[str, Any] = {"name": rc.name, "virtual_hosts": [vh_json]}
    out.update(ops_json(rc.header_ops))
    return out


HOSTS = ["foo", "foo:80", "foo:8080", "foo:443", "[::1]:80", "[::1]", "Foo.Example:80"]
PATHS = ["/r1", "/r2?a=1", "/r3?a=1", "/r4?a=1&b", "/r4", "/r5?a=1", "/r6/a/b?c=1", "/r7/abc?q=1"]
PATHS += ["/r8/x", "/r9?x=1", "/r10/x?y", "/R10"]


def test_redirect_locations_match_envoy(envoy_runner: Callable[[dict[str, Any]], Envoy]) -> None:
    rc = build()
    table = RouteTable.compile(rc)
    envoy = envoy_runner(route_config_json(rc))
    checked = 0
    for host in HOSTS:
        for path in PATHS:
            req = RequestInfo("GET", host, path, {})
            d = table.select(req, 0)
            assert d is not None and isinstance(d.action, RedirectAction), path
            reply = envoy_get(envoy, host, path, [])
            location = dict(reply.headers).get("location")
            assert (reply.status, location) == (
                d.action.response_code,
                redirect_location(d, req, "http"),
            ), (host, path)
            checked += 1
    assert checked == len(HOSTS) * len(PATHS)


def test_response_header_mutations_match_envoy(
    envoy_runner: Callable[[dict[str, Any]], Envoy],
) -> None:
    rc = build()
    table = RouteTable.compile(rc)
    envoy = envoy_runner(route_config_json(rc))
    d = table.select(RequestInfo("GET", "foo", "/hdr", {}), 0)
    assert d is not None
    ours = [h for h in response_header_ops(table, d).apply([]) if h[0].startswith("x-")]
    reply = envoy_get(envoy, "foo", "/hdr", [])
    theirs = [h for h in reply.headers if h[0].startswith("x-")]
    assert sorted(ours) == sorted(theirs)
    # Order among values of one name is part of the contract (appends in level order).
    for name in {k for k, _ in theirs}:
        assert [v for k, v in ours if k == name] == [v for k, v in theirs if k == name]
    assert ("x-app", "rc") in ours and ("x-lvl", "rc") in ours
