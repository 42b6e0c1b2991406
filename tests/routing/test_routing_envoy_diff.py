"""Differential test against the real Envoy: same routes, same requests, same route chosen.

Each route answers a direct response naming itself, so the body tells which route Envoy
picked (an empty 404 means no route). Weighted clusters and runtime fractions depend on
Envoy's random value and are covered by the unit tests instead.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from routing_envoy import Envoy, envoy_get

from pymesh.routing import RequestInfo, RouteTable
from pymesh.xds.resources.matchers import (
    HeaderMatcher,
    Int64Range,
    QueryParameterMatcher,
    StringMatcher,
)
from pymesh.xds.resources.route import (
    DirectResponseAction,
    PathMatchKind,
    Route,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)

DOMAINS = ["a.com", "a.com:80", "*.com", "*.a.com", "*-x.a.com", "a.*", "api-*", "b.com", "*"]
HOSTS = ["a.com", "A.COM", "a.com:80", "b.a.com", "y-x.a.com", "-x.a.com", "a.org", "api-1"]
HOSTS += ["b.com", "c.com", "x"]
PATHS = ["/", "/a", "/A", "/a/b", "/ab", "/a/", "/b", "/a?x=1", "/ab?y", "/B/a", "/a/b?x=2&x=1"]
PATHS += ["/v1/items", "/V1/x?x=abc", "/a?x=a%20b", "/a?y=1&x"]
VALUES = ["", "1", "10", "-3", "abc", "ABC", "x1", "a,b"]


# --- random configuration -------------------------------------------------------------


def rand_string_matcher(rng: random.Random) -> StringMatcher:
    if rng.random() < 0.2:
        return StringMatcher.make("safe_regex", rng.choice(["[0-9]+", "a.*", ".*", "-?[0-9]"]))
    kind = rng.choice(["exact", "prefix", "suffix", "contains"])
    # Envoy requires a non-empty value for prefix/suffix/contains.
    value = rng.choice(["", "a", "1", "abc", "AB", "b"] if kind == "exact" else ["a", "1", "AB"])
    return StringMatcher.make(kind, value, rng.random() < 0.3)  # type: ignore[arg-type]


def rand_header(rng: random.Random) -> HeaderMatcher:
    name = rng.choice(["h1", "h2"])
    roll = rng.random()
    if roll < 0.2:
        return HeaderMatcher(
            name, present_match=rng.random() < 0.5, invert_match=rng.random() < 0.3
        )
    invert, empty = rng.random() < 0.3, rng.random() < 0.3
    if roll < 0.4:
        lo = rng.randint(-5, 5)
        return HeaderMatcher(
            name,
            range_match=Int64Range(lo, lo + rng.randint(1, 12)),
            invert_match=invert,
            treat_missing_header_as_empty=empty,
        )
    return HeaderMatcher(
        name,
        string_match=rand_string_matcher(rng),
        invert_match=invert,
        treat_missing_header_as_empty=empty,
    )


def rand_match(rng: random.Random) -> RouteMatch:
    kinds: list[PathMatchKind] = ["prefix", "prefix", "path", "safe_regex", "path_separated_prefix"]
    kind = rng.choice(kinds)
    path = {
        "prefix": rng.choice(["/", "/a", "/A", "/a/b", "/ab", "/v1", ""]),
        "path": rng.choice(["/", "/a", "/A", "/a/b", "/ab", "/a/"]),
        "safe_regex": rng.choice(["/a.*", "/[ab]+", "/a/b", ".*b", "/v[0-9]/.*"]),
        "path_separated_prefix": rng.choice(["/a", "/A", "/v1"]),
    }[kind]
    headers = tuple(rand_header(rng) for _ in range(rng.choice([0, 0, 1, 2])))
    queries: tuple[QueryParameterMatcher, ...] = ()
    if rng.random() < 0.25:
        if rng.random() < 0.4:
            queries = (
                QueryParameterMatcher(rng.choice(["x", "y"]), present_match=rng.random() < 0.6),
            )
        else:
            queries = (QueryParameterMatcher(rng.choice(["x", "y"]), rand_string_matcher(rng)),)
    return RouteMatch(
        kind, path, case_sensitive=rng.random() < 0.6, headers=headers, query_parameters=queries
    )


def rand_config(rng: random.Random) -> RouteConfiguration:
    pool = list(DOMAINS)
    rng.shuffle(pool)
    vhosts = []
    for i in range(rng.randint(2, 4)):
        domains, pool = pool[: rng.randint(1, 3)], pool[3:]
        if not domains:
            break
        routes = tuple(
            Route(rand_match(rng), DirectResponseAction(200, f"vh{i}/r{j}".encode()), name=f"r{j}")
            for j in range(rng.randint(1, 8))
        )
        vhosts.append(VirtualHost(f"vh{i}", tuple(domains), routes))
    return RouteConfiguration("rc", tuple(vhosts))


def body_of(route: Route) -> str:
    assert isinstance(route.action, DirectResponseAction)
    return route.action.body.decode()


# --- dataclasses -> Envoy JSON ---------------------------------------------------------


def sm_json(m: StringMatcher) -> dict[str, Any]:
    if m.kind == "safe_regex":
        return {"safe_regex": {"regex": m.value}}
    return {m.kind: m.value, "ignore_case": m.ignore_case}


def header_json(h: HeaderMatcher) -> dict[str, Any]:
    out: dict[str, Any] = {"name": h.name, "invert_match": h.invert_match}
    if h.present_match is not None:
        out["present_match"] = h.present_match
        return out
    out["treat_missing_header_as_empty"] = h.treat_missing_header_as_empty
    if h.range_match is not None:
        out["range_match"] = {"start": str(h.range_match.start), "end": str(h.range_match.end)}
    else:
        assert h.string_match is not None
        out["string_match"] = sm_json(h.string_match)
    return out


def match_json(m: RouteMatch) -> dict[str, Any]:
    out: dict[str, Any] = {"case_sensitive": m.case_sensitive}
    if m.path_kind == "safe_regex":
        out["safe_regex"] = {"regex": m.path}
    else:
        out[m.path_kind] = m.path
    out["headers"] = [header_json(h) for h in m.headers]
    out["query_parameters"] = [
        {"name": q.name, "present_match": q.present_match}
        if q.string_match is None
        else {"name": q.name, "string_match": sm_json(q.string_match)}
        for q in m.query_parameters
    ]
    return out


def route_config_json(rc: RouteConfiguration) -> dict[str, Any]:
    vhosts = [
        {
            "name": vh.name,
            "domains": list(vh.domains),
            "routes": [
                {
                    "name": r.name,
                    "match": match_json(r.match),
                    "direct_response": {
                        "status": 200,
                        "body": {"inline_string": body_of(r)},
                    },
                }
                for r in vh.routes
            ],
        }
        for vh in rc.virtual_hosts
    ]
    return {"name": rc.name, "virtual_hosts": vhosts}


def envoy_route(envoy: Envoy, host: str, path: str, headers: list[tuple[str, str]]) -> str | None:
    reply = envoy_get(envoy, host, path, headers)
    if reply.status == 404 and not reply.body:
        return None
    assert reply.status == 200, reply
    return reply.body


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_route_choice_matches_envoy(
    envoy_runner: Callable[[dict[str, Any]], Envoy], seed: int
) -> None:
    rng = random.Random(seed)
    rc = rand_config(rng)
    table = RouteTable.compile(rc)
    envoy = envoy_runner(route_config_json(rc))
    compared = matched = 0
    for _ in range(120):
        host, path = rng.choice(HOSTS), rng.choice(PATHS)
        headers: list[tuple[str, str]] = []
        for name in ("h1", "h2"):
            for _ in range(rng.choice([0, 1, 1, 2])):
                headers.append((name, rng.choice(VALUES)))
        joined: dict[str, str] = {}
        values: dict[str, list[str]] = {}
        for k, v in headers:
            values.setdefault(k, []).append(v)
        for k, vs in values.items():
            joined[k] = ",".join(vs)
        repeated = {k: tuple(vs) for k, vs in values.items() if len(vs) > 1}
        req = RequestInfo("GET", host, path, joined, False, "", repeated or None)
        d = table.select(req, 0)
        ours = None if d is None else body_of(d.route)
        theirs = envoy_route(envoy, host, path, headers)
        assert ours == theirs, (host, path, headers)
        compared += 1
        matched += ours is not None
    assert compared == 120 and matched > 10  # the comparison exercised real matches
