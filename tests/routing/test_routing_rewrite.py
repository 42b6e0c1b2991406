"""Path/host rewrites and redirect locations; vectors checked against Envoy 1.40."""

from __future__ import annotations

import pytest
import re2
from routing_helpers import match, req, table

from pymesh.routing import host_rewrite, redirect_location, rewrite_path
from pymesh.routing._rewrite import re2_global_replace
from pymesh.xds.resources.route import (
    RedirectAction,
    RegexRewrite,
    Route,
    RouteAction,
    RouteMatch,
)


def rr(pattern: str, substitution: str) -> RegexRewrite:
    return RegexRewrite(pattern, substitution, re2.compile(pattern))


@pytest.mark.parametrize(
    ("m", "action", "path", "expected"),
    [
        (
            match("prefix", "/api/"),
            RouteAction(cluster="c", prefix_rewrite="/"),
            "/api/v1?x=1",
            "/v1?x=1",
        ),
        (
            match("prefix", "/api"),
            RouteAction(cluster="c", prefix_rewrite="/v2"),
            "/api/x",
            "/v2/x",
        ),
        (
            match("prefix", "/ci", case_sensitive=False),
            RouteAction(cluster="c", prefix_rewrite="/lower"),
            "/CI/x?x=1",
            "/lower/x?x=1",
        ),
        (
            match("path", "/exact"),
            RouteAction(cluster="c", prefix_rewrite="/e2"),
            "/exact?x=1",
            "/e2?x=1",
        ),
        (
            match("safe_regex", "/re/([a-z]+)"),
            RouteAction(cluster="c", prefix_rewrite="/new"),
            "/re/abc?z=1",
            "/new?z=1",
        ),
        (
            match("path_separated_prefix", "/sep"),
            RouteAction(cluster="c", prefix_rewrite="/s"),
            "/sep/a",
            "/s/a",
        ),
        (
            match("prefix", "/grp"),
            RouteAction(cluster="c", regex_rewrite=rr("/grp/([a-z]+)/([0-9]+)", r"/\2/\1")),
            "/grp/abc/123/tail?x=1",
            "/123/abc/tail?x=1",
        ),
        (
            match("prefix", "/rx"),
            RouteAction(cluster="c", regex_rewrite=rr("x*", "-")),
            "/rxabxd?q=x",
            "-/-r-a-b-d-?q=x",
        ),
        (
            match("prefix", "/"),
            RouteAction(cluster="c", regex_rewrite=rr("nomatch", "z")),
            "/a?b",
            "/a?b",
        ),
        (match("prefix", "/"), RouteAction(cluster="c", prefix_rewrite=""), "/a?b", "/a?b"),
        (match("prefix", "/"), RouteAction(cluster="c"), "/a?b", "/a?b"),
    ],
)
def test_rewrite_path(m: RouteMatch, action: RouteAction, path: str, expected: str) -> None:
    d = table(Route(m, action)).select(req(path), 0)
    assert d is not None
    assert rewrite_path(d, path) == expected


def test_regex_rewrite_compiles_a_missing_regex() -> None:
    action = RouteAction(cluster="c", regex_rewrite=RegexRewrite("a", "b"))
    d = table(Route(match(), action)).select(req("/aa"), 0)
    assert d is not None and rewrite_path(d, "/aa?a") == "/bb?a"


@pytest.mark.parametrize(
    ("pattern", "sub", "text", "expected"),
    [
        ("x*", "-", "abxd", "-a-b-d-"),  # RE2: no empty match right after a match
        ("a", "b", "aaa", "bbb"),
        ("(a)(b)?", r"[\1\2]", "a", "[a]"),  # unmatched group -> ""
        ("b", r"\0\0", "abc", "abbc"),
        ("b", r"\\", "abc", "a\\c"),
        ("^/", "/p/", "/a/b", "/p/a/b"),
        ("$", "!", "ab", "ab!"),
        ("é", "e", "café", "cafe"),
    ],
)
def test_re2_global_replace(pattern: str, sub: str, text: str, expected: str) -> None:
    assert re2_global_replace(re2.compile(pattern), text, sub) == expected


def test_host_rewrite() -> None:
    t = table(
        Route(match("prefix", "/lit"), RouteAction(cluster="c", host_rewrite_literal="up.example")),
        Route(match("prefix", "/auto"), RouteAction(cluster="c", auto_host_rewrite=True)),
        Route(match("prefix", "/r"), RedirectAction(host_redirect="x")),
    )
    assert host_rewrite(t.select(req("/lit"), 0)) == "up.example"  # type: ignore[arg-type]
    assert host_rewrite(t.select(req("/auto"), 0)) is None  # type: ignore[arg-type]
    assert host_rewrite(t.select(req("/r"), 0)) is None  # type: ignore[arg-type]


REDIRECTS = [
    # (match, action, authority, path, scheme, location)
    (
        match("prefix", "/redir"),
        RedirectAction(scheme_redirect="https"),
        "foo:80",
        "/redir",
        "http",
        "https://foo/redir",
    ),
    (
        match("prefix", "/redir"),
        RedirectAction(scheme_redirect="https"),
        "foo:8080",
        "/redir",
        "http",
        "https://foo:8080/redir",
    ),
    (
        match("prefix", "/redir"),
        RedirectAction(scheme_redirect="http"),
        "foo:443",
        "/redir",
        "https",
        "http://foo/redir",
    ),
    (
        match("prefix", "/redir"),
        RedirectAction(scheme_redirect="https"),
        "foo:443",
        "/redir",
        "https",
        "https://foo:443/redir",
    ),
    (
        match("prefix", "/pr"),
        RedirectAction(port_redirect=8443),
        "foo:80",
        "/pr?a=1",
        "http",
        "http://foo:8443/pr?a=1",
    ),
    (
        match("prefix", "/pr"),
        RedirectAction(port_redirect=8443),
        "foo",
        "/pr",
        "http",
        "http://foo:8443/pr",
    ),
    (
        match("prefix", "/pq"),
        RedirectAction(path_redirect="/new?k=v", strip_query=True),
        "foo:80",
        "/pq?a=1",
        "http",
        "http://foo:80/new?k=v",
    ),
    (
        match("prefix", "/pn"),
        RedirectAction(path_redirect="/new"),
        "foo",
        "/pn?a=1",
        "http",
        "http://foo/new?a=1",
    ),
    (
        match("prefix", "/ps"),
        RedirectAction(path_redirect="/new", strip_query=True),
        "foo",
        "/ps?a=1",
        "http",
        "http://foo/new",
    ),
    (
        match("prefix", "/np"),
        RedirectAction(path_redirect="rel"),
        "foo",
        "/np",
        "http",
        "http://foo/rel",
    ),
    (
        match("prefix", "/rw/"),
        RedirectAction(prefix_rewrite="/moved/", host_redirect="h.example", port_redirect=9000),
        "foo:81",
        "/rw/a/b?c=1",
        "http",
        "http://h.example:9000/moved/a/b?c=1",
    ),
    (
        match("safe_regex", "/rg/(.*)"),
        RedirectAction(regex_rewrite=rr("^/rg/(.*)$", r"/x/\1/\0\\"), response_code=307),
        "foo",
        "/rg/abc?q=1",
        "http",
        "http://foo/x/abc//rg/abc\\?q=1",
    ),
    (
        match("prefix", "/hs"),
        RedirectAction(scheme_redirect="https", host_redirect="h.example"),
        "foo:80",
        "/hs",
        "http",
        "https://h.example/hs",
    ),
    (
        match("prefix", "/v6"),
        RedirectAction(scheme_redirect="https"),
        "[::1]:80",
        "/v6",
        "http",
        "https://[::1]/v6",
    ),
    (
        match("prefix", "/v6"),
        RedirectAction(scheme_redirect="https"),
        "[::1]:8080",
        "/v6",
        "http",
        "https://[::1]:8080/v6",
    ),
    (
        match("prefix", "/v6"),
        RedirectAction(scheme_redirect="https"),
        "[::1]",
        "/v6",
        "http",
        "https://[::1]/v6",
    ),
    (
        match("prefix", "/s"),
        RedirectAction(strip_query=True),
        "foo",
        "/s?x#y",
        "http",
        "http://foo/s",
    ),
]


@pytest.mark.parametrize(("m", "action", "authority", "path", "scheme", "location"), REDIRECTS)
def test_redirect_location(
    m: RouteMatch, action: RedirectAction, authority: str, path: str, scheme: str, location: str
) -> None:
    r = req(path, authority=authority)
    d = table(Route(m, action)).select(r, 0)
    assert d is not None
    assert redirect_location(d, r, scheme) == location


def test_redirect_location_requires_a_redirect() -> None:
    d = table(Route(match(), RouteAction(cluster="c"))).select(req(), 0)
    assert d is not None
    with pytest.raises(TypeError):
        redirect_location(d, req(), "http")
