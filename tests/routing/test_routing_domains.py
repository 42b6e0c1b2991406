"""Virtual host precedence, checked against Envoy 1.40 by hand (see _domains.py)."""

from __future__ import annotations

import pytest
from routing_helpers import req

from pymesh.errors import ResourceInvalid
from pymesh.routing import RouteTable
from pymesh.routing._domains import CACHE_SIZE, DomainIndex
from pymesh.xds.resources.route import (
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)

VHOSTS = [
    ("exact", ("a.foo.com", "reviews", "Reviews:9080")),
    ("suffix-short", ("*.foo.com",)),
    ("suffix-long", ("*-bar.foo.com",)),
    ("prefix", ("a.foo.*", "api-*")),
    ("prefix-long", ("a.foo.com.*",)),
    ("default", ("*",)),
]


def build(vhosts: list[tuple[str, tuple[str, ...]]] = VHOSTS) -> RouteTable:
    return RouteTable.compile(
        RouteConfiguration(
            "rc",
            tuple(
                VirtualHost(
                    name, domains, (Route(RouteMatch("prefix", "/"), RouteAction(cluster=name)),)
                )
                for name, domains in vhosts
            ),
        )
    )


@pytest.mark.parametrize(
    ("authority", "vhost", "kind"),
    [
        ("a.foo.com", "exact", "exact"),
        ("A.FOO.com", "exact", "exact"),  # case-insensitive
        ("reviews", "exact", "exact"),
        ("reviews:9080", "exact", "exact"),  # the domain was listed with its port
        ("REVIEWS:9080", "exact", "exact"),
        ("reviews:9081", "default", "any"),  # the port is part of the host
        ("b.foo.com", "suffix-short", "suffix_wildcard"),
        ("x-bar.foo.com", "suffix-long", "suffix_wildcard"),  # longest suffix first
        ("-bar.foo.com", "suffix-short", "suffix_wildcard"),  # '*' never matches ""
        (".foo.com", "default", "any"),
        ("a.foo.com:80", "prefix", "prefix_wildcard"),
        ("a.foo.com.x", "prefix-long", "prefix_wildcard"),  # longest prefix first
        ("a.foo.", "default", "any"),  # '*' never matches ""
        ("api-x", "prefix", "prefix_wildcard"),
        ("x.foo.com.evil", "default", "any"),
        ("", "default", "any"),
        ("b.foo.com:443", "default", "any"),  # suffix wildcards see the port too
    ],
)
def test_virtual_host_precedence(authority: str, vhost: str, kind: str) -> None:
    t = build()
    found = t.find_virtual_host(authority)
    assert found is not None
    assert (found[0].virtual_host.name, found[1]) == (vhost, kind)
    d = t.select(req("/", authority=authority), 0)
    assert d is not None and d.cluster == vhost


def test_suffix_beats_prefix_and_exact_beats_all() -> None:
    t = build([("suffix", ("*.com",)), ("prefix", ("foo.*",)), ("exact", ("foo.com",))])
    assert t.select(req(authority="foo.com"), 0).cluster == "exact"  # type: ignore[union-attr]
    assert t.select(req(authority="foo.bar.com"), 0).cluster == "suffix"  # type: ignore[union-attr]
    assert t.select(req(authority="foo.org"), 0).cluster == "prefix"  # type: ignore[union-attr]


def test_no_virtual_host_is_none() -> None:
    t = build([("only", ("reviews",))])
    assert t.select(req(authority="ratings"), 0) is None
    assert t.select(req(authority="reviews:9080"), 0) is None


def test_only_default_matches_anything() -> None:
    t = build([("d", ("*",))])
    assert t.select(req(authority=""), 0).cluster == "d"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "vhosts",
    [
        [("a", ("x.com",)), ("b", ("X.com",))],
        [("a", ("*.x.com",)), ("b", ("*.x.com",))],
        [("a", ("x.*",)), ("b", ("x.*",))],
        [("a", ("*",)), ("b", ("*",))],
    ],
)
def test_duplicate_domains_are_rejected(vhosts: list[tuple[str, tuple[str, ...]]]) -> None:
    with pytest.raises(ResourceInvalid) as info:
        build(vhosts)
    assert info.value.resource_name == "rc"


def test_cache_is_bounded_and_consistent() -> None:
    index: DomainIndex[str] = DomainIndex("rc", [(("*.foo.com",), "w"), (("*",), "d")])
    for i in range(CACHE_SIZE * 2 + 5):
        assert index.find(f"h{i}.foo.com") == ("w", "suffix_wildcard", "*.foo.com")
        assert len(index._cache) <= CACHE_SIZE
    assert index.find("other") == ("d", "any", "*")
    assert index.find("other") == ("d", "any", "*")  # served from the cache
