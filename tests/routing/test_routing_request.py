from __future__ import annotations

import pytest
from routing_helpers import req

from pymesh.routing._request import (
    ascii_lower,
    parse_query_first_values,
    strip_query_and_fragment,
)


@pytest.mark.parametrize(
    ("path", "bare"),
    [
        ("/a/b", "/a/b"),
        ("/a?x=1", "/a"),
        ("/a#frag", "/a"),
        ("/a?x=1#f", "/a"),
        ("/a#f?x", "/a"),
        ("?x", ""),
        ("", ""),
    ],
)
def test_strip_query_and_fragment(path: str, bare: str) -> None:
    assert strip_query_and_fragment(path) == bare


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/a", {}),
        ("/a?", {}),
        ("/a?x=1", {"x": "1"}),
        ("/a?x=1&x=2", {"x": "1"}),  # Envoy: the first value wins
        ("/a?x", {"x": ""}),
        ("/a?x=&y=2", {"x": "", "y": "2"}),
        ("/a?x=a%20b", {"x": "a%20b"}),  # raw, not decoded
        ("/a?x=1=2", {"x": "1=2"}),
        ("/a?x=1#y=2", {"x": "1"}),
        ("/a?&&x=1", {"x": "1"}),
    ],
)
def test_parse_query(path: str, query: dict[str, str]) -> None:
    assert parse_query_first_values(path) == query


def test_ascii_lower_leaves_non_ascii_letters() -> None:
    assert ascii_lower("AbC") == "abc"
    assert ascii_lower("ÄB") == "Äb"


def test_request_lazy_fields_and_pseudo_headers() -> None:
    r = req("/p?q=1", {"x": "y"}, authority="Host:80", method="POST")
    assert r.bare_path == "/p"
    assert r.query == {"q": "1"}
    assert r.query is r.query  # parsed once
    assert r.header(":path") == "/p?q=1"
    assert r.header(":authority") == "Host:80"
    assert r.header(":method") == "POST"
    assert r.header("x") == "y"
    assert r.header("missing") is None
    assert "Host:80" in repr(r)
