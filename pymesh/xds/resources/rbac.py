"""envoy.extensions.filters.http.rbac.v3.RBAC (+ envoy.config.rbac.v3) → frozen dataclasses.

The policy tree is kept as parsed (gRFC A41 / Envoy's RBAC HTTP filter); the evaluator
(:mod:`pymesh.security._rbac`) compiles it once into closures. One node type per
``Permission.rule`` / ``Principal.identifier`` case; the and/or/not nodes are shared by
both trees (their evaluation is the same).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal, TypeAlias

from pymesh.xds.resources.matchers import HeaderMatcher, StringMatcher

RBAC_TYPE = "envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_PER_ROUTE_TYPE = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"

RbacAction = Literal["ALLOW", "DENY"]
IpNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AnyRule:
    """``any: true``: always matches."""


@dataclass(frozen=True, slots=True)
class AndRule:
    """``and_rules`` / ``and_ids``: every rule matches."""

    rules: tuple[RbacRule, ...]


@dataclass(frozen=True, slots=True)
class OrRule:
    """``or_rules`` / ``or_ids``: at least one rule matches."""

    rules: tuple[RbacRule, ...]


@dataclass(frozen=True, slots=True)
class NotRule:
    """``not_rule`` / ``not_id``: the rule does not match."""

    rule: RbacRule


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """``header``: a route HeaderMatcher. ``host`` is renamed ``:authority`` (A41)."""

    matcher: HeaderMatcher


@dataclass(frozen=True, slots=True)
class UrlPathRule:
    """``url_path``: the request path without query string (gRPC: the full method name)."""

    path: StringMatcher


@dataclass(frozen=True, slots=True)
class DestinationIpRule:
    """``destination_ip``: the connection's local address is in the CIDR range."""

    network: IpNetwork


@dataclass(frozen=True, slots=True)
class DestinationPortRule:
    """``destination_port``: the connection's local port."""

    port: int


@dataclass(frozen=True, slots=True)
class DestinationPortRangeRule:
    """``destination_port_range``: local port in ``[start, end)`` (Envoy's Int32Range)."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class RequestedServerNameRule:
    """``requested_server_name``: matched against the empty string (A41)."""

    name: StringMatcher


@dataclass(frozen=True, slots=True)
class MetadataRule:
    """``metadata``: Envoy metadata is always empty on pymesh, so this never matches
    unless ``invert`` (A41, as grpc-go)."""

    invert: bool


@dataclass(frozen=True, slots=True)
class AuthenticatedRule:
    """``authenticated``: the connection uses TLS and, when ``principal_name`` is set,
    the peer's URI SANs, else DNS SANs, else subject (RFC 2253), else ``""`` match it."""

    principal_name: StringMatcher | None


RemoteIpKind = Literal["source_ip", "direct_remote_ip", "remote_ip"]


@dataclass(frozen=True, slots=True)
class RemoteIpRule:
    """``source_ip`` / ``direct_remote_ip`` / ``remote_ip``: the peer address of the
    connection (A41: the three are the same without PROXY protocol and XFF trust)."""

    network: IpNetwork
    kind: RemoteIpKind = "direct_remote_ip"


RbacRule: TypeAlias = (
    AnyRule
    | AndRule
    | OrRule
    | NotRule
    | HeaderRule
    | UrlPathRule
    | DestinationIpRule
    | DestinationPortRule
    | DestinationPortRangeRule
    | RequestedServerNameRule
    | MetadataRule
    | AuthenticatedRule
    | RemoteIpRule
)


@dataclass(frozen=True, slots=True)
class RbacPolicy:
    """envoy.config.rbac.v3.Policy: matches when any permission and any principal match."""

    permissions: tuple[RbacRule, ...]
    principals: tuple[RbacRule, ...]


@dataclass(frozen=True, slots=True)
class RbacRules:
    """envoy.config.rbac.v3.RBAC with action ALLOW or DENY.

    ``policies`` are sorted by name: Envoy keeps them in an ordered map, so the first
    matching policy (the one reported) is the first by name.
    """

    action: RbacAction
    policies: tuple[tuple[str, RbacPolicy], ...] = ()


@dataclass(frozen=True, slots=True)
class RbacConfig:
    """The RBAC HTTP filter's config (or an RBACPerRoute override's ``rbac``).

    ``rules`` None: nothing is enforced: the rules are unset, or their action is LOG
    (A41: "as if RBAC was not configured"). As a per-route override, ``RbacConfig(None)``
    turns RBAC off for the route (Envoy: an RBACPerRoute without ``rbac``).
    """

    rules: RbacRules | None = None
