"""Route matching, case by case (Envoy semantics; see pymesh/routing/_match.py)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import re2
from routing_helpers import hdr, match, qp, req, route, sm, table

from pymesh.routing._match import parse_int64, re2_fullmatcher, regex_literal_prefix
from pymesh.xds.resources.route import (
    DirectResponseAction,
    NonForwardingAction,
    RedirectAction,
    Route,
    RouteMatch,
)


def matches(m: RouteMatch, path: str = "/", headers: Mapping[str, str] | None = None) -> bool:
    return table(route(m, "hit")).select(req(path, headers), 0) is not None


PATH_CASES = [
    # kind, pattern, case_sensitive, path, expected
    ("prefix", "/api", True, "/api", True),
    ("prefix", "/api", True, "/api/v1", True),
    ("prefix", "/api", True, "/apiv1", True),
    ("prefix", "/api", True, "/web", False),
    ("prefix", "/api", True, "/API", False),
    ("prefix", "/api", False, "/API/x", True),
    ("prefix", "/API", False, "/api/x", True),
    ("prefix", "/api", True, "/ap?i", False),  # query is not part of the path
    ("prefix", "/a?b", True, "/a?b", False),
    ("prefix", "", True, "/anything", True),
    ("prefix", "/", True, "/", True),
    ("path", "/exact", True, "/exact", True),
    ("path", "/exact", True, "/exact?x=1", True),
    ("path", "/exact", True, "/exact#frag", True),
    ("path", "/exact", True, "/exact/", False),
    ("path", "/exact", True, "/EXACT", False),
    ("path", "/exact", False, "/EXACT", True),
    ("safe_regex", "/v[0-9]+/.*", True, "/v12/x", True),
    ("safe_regex", "/v[0-9]+/.*", True, "/v12/x?q=1", True),
    ("safe_regex", "/v[0-9]+", True, "/v12/x", False),  # full match only
    ("safe_regex", "/v[0-9]+", True, "/x/v12", False),
    ("safe_regex", "/v[0-9]+", False, "/V12", False),  # case_sensitive ignored for regex
    ("path_separated_prefix", "/sep", True, "/sep", True),
    ("path_separated_prefix", "/sep", True, "/sep/", True),
    ("path_separated_prefix", "/sep", True, "/sep/a", True),
    ("path_separated_prefix", "/sep", True, "/sep?x", True),
    ("path_separated_prefix", "/sep", True, "/sepx", False),
    ("path_separated_prefix", "/sep", True, "/se", False),
    ("path_separated_prefix", "/sep", False, "/SEP/a", True),
]


@pytest.mark.parametrize(("kind", "pattern", "cs", "path", "expected"), PATH_CASES)
def test_path_matchers(kind: str, pattern: str, cs: bool, path: str, expected: bool) -> None:
    m = match(kind, pattern, case_sensitive=cs)  # type: ignore[arg-type]
    assert matches(m, path) is expected


HEADER_CASES = [
    # matcher, headers, expected
    (hdr("x", sm("exact", "a")), {"x": "a"}, True),
    (hdr("x", sm("exact", "a")), {"x": "b"}, False),
    (hdr("x", sm("exact", "a")), {}, False),
    (hdr("x", sm("exact", "A", ignore_case=True)), {"x": "a"}, True),
    (hdr("x", sm("prefix", "ab")), {"x": "abc"}, True),
    (hdr("x", sm("suffix", "bc")), {"x": "abc"}, True),
    (hdr("x", sm("contains", "b")), {"x": "abc"}, True),
    (hdr("x", sm("contains", "z")), {"x": "abc"}, False),
    (hdr("x", sm("safe_regex", "a.c")), {"x": "abc"}, True),
    (hdr("x", sm("safe_regex", "a")), {"x": "abc"}, False),  # full match
    # invert_match
    (hdr("x", sm("exact", "a"), invert=True), {"x": "b"}, True),
    (hdr("x", sm("exact", "a"), invert=True), {"x": "a"}, False),
    (hdr("x", sm("exact", "a"), invert=True), {}, False),  # missing never matches
    # treat_missing_header_as_empty (the proto's documented examples)
    (hdr("x", sm("safe_regex", "^$"), missing_as_empty=True), {}, True),
    (hdr("x", sm("safe_regex", "^$")), {}, False),
    (hdr("x", rng=(0, 10), invert=True, missing_as_empty=True), {}, True),
    (hdr("x", rng=(0, 10), invert=True), {}, False),
    (hdr("x", sm("exact", ""), missing_as_empty=True), {}, True),
    # present_match (checked against Envoy 1.40)
    (hdr("x", present=True), {"x": ""}, True),
    (hdr("x", present=True), {}, False),
    (hdr("x", present=False), {}, True),
    (hdr("x", present=False), {"x": "1"}, False),
    (hdr("x", present=True, invert=True), {}, True),
    (hdr("x", present=False, invert=True), {}, False),
    (hdr("x", present=False, invert=True), {"x": "1"}, True),
    # range_match [start, end) on an int64 (absl::SimpleAtoi)
    (hdr("x", rng=(0, 10)), {"x": "0"}, True),
    (hdr("x", rng=(0, 10)), {"x": "9"}, True),
    (hdr("x", rng=(0, 10)), {"x": "10"}, False),
    (hdr("x", rng=(-10, 0)), {"x": "-1"}, True),
    (hdr("x", rng=(-10, 0)), {"x": "-1"}, True),
    (hdr("x", rng=(-10, 0), invert=True), {"x": "-1"}, False),
    (hdr("x", rng=(0, 10)), {"x": "+5"}, True),
    (hdr("x", rng=(0, 10)), {"x": " 5 "}, True),
    (hdr("x", rng=(0, 10)), {"x": "5a"}, False),
    (hdr("x", rng=(0, 10)), {"x": "5.0"}, False),
    (hdr("x", rng=(0, 10)), {"x": "1_0"}, False),
    (hdr("x", rng=(0, 10)), {"x": "0x5"}, False),
    (hdr("x", rng=(0, 10)), {"x": ""}, False),
    (hdr("x", rng=(0, 2**63 - 1)), {"x": str(2**63)}, False),  # overflows int64
    (hdr("x", rng=(0, 10), invert=True), {"x": "abc"}, True),
    # pseudo-headers
    (hdr(":method", sm("exact", "POST")), {}, False),
    (hdr(":authority", sm("exact", "svc")), {}, True),
    (hdr(":path", sm("prefix", "/p?")), {}, True),
    (hdr("host", sm("exact", "svc")), {}, True),  # Envoy 1.40: "host" is :authority
    (hdr("host", sm("exact", "other")), {"host": "other"}, False),
    # a single header value containing a comma is one value
    (hdr("x", sm("exact", "a,b")), {"x": "a,b"}, True),
    (hdr("x", sm("exact", "a")), {"x": "a,b"}, False),
]


@pytest.mark.parametrize(("hm", "headers", "expected"), HEADER_CASES)
def test_header_matchers(hm: object, headers: dict[str, str], expected: bool) -> None:
    m = match("prefix", "/", headers=[hm])  # type: ignore[list-item]
    assert matches(m, "/p?q", headers) is expected


@pytest.mark.parametrize(
    ("hm", "expected"),
    [
        (hdr("x", sm("exact", "a")), True),
        (hdr("x", sm("exact", "b")), True),
        (hdr("x", sm("exact", "a,b")), False),  # Envoy 1.40 matches value by value
        (hdr("x", sm("prefix", "a,")), False),
        (hdr("x", sm("exact", "a"), invert=True), False),
        (hdr("x", sm("exact", "c"), invert=True), True),
        (hdr("x", present=True), True),
    ],
)
def test_repeated_header_matches_any_value(hm: object, expected: bool) -> None:
    t = table(route(match(headers=[hm]), "hit"))  # type: ignore[list-item]
    r = req("/", {"x": "a,b"}, repeated={"x": ("a", "b")})
    assert (t.select(r, 0) is not None) is expected


def test_repeated_range_matches_any_value() -> None:
    t = table(route(match(headers=[hdr("x", rng=(0, 10))]), "hit"))
    assert t.select(req("/", {"x": "1,2"}, repeated={"x": ("1", "20")}), 0) is not None
    assert t.select(req("/", {"x": "1,2"}), 0) is None  # joined value is not an integer


def test_all_headers_must_match() -> None:
    m = match(headers=[hdr("a", sm("exact", "1")), hdr("b", sm("exact", "2"))])
    assert matches(m, "/", {"a": "1", "b": "2"})
    assert not matches(m, "/", {"a": "1"})
    assert not matches(m, "/", {"b": "2"})


QUERY_CASES = [
    (qp("a", sm("exact", "1")), "/?a=1", True),
    (qp("a", sm("exact", "1")), "/?a=2", False),
    (qp("a", sm("exact", "1")), "/", False),
    (qp("a", sm("exact", "2")), "/?a=1&a=2", False),  # first value only
    (qp("a", sm("exact", "1")), "/?a=1&a=2", True),
    (qp("a", sm("exact", "")), "/?a", True),
    (qp("a", sm("exact", "a%20b")), "/?a=a%20b", True),  # raw
    (qp("a", sm("exact", "a b")), "/?a=a%20b", False),
    (qp("a", sm("prefix", "x", ignore_case=True)), "/?a=Xy", True),
    (qp("a", sm("safe_regex", "[0-9]+")), "/?a=123", True),
    (qp("a", present=True), "/?a", True),
    (qp("a", present=True), "/?b=1", False),
    (qp("a", present=False), "/?b=1", True),  # checked against Envoy 1.40
    (qp("a", present=False), "/?a", False),
    (qp("A", present=True), "/?a=1", False),  # names are case-sensitive
]


@pytest.mark.parametrize(("qm", "path", "expected"), QUERY_CASES)
def test_query_parameter_matchers(qm: object, path: str, expected: bool) -> None:
    assert matches(match(query=[qm]), path) is expected  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("fraction", "random_value", "expected"),
    [
        ((50, 100), 49, True),
        ((50, 100), 50, False),
        ((50, 100), 149, True),
        ((50, 100), 150, False),
        ((0, 100), 0, False),
        ((100, 100), 99, True),
        ((1, 10_000), 10_000, True),
        ((1, 10_000), 10_001, False),
        ((999_999, 1_000_000), 999_998, True),
        ((999_999, 1_000_000), 999_999, False),
        ((30, 100), 2**64 - 1, True),  # (2**64 - 1) % 100 == 15
        ((10, 100), 2**64 - 1, False),
    ],
)
def test_runtime_fraction(fraction: tuple[int, int], random_value: int, expected: bool) -> None:
    t = table(route(match(fraction=fraction), "hit"))
    assert (t.select(req("/"), random_value) is not None) is expected


def test_grpc_only_routes() -> None:
    t = table(route(match(grpc=True), "grpc"), route(match(), "http"))
    assert t.select(req("/svc/M", grpc=True), 0).cluster == "grpc"  # type: ignore[union-attr]
    assert t.select(req("/svc/M"), 0).cluster == "http"  # type: ignore[union-attr]


def test_first_match_wins_and_no_match_is_none() -> None:
    t = table(
        route(match("prefix", "/a"), "first"),
        route(match("prefix", "/a/b"), "never"),
        route(match("path", "/z"), "z"),
    )
    assert t.select(req("/a/b"), 0).cluster == "first"  # type: ignore[union-attr]
    assert t.select(req("/z"), 0).cluster == "z"  # type: ignore[union-attr]
    assert t.select(req("/y"), 0) is None


def test_non_forwarding_routes_never_match_and_indexes_are_kept() -> None:
    t = table(
        Route(match("prefix", "/"), NonForwardingAction(), name="nf"),
        Route(match("prefix", "/r"), RedirectAction(host_redirect="x"), name="redir"),
        Route(match("prefix", "/d"), DirectResponseAction(418, b"tea"), name="direct"),
        route(match("prefix", "/"), "c", name="last"),
    )
    d = t.select(req("/r"), 0)
    assert d is not None and d.route_index == 1 and d.cluster is None
    assert isinstance(d.action, RedirectAction)
    d = t.select(req("/d"), 0)
    assert d is not None and d.route_index == 2 and isinstance(d.action, DirectResponseAction)
    d = t.select(req("/x"), 0)
    assert d is not None and (d.route_index, d.route.name, d.cluster) == (3, "last", "c")


def test_cluster_header() -> None:
    t = table(route(match(), cluster=None, cluster_header="X-Cluster"))  # type: ignore[arg-type]
    assert t.select(req("/", {"x-cluster": "blue"}), 0).cluster == "blue"  # type: ignore[union-attr]
    assert t.select(req("/", {}), 0).cluster is None  # type: ignore[union-attr]
    assert t.select(req("/", {"x-cluster": ""}), 0).cluster is None  # type: ignore[union-attr]
    r = req("/", {"x-cluster": "a,b"}, repeated={"x-cluster": ("a", "b")})
    assert t.select(r, 0).cluster == "a"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("-5", -5), ("+7", 7), ("\t8\n", 8), ("", None), ("1 2", None), ("٣", None)],
)
def test_parse_int64(value: str, expected: int | None) -> None:
    assert parse_int64(value) == expected


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        ("/re23/[0-9]+", "/re23/"),
        ("/ab*", "/a"),
        ("/ab?", "/a"),
        ("/ab+", "/a"),
        ("/ab{2}", "/a"),
        ("/a|/b", ""),
        ("^/a", ""),
        ("/a(b)", "/a"),
        ("/a\\.b", "/a"),
        ("(?i)/a", ""),
        ("abc", "abc"),
        ("a*", ""),
        ("", ""),
    ],
)
def test_regex_literal_prefix(pattern: str, literal: str) -> None:
    assert regex_literal_prefix(pattern) == literal


REGEX_PATTERNS = [
    "/re23/[0-9]+",
    "/ab*",
    "/a|/b",
    "/a(b|c)d?",
    "/é+x",
    "(?i)/ab",
    "",
    ".*",
    "/a\\.b",
]
REGEX_INPUTS = [
    "",
    "/",
    "/a",
    "/ab",
    "/abbb",
    "/b",
    "/re23/1",
    "/re23/",
    "/acd",
    "/ééx",
    "/AB",
    "/a.b",
]


@pytest.mark.parametrize("pattern", REGEX_PATTERNS)
def test_fast_regex_paths_agree_with_re2_fullmatch(pattern: str) -> None:
    regex = re2.compile(pattern)
    fast = re2_fullmatcher(regex)
    literal = regex_literal_prefix(pattern)
    t = table(route(match("safe_regex", pattern), "hit"))
    for s in REGEX_INPUTS:
        expected = regex.fullmatch(s) is not None
        assert fast(s) is expected, (pattern, s)
        if expected:
            assert s.startswith(literal)
        assert (t.select(req(s), 0) is not None) is expected, (pattern, s)
