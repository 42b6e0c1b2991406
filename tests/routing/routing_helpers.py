"""Small builders for route-table tests (kept terse so tables of cases stay readable)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pymesh.routing import RequestInfo, RouteTable
from pymesh.xds.resources.matchers import (
    FractionalPercent,
    HeaderMatcher,
    Int64Range,
    QueryParameterMatcher,
    StringMatcher,
    StringMatchKind,
)
from pymesh.xds.resources.route import (
    HeaderOps,
    PathMatchKind,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)


def sm(kind: StringMatchKind, value: str, ignore_case: bool = False) -> StringMatcher:
    return StringMatcher.make(kind, value, ignore_case)


def hdr(
    name: str,
    string: StringMatcher | None = None,
    *,
    rng: tuple[int, int] | None = None,
    present: bool | None = None,
    invert: bool = False,
    missing_as_empty: bool = False,
) -> HeaderMatcher:
    return HeaderMatcher(
        name,
        string_match=string,
        range_match=Int64Range(*rng) if rng else None,
        present_match=present,
        invert_match=invert,
        treat_missing_header_as_empty=missing_as_empty,
    )


def qp(
    name: str, string: StringMatcher | None = None, present: bool | None = None
) -> QueryParameterMatcher:
    return QueryParameterMatcher(name, string, present)


def match(
    kind: PathMatchKind = "prefix",
    path: str = "/",
    *,
    case_sensitive: bool = True,
    headers: Sequence[HeaderMatcher] = (),
    query: Sequence[QueryParameterMatcher] = (),
    fraction: tuple[int, int] | None = None,
    grpc: bool = False,
) -> RouteMatch:
    return RouteMatch(
        kind,
        path,
        case_sensitive=case_sensitive,
        headers=tuple(headers),
        query_parameters=tuple(query),
        runtime_fraction=FractionalPercent(*fraction) if fraction else None,
        grpc=grpc,
    )


def route(m: RouteMatch, cluster: str = "c", name: str = "", **action: object) -> Route:
    return Route(m, RouteAction(cluster=cluster, **action), name=name)  # type: ignore[arg-type]


def table(
    *routes: Route, domains: Sequence[str] = ("*",), header_ops: HeaderOps | None = None
) -> RouteTable:
    vh = VirtualHost("vh", tuple(domains), tuple(routes))
    rc = RouteConfiguration("rc", (vh,))
    if header_ops is not None:
        rc = RouteConfiguration("rc", (vh,), header_ops=header_ops)
    return RouteTable.compile(rc)


def req(
    path: str = "/",
    headers: Mapping[str, str] | None = None,
    *,
    authority: str = "svc",
    method: str = "GET",
    grpc: bool = False,
    source_ip: str = "",
    repeated: Mapping[str, Sequence[str]] | None = None,
) -> RequestInfo:
    return RequestInfo(method, authority, path, headers or {}, grpc, source_ip, repeated)
