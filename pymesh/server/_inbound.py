"""The mesh file's ``inbound`` section: the server side of a service (gRFC A36, A41).

::

    services:
      reviews:
        port: 50051
        protocol: grpc
        endpoints: ["127.0.0.1:50051"]
        inbound:
          mtls: STRICT               # STRICT (default) | DISABLE, Istio PeerAuthentication
          # listen: ["0.0.0.0:50051"]   default: the service's endpoint addresses
          # listener_name_template: "xds.istio.io/grpc/lds/inbound/%s"
          # certificate_provider: default
          authorization:            # Istio AuthorizationPolicy vocabulary
            - name: frontend-reads
              action: ALLOW         # ALLOW (default) | DENY
              rules:
                - from: [{source: {principals: ["cluster.local/ns/default/sa/frontend"]}}]
                  to: [{operation: {methods: ["POST"], paths: ["/reviews.Reviews/*"]}}]

Each listening address becomes one server Listener named by the template (``%s`` →
``IP:PORT``), as istiod's proxyless inbound listeners: one filter chain whose
HttpConnectionManager has an inline route configuration (``*`` → non_forwarding_action),
the RBAC filters (DENY policies first, then ALLOW, as Istio) and the router, and, for
STRICT, a DownstreamTlsContext with the bootstrap's certificate provider instances
(certificate ``default``, roots ``ROOTCA``) requiring client certificates. grpcio's own
xDS server accepts these Listeners.

Rule semantics follow Istio: a rule matches when any ``from`` entry and any ``to`` entry
match (absent: anything); inside an entry every field must match, and a field matches
when any of its values does. Values ending in ``*`` are prefixes, values starting with
``*`` suffixes, ``*`` alone means "present". Principals are SPIFFE ids without
``spiffe://`` (as Istio writes them). With ALLOW policies present, a call no ALLOW
rule matches is denied; a DENY match always wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2 as tls_common_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from google.protobuf import any_pb2  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]

__all__ = ["DEFAULT_SERVER_TEMPLATE", "INBOUND_KEYS", "compile_inbound"]

#: istiod's name for a proxyless gRPC server's inbound Listener.
DEFAULT_SERVER_TEMPLATE = "xds.istio.io/grpc/lds/inbound/%s"
INBOUND_KEYS = ("mtls", "listen", "listener_name_template", "certificate_provider", "authorization")
_POLICY_KEYS = ("name", "action", "rules")
_RULE_KEYS = ("from", "to")
_SOURCE_KEYS = (
    "principals",
    "notPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
)
_OPERATION_KEYS = ("methods", "notMethods", "paths", "notPaths")
RBAC_TYPE = "envoy.extensions.filters.http.rbac.v3.RBAC"
ROUTER_FILTER = "envoy.filters.http.router"


class Ctx(Protocol):
    def fail(self, where: str, reason: str) -> Any: ...

    def mapping(self, value: object, where: str, allowed: tuple[str, ...]) -> dict[str, Any]: ...

    def typed(self, value: object, kind: type[Any], where: str, what: str) -> Any: ...


def _pack(msg: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def _strings(ctx: Ctx, value: object, where: str) -> list[str]:
    items = ctx.typed(value, list, where, "a list of strings")
    for i, v in enumerate(items):
        if not isinstance(v, str) or not v:
            ctx.fail(f"{where}[{i}]", f"expected a non-empty string; got {v!r}")
    return list(items)


def _clauses(
    ctx: Ctx, value: object, where: str, section: str, keys: tuple[str, ...]
) -> Iterator[tuple[str, bool, list[str], str]]:
    """The non-empty clauses of a rule's ``source`` or ``operation`` (``section``), in
    ``keys`` order: (key, whether it is a ``not...`` key, its values, where it is)."""
    spec = ctx.mapping(value, where, (section,))
    body = ctx.mapping(spec.get(section), f"{where}.{section}", keys)
    for key in keys:
        if key not in body:
            continue
        key_where = f"{where}.{section}.{key}"
        values = _strings(ctx, body[key], key_where)
        if values:
            yield key, key.startswith("not"), values, key_where


def _istio_match(value: str, prefix: str = "") -> string_pb2.StringMatcher:
    """Istio's string rule: ``*`` any, ``x*`` prefix, ``*x`` suffix, else exact."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + value[:-1])
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:])
    return string_pb2.StringMatcher(exact=prefix + value)


def _principal_name(m: string_pb2.StringMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=m))


def _any_principal(ids: list[rbac_pb2.Principal], negate: bool) -> rbac_pb2.Principal:
    p = ids[0] if len(ids) == 1 else rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=ids))
    return rbac_pb2.Principal(not_id=p) if negate else p


def _any_permission(rules: list[rbac_pb2.Permission], negate: bool) -> rbac_pb2.Permission:
    p = (
        rules[0]
        if len(rules) == 1
        else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=rules))
    )
    return rbac_pb2.Permission(not_rule=p) if negate else p


def _cidr(ctx: Ctx, value: str, where: str) -> address_pb2.CidrRange:
    import ipaddress

    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        ctx.fail(where, f"expected an IP or CIDR such as 10.0.0.0/8; got {value!r}")
    out = address_pb2.CidrRange(address_prefix=str(net.network_address))
    out.prefix_len.value = net.prefixlen
    return out


def _source(ctx: Ctx, value: object, where: str) -> rbac_pb2.Principal:
    ids: list[rbac_pb2.Principal] = []
    for key, negate, values, key_where in _clauses(ctx, value, where, "source", _SOURCE_KEYS):
        base = key[3].lower() + key[4:] if negate else key
        if base == "principals":
            one = [_principal_name(_istio_match(v, "spiffe://")) for v in values]
        elif base == "namespaces":
            one = [
                _principal_name(
                    string_pb2.StringMatcher(
                        safe_regex=regex_pb2.RegexMatcher(regex=f"spiffe://[^/]+/ns/{_re(v)}/.*")
                    )
                )
                for v in values
            ]
        else:
            one = [
                rbac_pb2.Principal(direct_remote_ip=_cidr(ctx, v, f"{key_where}[{i}]"))
                for i, v in enumerate(values)
            ]
        ids.append(_any_principal(one, negate))
    if not ids:
        return rbac_pb2.Principal(any=True)
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ids))


def _re(v: str) -> str:
    import re

    return re.escape(v)


def _operation(ctx: Ctx, value: object, where: str) -> rbac_pb2.Permission:
    rules: list[rbac_pb2.Permission] = []
    for key, negate, values, key_where in _clauses(ctx, value, where, "operation", _OPERATION_KEYS):
        if key.lower().endswith("methods"):
            one = [
                rbac_pb2.Permission(
                    header=route_components_pb2.HeaderMatcher(
                        name=":method", string_match=string_pb2.StringMatcher(exact=v)
                    )
                )
                for v in values
            ]
        else:
            for i, v in enumerate(values):
                if not v.startswith(("/", "*")):
                    ctx.fail(f"{key_where}[{i}]", "paths start with / (or *)")
            one = [
                rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=_istio_match(v)))
                for v in values
            ]
        rules.append(_any_permission(one, negate))
    if not rules:
        return rbac_pb2.Permission(any=True)
    return (
        rules[0]
        if len(rules) == 1
        else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=rules))
    )


def _policies(
    ctx: Ctx, service: str, value: object, where: str
) -> tuple[dict[str, rbac_pb2.Policy], dict[str, rbac_pb2.Policy], bool]:
    """(DENY policies, ALLOW policies, whether any ALLOW policy was written)."""
    items = ctx.typed(value, list, where, "a list of authorization policies")
    deny: dict[str, rbac_pb2.Policy] = {}
    allow: dict[str, rbac_pb2.Policy] = {}
    any_allow = False
    for i, item in enumerate(items):
        pw = f"{where}[{i}]"
        spec = ctx.mapping(item, pw, _POLICY_KEYS)
        name = spec.get("name", f"policy-{i}")
        if not isinstance(name, str) or not name:
            ctx.fail(f"{pw}.name", "expected a non-empty string")
        action = spec.get("action", "ALLOW")
        if action not in ("ALLOW", "DENY"):
            ctx.fail(f"{pw}.action", f"unknown action {action!r}; use ALLOW or DENY")
        target = allow if action == "ALLOW" else deny
        any_allow = any_allow or action == "ALLOW"
        rules = ctx.typed(spec.get("rules", []), list, f"{pw}.rules", "a list of rules")
        for j, rule in enumerate(rules):
            rw = f"{pw}.rules[{j}]"
            r = ctx.mapping(rule, rw, _RULE_KEYS)
            froms = ctx.typed(r.get("from", []), list, f"{rw}.from", "a list of {source: ...}")
            tos = ctx.typed(r.get("to", []), list, f"{rw}.to", "a list of {operation: ...}")
            principals = [_source(ctx, f, f"{rw}.from[{k}]") for k, f in enumerate(froms)]
            permissions = [_operation(ctx, t, f"{rw}.to[{k}]") for k, t in enumerate(tos)]
            policy_name = f"ns[default]-policy[{name}]-rule[{j}]"
            if policy_name in target:
                ctx.fail(f"{pw}.name", f"policy name {name!r} is used twice")
            target[policy_name] = rbac_pb2.Policy(
                principals=principals or [rbac_pb2.Principal(any=True)],
                permissions=permissions or [rbac_pb2.Permission(any=True)],
            )
    return deny, allow, any_allow


def _http_filters(
    deny: dict[str, rbac_pb2.Policy], allow: dict[str, rbac_pb2.Policy], any_allow: bool
) -> list[hcm_pb2.HttpFilter]:
    out = []
    # DENY first, as Istio. An ALLOW policy without rules allows nothing (Istio): the
    # ALLOW filter is written, with an empty set, whenever any ALLOW policy was.
    for name, action, policies, wanted in (
        ("deny", rbac_pb2.RBAC.DENY, deny, bool(deny)),
        ("allow", rbac_pb2.RBAC.ALLOW, allow, any_allow),
    ):
        if wanted:
            rules = rbac_pb2.RBAC(action=action, policies=policies)
            out.append(
                hcm_pb2.HttpFilter(
                    name=f"envoy.filters.http.rbac.{name}",
                    typed_config=_pack(rbac_filter_pb2.RBAC(rules=rules)),
                )
            )
    out.append(hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=_pack(router_pb2.Router())))
    return out


def downstream_tls(provider: str) -> tls_pb2.DownstreamTlsContext:
    """Istio STRICT mTLS: the provider's certificate, its ROOTCA for clients, required."""
    pi = tls_common_pb2.CertificateProviderPluginInstance
    out = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificate_provider_instance=pi(
                instance_name=provider, certificate_name="default"
            ),
            validation_context=tls_common_pb2.CertificateValidationContext(
                ca_certificate_provider_instance=pi(
                    instance_name=provider, certificate_name="ROOTCA"
                )
            ),
        )
    )
    out.require_client_certificate.value = True
    return out


def compile_inbound(
    ctx: Ctx,
    service: str,
    value: object,
    where: str,
    endpoints: list[tuple[str, int]],
    parse_address: Any,
) -> list[listener_pb2.Listener]:
    """The server Listeners of one service's ``inbound`` section."""
    spec = ctx.mapping(value, where, INBOUND_KEYS)
    mtls = spec.get("mtls", "STRICT")
    if mtls == "PERMISSIVE":
        ctx.fail(
            f"{where}.mtls",
            "PERMISSIVE needs TLS detection (a listener filter), which gRPC servers do not "
            "have; use STRICT or DISABLE",
        )
    if mtls not in ("STRICT", "DISABLE"):
        ctx.fail(f"{where}.mtls", f"unknown mtls mode {mtls!r}; use STRICT or DISABLE")
    template = spec.get("listener_name_template", DEFAULT_SERVER_TEMPLATE)
    if not isinstance(template, str) or not template:
        ctx.fail(f"{where}.listener_name_template", "expected a non-empty string with %s")
    provider = spec.get("certificate_provider", "default")
    if not isinstance(provider, str) or not provider:
        ctx.fail(f"{where}.certificate_provider", "expected a certificate provider instance name")
    if "listen" in spec:
        listen = [
            parse_address(a, f"{where}.listen[{i}]")
            for i, a in enumerate(
                ctx.typed(spec["listen"], list, f"{where}.listen", "a list of IP:PORT")
            )
        ]
    else:
        listen = endpoints
    if not listen:
        ctx.fail(f"{where}.listen", "no listening address: give listen: [IP:PORT] or endpoints")
    deny, allow, any_allow = _policies(
        ctx, service, spec.get("authorization", []), f"{where}.authorization"
    )
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"inbound_{service}",
        route_config=route_pb2.RouteConfiguration(
            name=f"inbound|{service}",
            virtual_hosts=[
                route_components_pb2.VirtualHost(
                    name=f"inbound|{service}",
                    domains=["*"],
                    routes=[
                        route_components_pb2.Route(
                            name="default",
                            match=route_components_pb2.RouteMatch(prefix="/"),
                            non_forwarding_action=route_components_pb2.NonForwardingAction(),
                        )
                    ],
                )
            ],
        ),
        http_filters=_http_filters(deny, allow, any_allow),
    )
    out = []
    seen: set[str] = set()
    for ip, port in listen:
        addr = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        if addr in seen:
            continue
        seen.add(addr)
        chain = listener_components_pb2.FilterChain(
            name=f"inbound|{service}|{port}",
            filters=[
                listener_components_pb2.Filter(
                    name="envoy.filters.network.http_connection_manager", typed_config=_pack(hcm)
                )
            ],
        )
        if mtls == "STRICT":
            chain.transport_socket.name = "envoy.transport_sockets.tls"
            chain.transport_socket.typed_config.CopyFrom(_pack(downstream_tls(provider)))
        lis = listener_pb2.Listener(
            name=template.replace("%s", addr),
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
            ),
            filter_chains=[chain],
            traffic_direction=base_pb2.INBOUND,
        )
        out.append(lis)
    return out
