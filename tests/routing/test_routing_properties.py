"""Property tests: the compiled table agrees with a naive reference written from the docs.

The reference below is deliberately simple (linear scans, no precomputation) and written
separately from pymesh/routing; explain() must also agree with select().
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from pymesh.routing import RequestInfo, RouteTable, explain
from pymesh.xds.resources.matchers import (
    FractionalPercent,
    HeaderMatcher,
    Int64Range,
    QueryParameterMatcher,
    StringMatcher,
)
from pymesh.xds.resources.route import (
    ClusterWeight,
    PathMatchKind,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)

DOMAINS = [
    "a.com",
    "A.com:80",
    "*.com",
    "*.a.com",
    "*-x.a.com",
    "a.*",
    "a.com*",
    "b.*",
    "*",
    "b.com",
]
AUTHORITIES = [
    "a.com",
    "A.COM",
    "a.com:80",
    "b.a.com",
    "y-x.a.com",
    "-x.a.com",
    "a.org",
    "b.com",
    "c.com",
    "x",
    "",
    "a.",
]
PATTERNS = ["/", "/a", "/A", "/a/b", "/ab", "/b", ""]
REGEXES = ["/a.*", "/[ab]+", "/a/b", ".*b"]
PATHS = [
    "/",
    "/a",
    "/A",
    "/a/b",
    "/ab",
    "/a/",
    "/b",
    "/a?x=1",
    "/ab?y",
    "/B/a",
    "/a#f",
    "/a/b?x=2&x=1",
]
HEADER_VALUES = [None, "", "1", "10", "-3", "abc", "ABC", " 7 ", "x1"]

str_matchers = st.builds(
    StringMatcher.make,
    st.sampled_from(["exact", "prefix", "suffix", "contains"]),
    st.sampled_from(["", "a", "1", "abc", "AB", "c"]),
    st.booleans(),
) | st.builds(
    StringMatcher.make, st.just("safe_regex"), st.sampled_from(["[0-9]+", "a.*", ".*", ""])
)

header_matchers = st.one_of(
    st.builds(
        HeaderMatcher,
        st.sampled_from(["h1", "h2"]),
        string_match=str_matchers,
        invert_match=st.booleans(),
        treat_missing_header_as_empty=st.booleans(),
    ),
    st.builds(
        HeaderMatcher,
        st.sampled_from(["h1", "h2"]),
        range_match=st.builds(Int64Range, st.integers(-5, 5), st.integers(0, 12)),
        invert_match=st.booleans(),
        treat_missing_header_as_empty=st.booleans(),
    ),
    st.builds(
        HeaderMatcher,
        st.sampled_from(["h1", "h2"]),
        present_match=st.booleans(),
        invert_match=st.booleans(),
    ),
)

query_matchers = st.one_of(
    st.builds(QueryParameterMatcher, st.sampled_from(["x", "y"]), string_match=str_matchers),
    st.builds(QueryParameterMatcher, st.sampled_from(["x", "y"]), present_match=st.booleans()),
)


@st.composite
def route_matches(draw: st.DrawFn) -> RouteMatch:
    kinds: list[PathMatchKind] = ["prefix", "path", "safe_regex", "path_separated_prefix"]
    kind = draw(st.sampled_from(kinds))
    if kind == "safe_regex":
        path = draw(st.sampled_from(REGEXES))
    elif kind == "path_separated_prefix":
        path = draw(st.sampled_from(["/a", "/A", "/a/b"]))
    else:
        path = draw(st.sampled_from(PATTERNS))
    fraction = None
    if draw(st.integers(0, 3)) == 0:
        fraction = draw(st.builds(FractionalPercent, st.integers(0, 100), st.just(100)))
    return RouteMatch(
        kind,
        path,
        case_sensitive=draw(st.booleans()),
        headers=tuple(draw(st.lists(header_matchers, max_size=2))) if draw(st.booleans()) else (),
        query_parameters=tuple(draw(st.lists(query_matchers, max_size=1)))
        if draw(st.booleans())
        else (),
        runtime_fraction=fraction,
        grpc=draw(st.booleans()) and draw(st.booleans()),
    )


@st.composite
def actions(draw: st.DrawFn) -> RouteAction:
    if draw(st.booleans()):
        return RouteAction(cluster=draw(st.sampled_from(["c1", "c2", "c3"])))
    weights = draw(st.lists(st.integers(0, 5), min_size=1, max_size=4).filter(lambda w: sum(w) > 0))
    cws = tuple(ClusterWeight(f"w{i}", w) for i, w in enumerate(weights))
    return RouteAction(weighted_clusters=cws, total_weight=sum(weights))


@st.composite
def route_configs(draw: st.DrawFn) -> RouteConfiguration:
    pool = list(DOMAINS)
    draw(st.randoms(use_true_random=False)).shuffle(pool)
    vhosts = []
    for i in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 3))
        domains, pool = pool[:n], pool[n:]
        if not domains:
            break
        routes = tuple(
            Route(draw(route_matches()), draw(actions()), name=f"r{j}")
            for j in range(draw(st.integers(0, 6)))
        )
        vhosts.append(VirtualHost(f"vh{i}", tuple(domains), routes))
    return RouteConfiguration("rc", tuple(vhosts))


@st.composite
def requests(draw: st.DrawFn) -> RequestInfo:
    headers = {}
    for name in ("h1", "h2"):
        v = draw(st.sampled_from(HEADER_VALUES))
        if v is not None:
            headers[name] = v
    return RequestInfo(
        "GET",
        draw(st.sampled_from(AUTHORITIES)),
        draw(st.sampled_from(PATHS)),
        headers,
        draw(st.booleans()),
    )


# --- the naive reference ------------------------------------------------------------------


def ref_vhost(rc: RouteConfiguration, authority: str) -> VirtualHost | None:
    host = authority.lower()
    best: tuple[int, int, VirtualHost] | None = None  # (class rank, length, vh)
    for vh in rc.virtual_hosts:
        for d in vh.domains:
            d = d.lower()
            cand: tuple[int, int] | None
            if d == "*":
                cand = (0, 0)
            elif d.startswith("*"):
                ok = host.endswith(d[1:]) and len(host) > len(d) - 1
                cand = (2, len(d)) if ok else None
            elif d.endswith("*"):
                ok = host.startswith(d[:-1]) and len(host) > len(d) - 1
                cand = (1, len(d)) if ok else None
            else:
                cand = (3, 0) if d == host else None
            if cand is not None and (best is None or cand > best[:2]):
                best = (cand[0], cand[1], vh)
    return None if best is None else best[2]


def ref_string(m: StringMatcher, v: str) -> bool:
    if m.kind == "safe_regex":
        return re.fullmatch(m.value, v) is not None
    a, b = (v.lower(), m.value.lower()) if m.ignore_case else (v, m.value)
    return {
        "exact": a == b,
        "prefix": a.startswith(b),
        "suffix": a.endswith(b),
        "contains": b in a,
    }[m.kind]


def ref_header(h: HeaderMatcher, headers: dict[str, str]) -> bool:
    v = headers.get(h.name)
    if h.present_match is not None:
        return (
            (v is not None) is h.present_match
            if not h.invert_match
            else (v is not None) is not h.present_match
        )
    if v is None:
        if not h.treat_missing_header_as_empty:
            return False
        v = ""
    if h.string_match is not None:
        r = ref_string(h.string_match, v)
    else:
        assert h.range_match is not None
        try:
            n = int(v.strip(" \t"))
            r = h.range_match.start <= n < h.range_match.end
        except ValueError:
            r = False
    return r ^ h.invert_match


def ref_query(q: QueryParameterMatcher, path: str) -> bool:
    values: dict[str, str] = {}
    if "?" in path:
        for part in path.split("?", 1)[1].split("#")[0].split("&"):
            k, _, val = part.partition("=")
            values.setdefault(k, val)
    if q.string_match is None:
        return (q.name in values) == (q.present_match is not False)
    return q.name in values and ref_string(q.string_match, values[q.name])


def ref_route_matches(m: RouteMatch, r: RequestInfo, rv: int) -> bool:
    path = re.split(r"[?#]", r.path)[0]
    if m.path_kind == "safe_regex":
        ok = re.fullmatch(m.path, path) is not None
    else:
        p, pat = (path, m.path) if m.case_sensitive else (path.lower(), m.path.lower())
        if m.path_kind == "prefix":
            ok = p.startswith(pat)
        elif m.path_kind == "path":
            ok = p == pat
        else:
            ok = p == pat or p.startswith(pat + "/")
    if m.runtime_fraction is not None:
        ok = ok and rv % m.runtime_fraction.denominator < m.runtime_fraction.numerator
    if m.grpc:
        ok = ok and r.is_grpc
    return (
        ok
        and all(ref_header(h, dict(r.headers)) for h in m.headers)
        and all(ref_query(q, r.path) for q in m.query_parameters)
    )


@dataclass
class RefDecision:
    vh: str
    index: int
    cluster: str | None


def ref_select(rc: RouteConfiguration, r: RequestInfo, rv: int) -> RefDecision | None:
    vh = ref_vhost(rc, r.authority)
    if vh is None:
        return None
    for i, route in enumerate(vh.routes):
        if ref_route_matches(route.match, r, rv):
            a = route.action
            assert isinstance(a, RouteAction)
            if not a.weighted_clusters:
                return RefDecision(vh.name, i, a.cluster)
            pick = rv % sum(cw.weight for cw in a.weighted_clusters)
            for cw in a.weighted_clusters:
                if pick < cw.weight:
                    return RefDecision(vh.name, i, cw.name)
                pick -= cw.weight
    return None


@settings(max_examples=120, deadline=None, derandomize=True)
@given(route_configs(), st.lists(requests(), min_size=1, max_size=8), st.integers(0, 2**64 - 1))
def test_compiled_table_agrees_with_reference(
    rc: RouteConfiguration, reqs: list[RequestInfo], rv: int
) -> None:
    table = RouteTable.compile(rc)
    for r in reqs:
        expected = ref_select(rc, r, rv)
        got = table.select(r, rv)
        if expected is None:
            assert got is None, (r, got)
        else:
            assert got is not None, (r, expected)
            assert (got.virtual_host.name, got.route_index, got.cluster) == (
                expected.vh,
                expected.index,
                expected.cluster,
            )
        e = explain(table, r, rv)
        assert e.route_index == (None if got is None else got.route_index)
        assert e.cluster == (None if got is None else got.cluster)
        assert sum(c.matched for c in e.routes) == (0 if got is None else 1)
        assert all((c.reason is None) == c.matched for c in e.routes)
