"""The compiled route table: virtual host and route selection with Envoy's semantics.

``RouteTable.compile(route_config)`` precomputes everything; ``table.select(request,
random_value)`` is lock-free and cheap. The helpers below turn a :class:`RouteDecision`
into what the transports send: rewritten path and host, header mutations, redirect
location and the hash for ring hash / maglev.
"""

from __future__ import annotations

from pymesh.routing._explain import ClusterChoice, Explanation, RouteCheck, explain
from pymesh.routing._hash import compute_hash
from pymesh.routing._headers import HeaderMutation
from pymesh.routing._request import RequestInfo
from pymesh.routing._rewrite import host_rewrite, redirect_location, rewrite_path
from pymesh.routing._table import (
    RouteDecision,
    RouteTable,
    request_header_ops,
    response_header_ops,
)

__all__ = [
    "ClusterChoice",
    "Explanation",
    "HeaderMutation",
    "RequestInfo",
    "RouteCheck",
    "RouteDecision",
    "RouteTable",
    "compute_hash",
    "explain",
    "host_rewrite",
    "redirect_location",
    "request_header_ops",
    "response_header_ops",
    "rewrite_path",
]
