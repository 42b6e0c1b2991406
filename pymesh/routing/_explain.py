"""Why a request goes where it goes: the data behind ``pymesh explain``."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from pymesh.routing._request import RequestInfo
from pymesh.routing._table import RouteTable, cluster_from_header
from pymesh.xds.resources.route import DirectResponseAction, RedirectAction, RouteAction


@dataclass(frozen=True)
class RouteCheck:
    """One route as evaluated, in order, up to the first match."""

    index: int
    name: str
    match: str  # e.g. "prefix '/api'"
    matched: bool
    reason: str | None  # the first failing condition, None when matched


@dataclass(frozen=True)
class ClusterChoice:
    name: str
    weight: int  # 0 for a single cluster
    chosen: bool


@dataclass(frozen=True)
class Explanation:
    """JSON-able with :func:`dataclasses.asdict`.

    ``domain_kind`` is ``exact``, ``suffix_wildcard``, ``prefix_wildcard`` or ``any``;
    ``action`` is ``route``, ``redirect`` or ``direct_response``; ``cluster`` is the chosen
    cluster (for ``cluster_header``, the header's value).
    """

    route_config: str
    authority: str
    path: str
    random_value: int
    virtual_host: str | None
    domain: str | None
    domain_kind: str | None
    virtual_host_reason: str
    routes: tuple[RouteCheck, ...]
    route_index: int | None
    route_name: str | None
    action: str | None
    cluster: str | None
    clusters: tuple[ClusterChoice, ...]
    weight_pick: str | None  # "random % total = n" for weighted clusters


def explain(table: RouteTable, req: RequestInfo, random_value: int) -> Explanation:
    """Walk ``table`` for ``req`` as :meth:`RouteTable.select` does, recording why."""
    rc_name = table.route_config.name
    found = table.find_virtual_host(req.authority)
    if found is None:
        return Explanation(
            rc_name,
            req.authority,
            req.path,
            random_value,
            None,
            None,
            None,
            f"no virtual host domain matches {req.authority!r} (the port is part of the host)",
            (),
            None,
            None,
            None,
            None,
            (),
            None,
        )
    cvh, kind, domain = found
    vh_reason = {
        "exact": f"domain {domain!r} equals the authority",
        "suffix_wildcard": f"suffix wildcard {domain!r} is the longest matching one",
        "prefix_wildcard": f"prefix wildcard {domain!r} is the longest matching one",
        "any": "no exact or wildcard domain matched; '*' catches all",
    }[kind]
    checks: list[RouteCheck] = []
    matched = None
    for i, cr in enumerate(cvh.all_routes):
        route = cvh.virtual_host.routes[i]
        if cr is None:
            checks.append(
                RouteCheck(i, route.name, "-", False, "non_forwarding_action (server-side only)")
            )
            continue
        reason = cr.match.mismatch_reason(req, random_value)
        checks.append(RouteCheck(i, route.name, cr.match.describe(), reason is None, reason))
        if reason is None:
            matched = cr
            break
    action: str | None = None
    cluster: str | None = None
    clusters: tuple[ClusterChoice, ...] = ()
    weight_pick: str | None = None
    if matched is not None:
        act = matched.action
        if isinstance(act, RedirectAction):
            action = "redirect"
        elif isinstance(act, DirectResponseAction):
            action = "direct_response"
        else:
            assert isinstance(act, RouteAction)
            action = "route"
            if matched.weights:
                pick = random_value % matched.total_weight
                chosen = bisect_right(matched.cumulative, pick)
                clusters = tuple(
                    ClusterChoice(cw.name, cw.weight, j == chosen)
                    for j, cw in enumerate(matched.weights)
                )
                cluster = matched.weights[chosen].name
                weight_pick = f"{random_value} % {matched.total_weight} = {pick}"
            elif matched.cluster_header is not None:
                cluster = cluster_from_header(req, matched.cluster_header)
            else:
                cluster = matched.cluster
                clusters = (ClusterChoice(cluster or "", 0, True),)
    return Explanation(
        rc_name,
        req.authority,
        req.path,
        random_value,
        cvh.virtual_host.name,
        domain,
        kind,
        vh_reason,
        tuple(checks),
        None if matched is None else matched.index,
        None if matched is None else matched.route.name,
        action,
        cluster,
        clusters,
        weight_pick,
    )
