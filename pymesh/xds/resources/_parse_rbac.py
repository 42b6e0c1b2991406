"""envoy.extensions.filters.http.rbac.v3.RBAC / RBACPerRoute → RbacConfig.

Validation follows gRFC A41 and grpc-go (internal/xds/httpfilter/rbac,
internal/xds/rbac), plus Envoy's proto constraints:

- ``Policy.condition`` / ``checked_condition`` (CEL) → NACK (A41);
- a header matcher on ``:scheme`` or a ``grpc-`` name → NACK (A41), anywhere in the
  tree; ``host`` is matched as ``:authority`` (A41: no difference between the two);
- ``Permission.matcher`` / ``uri_template`` / ``sourced_metadata`` and
  ``Principal.filter_state`` / ``custom`` / ``sourced_metadata`` → NACK (grpc-go
  rejects every case it does not implement);
- an empty ``permissions`` / ``principals`` list, an empty and/or set, an unset rule or
  identifier → NACK (Envoy's ``min_items`` / ``required`` rules);
- ``rules`` and ``matcher`` both set, or ``matcher`` alone → NACK (Envoy refuses both;
  pymesh does not implement the matcher API, and ignoring it would allow everything);
- ``RBAC.action`` LOG: the filter is a no-op (A41); shadow rules are not evaluated (A41,
  a Warn);
- an audit logger that is not ``is_optional`` → NACK (gRFC A59: pymesh has none).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as config_rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

from pymesh.xds.resources._common import Ctx, join, unpack
from pymesh.xds.resources._parse_matchers import header_matcher, string_matcher
from pymesh.xds.resources.rbac import (
    AndRule,
    AnyRule,
    AuthenticatedRule,
    DestinationIpRule,
    DestinationPortRangeRule,
    DestinationPortRule,
    HeaderRule,
    IpNetwork,
    MetadataRule,
    NotRule,
    OrRule,
    RbacConfig,
    RbacPolicy,
    RbacRule,
    RbacRules,
    RemoteIpRule,
    RequestedServerNameRule,
    UrlPathRule,
)

_ACTIONS = {
    config_rbac_pb2.RBAC.ALLOW: "ALLOW",
    config_rbac_pb2.RBAC.DENY: "DENY",
}
_METADATA_KEY = "envoy.type.matcher.v3.MetadataMatcher@rbac"


def _header(ctx: Ctx, msg: Any, path: str) -> HeaderRule:
    hm = header_matcher(ctx, msg, path)
    name = hm.name  # lower-cased by header_matcher
    if name == ":scheme":
        ctx.fail(join(path, "name"), "RBAC header matchers may not match :scheme (gRFC A41)")
    if name.startswith("grpc-"):
        ctx.fail(
            join(path, "name"),
            f"RBAC header matchers may not match grpc- headers ({name!r}, gRFC A41)",
        )
    if name == "host":
        hm = dataclasses.replace(hm, name=":authority")
    return HeaderRule(hm)


def _cidr(ctx: Ctx, msg: Any, path: str) -> IpNetwork:
    prefix_len = msg.prefix_len.value if msg.HasField("prefix_len") else 0
    try:
        address = ipaddress.ip_address(msg.address_prefix)
    except ValueError:
        ctx.fail(
            join(path, "address_prefix"),
            f"{msg.address_prefix!r} is not an IPv4 or IPv6 address",
        )
    if prefix_len > address.max_prefixlen:
        ctx.fail(
            join(path, "prefix_len"),
            f"prefix_len {prefix_len} exceeds {address.max_prefixlen} for {address}",
        )
    ctx.check(msg, path)
    # strict=False: host bits are masked off, as Envoy's CidrRange does.
    return ipaddress.ip_network(f"{address}/{prefix_len}", strict=False)


def _path_matcher(ctx: Ctx, msg: Any, path: str) -> UrlPathRule:
    if msg.WhichOneof("rule") != "path":
        ctx.fail(join(path, "path"), "url_path needs path (a StringMatcher)")
    ctx.check(msg, path)
    return UrlPathRule(string_matcher(ctx, msg.path, join(path, "path")))


def _metadata(ctx: Ctx, msg: Any, path: str) -> MetadataRule:
    ctx.check(msg, path, _METADATA_KEY)
    return MetadataRule(bool(msg.invert))


def _port(ctx: Ctx, port: int, path: str) -> int:
    if port > 65535:
        ctx.fail(path, f"port {port} is out of range (0..65535)")
    return int(port)


def _set(
    ctx: Ctx, msg: Any, which: str, items: str, parse: Callable[[Ctx, Any, str], RbacRule], p: str
) -> RbacRule:
    """and_rules/or_rules (``items`` "rules") or and_ids/or_ids (``items`` "ids")."""
    s = getattr(msg, which)
    members = getattr(s, items)
    ctx.check(s, p)
    if not members:
        ctx.fail(join(p, items), f"{which} needs at least one {items[:-1]}")
    parsed = tuple(parse(ctx, r, f"{p}.{items}[{i}]") for i, r in enumerate(members))
    return AndRule(parsed) if which.startswith("and_") else OrRule(parsed)


def _any(msg: Any, ctx: Ctx, p: str) -> AnyRule:
    if not msg.any:
        ctx.fail(p, "any must be true")
    return AnyRule()


def permission(ctx: Ctx, msg: Any, path: str) -> RbacRule:
    """envoy.config.rbac.v3.Permission → one rule node."""
    which = msg.WhichOneof("rule")
    p = join(path, which) if which else path
    ctx.check(msg, path)  # NACKs matcher / uri_template / sourced_metadata
    if which in ("and_rules", "or_rules"):
        return _set(ctx, msg, which, "rules", permission, p)
    if which == "any":
        return _any(msg, ctx, p)
    if which == "header":
        return _header(ctx, msg.header, p)
    if which == "url_path":
        return _path_matcher(ctx, msg.url_path, p)
    if which == "destination_ip":
        return DestinationIpRule(_cidr(ctx, msg.destination_ip, p))
    if which == "destination_port":
        return DestinationPortRule(_port(ctx, msg.destination_port, p))
    if which == "destination_port_range":
        rng = msg.destination_port_range
        ctx.check(rng, p)
        return DestinationPortRangeRule(int(rng.start), int(rng.end))
    if which == "metadata":
        return _metadata(ctx, msg.metadata, p)
    if which == "not_rule":
        return NotRule(permission(ctx, msg.not_rule, p))
    if which == "requested_server_name":
        return RequestedServerNameRule(string_matcher(ctx, msg.requested_server_name, p))
    if which is None:
        ctx.fail(path, "a permission needs a rule (e.g. any: true)")
    ctx.fail(p, f"permission rule {which} is not supported")


def principal(ctx: Ctx, msg: Any, path: str) -> RbacRule:
    """envoy.config.rbac.v3.Principal → one rule node."""
    which = msg.WhichOneof("identifier")
    p = join(path, which) if which else path
    ctx.check(msg, path)  # NACKs filter_state / custom / sourced_metadata
    if which in ("and_ids", "or_ids"):
        return _set(ctx, msg, which, "ids", principal, p)
    if which == "any":
        return _any(msg, ctx, p)
    if which == "authenticated":
        auth = msg.authenticated
        ctx.check(auth, p)
        name = None
        if auth.HasField("principal_name"):
            name = string_matcher(ctx, auth.principal_name, join(p, "principal_name"))
        return AuthenticatedRule(name)
    if which in ("source_ip", "direct_remote_ip", "remote_ip"):
        return RemoteIpRule(_cidr(ctx, getattr(msg, which), p), which)
    if which == "header":
        return _header(ctx, msg.header, p)
    if which == "url_path":
        return _path_matcher(ctx, msg.url_path, p)
    if which == "metadata":
        return _metadata(ctx, msg.metadata, p)
    if which == "not_id":
        return NotRule(principal(ctx, msg.not_id, p))
    if which is None:
        ctx.fail(path, "a principal needs an identifier (e.g. any: true)")
    ctx.fail(p, f"principal identifier {which} is not supported")


def policy(ctx: Ctx, msg: Any, path: str) -> RbacPolicy:
    """envoy.config.rbac.v3.Policy (CEL conditions → NACK through the field table)."""
    ctx.check(msg, path)
    if not msg.permissions:
        ctx.fail(join(path, "permissions"), "at least one permission is required (any: true)")
    if not msg.principals:
        ctx.fail(join(path, "principals"), "at least one principal is required (any: true)")
    return RbacPolicy(
        permissions=tuple(
            permission(ctx, m, join(path, f"permissions[{i}]"))
            for i, m in enumerate(msg.permissions)
        ),
        principals=tuple(
            principal(ctx, m, join(path, f"principals[{i}]")) for i, m in enumerate(msg.principals)
        ),
    )


def _audit(ctx: Ctx, msg: Any, path: str) -> None:
    ctx.check(msg, path)
    for i, lc in enumerate(msg.logger_configs):
        p = join(path, f"logger_configs[{i}]")
        ctx.check(lc, p)
        name = lc.audit_logger.name or lc.audit_logger.typed_config.type_url
        if not lc.is_optional:
            ctx.fail(
                join(p, "audit_logger"),
                f"audit logger {name!r} is not supported; set is_optional: true (gRFC A59)",
            )
        ctx.unsupported_field(join(p, "audit_logger"), "the optional audit logger is skipped")


def rules(ctx: Ctx, msg: Any, path: str) -> RbacRules | None:
    """envoy.config.rbac.v3.RBAC → RbacRules, or None for action LOG (A41: no-op)."""
    ctx.check(msg, path)
    if msg.HasField("audit_logging_options"):
        _audit(ctx, msg.audit_logging_options, join(path, "audit_logging_options"))
    # Policies are parsed (and validated) even for LOG: a bad policy is still a NACK.
    policies = tuple(
        (name, policy(ctx, msg.policies[name], f'{join(path, "policies")}["{name}"]'))
        for name in sorted(msg.policies)
    )
    action = _ACTIONS.get(msg.action)
    if action is None:
        return None  # LOG; other values were rejected by ctx.check
    return RbacRules(action, policies)  # type: ignore[arg-type]


def rbac_config(ctx: Ctx, msg: Any, path: str) -> RbacConfig:
    """envoy.extensions.filters.http.rbac.v3.RBAC → RbacConfig."""
    if msg.HasField("rules") and msg.HasField("matcher"):
        ctx.fail(join(path, "matcher"), "rules and matcher must not both be set")
    ctx.check(msg, path)  # matcher alone → NACK; shadow_* → Warn
    if not msg.HasField("rules"):
        return RbacConfig(None)
    return RbacConfig(rules(ctx, msg.rules, join(path, "rules")))


def rbac_from_any(ctx: Ctx, any_msg: Any, path: str) -> RbacConfig:
    """The RBAC filter's typed_config."""
    return rbac_config(ctx, unpack(ctx, any_msg, rbac_pb2.RBAC, path), path)


def rbac_per_route_from_any(ctx: Ctx, any_msg: Any, path: str) -> RbacConfig:
    """An RBACPerRoute override: its ``rbac`` (unset: RBAC is off for the route)."""
    msg = unpack(ctx, any_msg, rbac_pb2.RBACPerRoute, path)
    ctx.check(msg, path)
    if not msg.HasField("rbac"):
        return RbacConfig(None)
    return rbac_config(ctx, msg.rbac, join(path, "rbac"))
