"""RBAC filter parser (gRFC A41): the policy tree, NACKs with field paths, per-route overrides."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from _resbuild import hcm, invalid, listener, pack, route_config
from envoy.config.rbac.v3 import rbac_pb2 as config_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

from pymesh.xds.resources.listener import parse_listener
from pymesh.xds.resources.rbac import (
    RBAC_TYPE,
    AndRule,
    AnyRule,
    AuthenticatedRule,
    DestinationIpRule,
    DestinationPortRangeRule,
    DestinationPortRule,
    HeaderRule,
    MetadataRule,
    NotRule,
    OrRule,
    RbacConfig,
    RbacPolicy,
    RbacRules,
    RemoteIpRule,
    RequestedServerNameRule,
    UrlPathRule,
)
from pymesh.xds.resources.route import parse_route_configuration

FILTERS = "api_listener.api_listener.http_filters"
CFG = f"{FILTERS}[0].typed_config"
RULES = f"{CFG}.rules"


def with_rbac(r: Any, name: str = "rbac") -> Any:
    """A listener whose HCM runs RBAC ``r`` before the router."""
    h = hcm()
    f = h.http_filters.add(name=name)
    f.typed_config.Pack(r)
    # The router must stay last.
    h.http_filters.MergeFrom([h.http_filters[0]])
    del h.http_filters[0]
    return listener(h)


def rbac(action: int = config_pb2.RBAC.ALLOW, **policies: Any) -> Any:
    r = rbac_pb2.RBAC()
    r.rules.action = action
    for name, p in policies.items():
        r.rules.policies[name].CopyFrom(p)
    return r


def nack_policy(perm: Any = None, princ: Any = None, *, field: str, reason: str = "") -> None:
    """A listener whose one RBAC policy is ``policy(perm, princ)`` is NACKed at ``field``
    (below the policy) with ``reason`` in the message."""
    invalid(
        parse_listener,
        with_rbac(rbac(p=policy(perm, princ))),
        f'{RULES}.policies["p"].{field}',
        reason=reason,
    )


def policy(perm: Any = None, princ: Any = None) -> Any:
    p = config_pb2.Policy()
    if perm is None:
        p.permissions.add(any=True)
    else:
        p.permissions.append(perm)
    if princ is None:
        p.principals.add(any=True)
    else:
        p.principals.append(princ)
    return p


def parse_rbac(r: Any) -> RbacConfig:
    out = parse_listener(with_rbac(r))
    f = out.http_filters[0]
    assert f.type_name == RBAC_TYPE and f.name == "rbac"
    assert isinstance(f.config, RbacConfig)
    return f.config


def test_full_policy_tree() -> None:
    perm = config_pb2.Permission()
    a = perm.and_rules.rules
    a.add().header.name = ":method"
    a[0].header.string_match.exact = "POST"
    a.add().url_path.path.prefix = "/orders"
    a.add().destination_ip.address_prefix = "10.1.2.3"
    a[2].destination_ip.prefix_len.value = 16
    a.add().destination_port = 8443
    r = a.add().destination_port_range
    r.start, r.end = 8000, 9000
    a.add().not_rule.metadata.invert = False
    a.add().requested_server_name.exact = ""
    a.add().or_rules.rules.add(any=True)
    princ = config_pb2.Principal()
    ids = princ.or_ids.ids
    ids.add().authenticated.principal_name.exact = "spiffe://td/ns/a/sa/front"
    ids.add().authenticated.SetInParent()
    ids.add().source_ip.address_prefix = "::1"
    ids[2].source_ip.prefix_len.value = 128
    ids.add().not_id.remote_ip.address_prefix = "192.168.0.0"
    ids.add().and_ids.ids.add().direct_remote_ip.address_prefix = "0.0.0.0"
    ids.add().header.name = "Host"
    ids[5].header.exact_match = "orders"
    ids.add().url_path.path.exact = "/x"
    cfg = parse_rbac(rbac(b=policy(perm, princ), a=policy()))
    assert cfg.rules is not None and cfg.rules.action == "ALLOW"
    assert [n for n, _ in cfg.rules.policies] == ["a", "b"]  # name order (Envoy's map)
    assert cfg.rules.policies[0][1] == RbacPolicy((AnyRule(),), (AnyRule(),))
    b = cfg.rules.policies[1][1]
    (p,) = b.permissions
    assert isinstance(p, AndRule)
    kinds = [type(x) for x in p.rules]
    assert kinds == [
        HeaderRule,
        UrlPathRule,
        DestinationIpRule,
        DestinationPortRule,
        DestinationPortRangeRule,
        NotRule,
        RequestedServerNameRule,
        OrRule,
    ]
    ip_rule = p.rules[2]
    assert isinstance(ip_rule, DestinationIpRule)
    assert ip_rule.network == ipaddress.ip_network("10.1.0.0/16")  # host bits masked
    assert p.rules[5] == NotRule(MetadataRule(False))
    assert p.rules[4] == DestinationPortRangeRule(8000, 9000)
    (q,) = b.principals
    assert isinstance(q, OrRule)
    auth = q.rules[0]
    assert isinstance(auth, AuthenticatedRule) and auth.principal_name is not None
    assert auth.principal_name.value == "spiffe://td/ns/a/sa/front"
    assert q.rules[1] == AuthenticatedRule(None)
    assert q.rules[2] == RemoteIpRule(ipaddress.ip_network("::1/128"), "source_ip")
    assert q.rules[3] == NotRule(RemoteIpRule(ipaddress.ip_network("0.0.0.0/0"), "remote_ip"))
    host = q.rules[5]
    assert isinstance(host, HeaderRule) and host.matcher.name == ":authority"  # A41


def test_deny_action_and_no_rules_and_log() -> None:
    assert parse_rbac(rbac(config_pb2.RBAC.DENY, p=policy())).rules == RbacRules(
        "DENY", (("p", RbacPolicy((AnyRule(),), (AnyRule(),))),)
    )
    assert parse_rbac(rbac_pb2.RBAC()) == RbacConfig(None)  # no rules: no enforcement
    assert parse_rbac(rbac(config_pb2.RBAC.LOG, p=policy())) == RbacConfig(None)  # A41


def test_log_action_still_validates_policies() -> None:
    p = policy()
    p.condition.const_expr.bool_value = True
    invalid(
        parse_listener,
        with_rbac(rbac(config_pb2.RBAC.LOG, p=p)),
        f'{RULES}.policies["p"].condition',
        reason="CEL",
    )


@pytest.mark.parametrize("field", ["condition", "checked_condition"])
def test_cel_conditions_nack(field: str) -> None:
    p = policy()
    if field == "condition":
        p.condition.const_expr.bool_value = True
    else:
        p.checked_condition.expr.const_expr.bool_value = True
    invalid(parse_listener, with_rbac(rbac(p1=p)), f'{RULES}.policies["p1"].{field}', reason="CEL")


@pytest.mark.parametrize("name", [":scheme", "grpc-timeout", "GRPC-Encoding"])
def test_forbidden_header_names_nack_even_nested(name: str) -> None:
    perm = config_pb2.Permission()
    perm.not_rule.or_rules.rules.add().header.name = name
    perm.not_rule.or_rules.rules[0].header.present_match = True
    nack_policy(perm, field="permissions[0].not_rule.or_rules.rules[0].header.name", reason="A41")
    princ = config_pb2.Principal()
    princ.and_ids.ids.add().header.name = name
    nack_policy(princ=princ, field="principals[0].and_ids.ids[0].header.name", reason="A41")


def test_unsupported_permission_and_principal_cases_nack() -> None:
    perm = config_pb2.Permission()
    perm.matcher.name = "m"
    nack_policy(perm, field="permissions[0].matcher", reason="not supported")
    perm = config_pb2.Permission()
    perm.sourced_metadata.metadata_matcher.filter = "f"
    nack_policy(perm, field="permissions[0].sourced_metadata")
    princ = config_pb2.Principal()
    princ.filter_state.key = "k"
    nack_policy(princ=princ, field="principals[0].filter_state")
    princ = config_pb2.Principal()
    princ.custom.name = "c"
    nack_policy(princ=princ, field="principals[0].custom")


def test_empty_lists_and_unset_rules_nack() -> None:
    p = config_pb2.Policy()
    p.principals.add(any=True)
    invalid(
        parse_listener,
        with_rbac(rbac(p=p)),
        f'{RULES}.policies["p"].permissions',
        reason="at least one",
    )
    p = config_pb2.Policy()
    p.permissions.add(any=True)
    invalid(parse_listener, with_rbac(rbac(p=p)), f'{RULES}.policies["p"].principals')
    perm = config_pb2.Permission()
    perm.and_rules.SetInParent()
    nack_policy(perm, field="permissions[0].and_rules.rules")
    nack_policy(config_pb2.Permission(), field="permissions[0]", reason="needs a rule")
    nack_policy(princ=config_pb2.Principal(), field="principals[0]", reason="needs an identifier")


def test_bad_cidr_and_port_nack() -> None:
    princ = config_pb2.Principal()
    princ.direct_remote_ip.address_prefix = "10.0.0"
    nack_policy(princ=princ, field="principals[0].direct_remote_ip.address_prefix")
    princ = config_pb2.Principal()
    princ.remote_ip.address_prefix = "10.0.0.0"
    princ.remote_ip.prefix_len.value = 33
    nack_policy(princ=princ, field="principals[0].remote_ip.prefix_len")
    perm = config_pb2.Permission(destination_port=70000)
    nack_policy(perm, field="permissions[0].destination_port")


def test_bad_regex_in_principal_name_nacks() -> None:
    princ = config_pb2.Principal()
    princ.authenticated.principal_name.safe_regex.regex = "(a"
    nack_policy(
        princ=princ,
        field="principals[0].authenticated.principal_name.safe_regex.regex",
        reason="RE2",
    )


def test_matcher_nacks_alone_and_with_rules() -> None:
    r = rbac(p=policy())
    r.matcher.on_no_match.action.name = "x"
    invalid(parse_listener, with_rbac(r), f"{CFG}.matcher", reason="both")
    r = rbac_pb2.RBAC()
    r.matcher.on_no_match.action.name = "x"
    invalid(parse_listener, with_rbac(r), f"{CFG}.matcher", reason="matcher")


def test_shadow_rules_warn_and_are_ignored() -> None:
    r = rbac(config_pb2.RBAC.DENY, p=policy())
    r.shadow_rules.action = config_pb2.RBAC.ALLOW
    out = parse_listener(with_rbac(r))
    assert f"{CFG}.shadow_rules" in out.unsupported
    cfg = out.http_filters[0].config
    assert isinstance(cfg, RbacConfig) and cfg.rules is not None and cfg.rules.action == "DENY"


def test_audit_loggers_nack_unless_optional() -> None:
    r = rbac(p=policy())
    lc = r.rules.audit_logging_options.logger_configs.add()
    lc.audit_logger.name = "stdout_logger"
    invalid(
        parse_listener,
        with_rbac(r),
        f"{RULES}.audit_logging_options.logger_configs[0].audit_logger",
        reason="is_optional",
    )
    lc.is_optional = True
    out = parse_listener(with_rbac(r))
    assert f"{RULES}.audit_logging_options.logger_configs[0].audit_logger" in out.unsupported


def test_xff_trusted_hops_nacks_the_listener() -> None:
    h = hcm()
    h.xff_num_trusted_hops = 1
    invalid(
        parse_listener,
        listener(h),
        "api_listener.api_listener.xff_num_trusted_hops",
        reason="remote_ip",
    )


def test_per_route_override_parsed() -> None:
    rc = route_config()
    route = rc.virtual_hosts[0].routes[0]
    per = rbac_pb2.RBACPerRoute()
    per.rbac.CopyFrom(rbac(config_pb2.RBAC.DENY, everyone=policy()))
    route.typed_per_filter_config["rbac"].CopyFrom(pack(per))
    rc.virtual_hosts[0].typed_per_filter_config["rbac"].CopyFrom(
        pack(rbac_pb2.RBACPerRoute())  # no rbac: RBAC is off on the virtual host
    )
    fc = route_components_pb2.FilterConfig()
    fc.config.Pack(per)
    rc.virtual_hosts[0].typed_per_filter_config["rbac2"].CopyFrom(pack(fc))
    out = parse_route_configuration(rc)
    vh = out.virtual_hosts[0]
    cfg = vh.routes[0].typed_per_filter_config["rbac"]
    assert isinstance(cfg, RbacConfig) and cfg.rules is not None
    assert cfg.rules.action == "DENY" and cfg.rules.policies[0][0] == "everyone"
    assert vh.typed_per_filter_config["rbac"] == RbacConfig(None)
    assert vh.typed_per_filter_config["rbac2"] == cfg


def test_per_route_override_nack_has_path() -> None:
    rc = route_config()
    per = rbac_pb2.RBACPerRoute()
    p = policy()
    p.condition.const_expr.bool_value = True
    per.rbac.CopyFrom(rbac(x=p))
    rc.virtual_hosts[0].routes[0].typed_per_filter_config["rbac"].CopyFrom(pack(per))
    invalid(
        parse_route_configuration,
        rc,
        'virtual_hosts[0].routes[0].typed_per_filter_config["rbac"].rbac.rules'
        '.policies["x"].condition',
    )
