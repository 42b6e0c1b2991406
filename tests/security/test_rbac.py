"""The RBAC engine (gRFC A41): principals, permissions, actions, chains, overrides."""

from __future__ import annotations

import ipaddress
import logging
import ssl

import pytest
from _sec_helpers import SPIFFE, Pki
from hypothesis import given, settings
from hypothesis import strategies as st

from pymesh.errors import PermissionDeniedError
from pymesh.routing._request import RequestInfo
from pymesh.security._rbac import (
    PeerCertificate,
    RbacAuthorizer,
    RbacEngine,
    RbacRequest,
    compile_rule,
)
from pymesh.xds.resources.listener import ROUTER_TYPE, HttpFilter
from pymesh.xds.resources.matchers import HeaderMatcher, StringMatcher
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
    RbacRule,
    RbacRules,
    RemoteIpRule,
    RequestedServerNameRule,
    UrlPathRule,
)

FRONT = "spiffe://td.example/ns/shop/sa/frontend"
OTHER = "spiffe://td.example/ns/shop/sa/batch"


def req(
    *,
    method: str = "GET",
    path: str = "/orders/1?x=1",
    authority: str = "orders:8080",
    headers: dict[str, str] | None = None,
    peer: str = "10.0.0.5",
    local: str = "10.0.0.9",
    port: int = 8443,
    tls: bool = True,
    cert: PeerCertificate | None = None,
) -> RbacRequest:
    return RbacRequest(
        RequestInfo(method, authority, path, headers or {}),
        peer_address=peer,
        local_address=local,
        local_port=port,
        tls=tls,
        peer_certificate=cert,
    )


def exact(v: str) -> StringMatcher:
    return StringMatcher("exact", v)


def matches(rule: RbacRule, r: RbacRequest) -> bool:
    return compile_rule(rule)(r)


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


# ---- principals ----------------------------------------------------------------------


def test_authenticated_uri_then_dns_then_subject_then_empty() -> None:
    rule = AuthenticatedRule(exact(FRONT))
    both = PeerCertificate(uri_sans=(OTHER, FRONT), dns_sans=("front.shop",), subject="CN=x")
    assert matches(rule, req(cert=both))
    # URI SANs present: DNS SANs are not consulted even if one would match.
    dns_rule = AuthenticatedRule(exact("front.shop"))
    assert not matches(dns_rule, req(cert=both))
    dns_only = PeerCertificate(dns_sans=("a.shop", "front.shop"), subject="CN=front.shop")
    assert matches(dns_rule, req(cert=dns_only))
    # No SAN at all: the subject (RFC 2253) is matched.
    subj = PeerCertificate(subject="CN=front,O=Shop")
    assert matches(AuthenticatedRule(exact("CN=front,O=Shop")), req(cert=subj))
    assert not matches(AuthenticatedRule(exact("CN=front")), req(cert=subj))
    # No certificate: "" is matched (A41 step 4).
    assert matches(AuthenticatedRule(exact("")), req(cert=None))
    assert matches(AuthenticatedRule(StringMatcher.make("safe_regex", ".*")), req(cert=None))
    assert not matches(rule, req(cert=None))


def test_authenticated_needs_tls_and_unset_name_matches_any_tls() -> None:
    cert = PeerCertificate(uri_sans=(FRONT,))
    assert matches(AuthenticatedRule(None), req(tls=True, cert=None))
    assert not matches(AuthenticatedRule(None), req(tls=False))
    assert not matches(AuthenticatedRule(exact(FRONT)), req(tls=False, cert=cert))


def test_peer_certificate_from_der_reads_sans_and_subject() -> None:
    leaf = Pki().issue("frontend", dns=("front.shop",))
    cert = PeerCertificate.from_der(ssl.PEM_cert_to_DER_cert(leaf.cert_pem.decode()))
    assert cert.uri_sans == (SPIFFE + "frontend",)
    assert cert.dns_sans == ("front.shop",)
    assert cert.subject == "CN=frontend"
    assert cert.spiffe_id == SPIFFE + "frontend"


def test_remote_ip_kinds_are_the_peer_address() -> None:
    for kind in ("source_ip", "direct_remote_ip", "remote_ip"):
        rule = RemoteIpRule(net("10.0.0.0/24"), kind)  # type: ignore[arg-type]
        assert matches(rule, req(peer="10.0.0.5"))
        assert not matches(rule, req(peer="10.0.1.5"))
    v6 = RemoteIpRule(net("::1/128"))
    assert matches(v6, req(peer="::1"))
    assert not matches(v6, req(peer="127.0.0.1"))
    # A dual-stack socket reports an IPv4 peer as IPv4-mapped IPv6.
    assert matches(RemoteIpRule(net("127.0.0.0/8")), req(peer="::ffff:127.0.0.1"))
    assert not matches(RemoteIpRule(net("0.0.0.0/0")), req(peer="not-an-ip"))


def test_and_or_not_ids() -> None:
    cert = PeerCertificate(uri_sans=(FRONT,))
    front = AuthenticatedRule(exact(FRONT))
    local = RemoteIpRule(net("10.0.0.0/8"))
    r = req(cert=cert, peer="10.1.1.1")
    assert matches(AndRule((front, local)), r)
    assert not matches(AndRule((front, NotRule(local))), r)
    assert matches(OrRule((NotRule(front), local)), r)
    assert not matches(OrRule((NotRule(front), NotRule(local))), r)


# ---- permissions ---------------------------------------------------------------------


def test_header_pseudo_headers_and_host_alias() -> None:
    r = req(method="POST", path="/orders?id=1", authority="orders:8080", headers={"x-a": "1"})
    assert matches(HeaderRule(HeaderMatcher(":method", exact("POST"))), r)
    assert matches(HeaderRule(HeaderMatcher(":path", exact("/orders?id=1"))), r)
    assert matches(HeaderRule(HeaderMatcher(":authority", exact("orders:8080"))), r)
    assert matches(HeaderRule(HeaderMatcher("host", exact("orders:8080"))), r)
    assert matches(HeaderRule(HeaderMatcher("x-a", present_match=True)), r)


def test_header_missing_fails_except_present_equal_to_invert() -> None:
    r = req(headers={})
    assert not matches(HeaderRule(HeaderMatcher("x-b", exact("1"))), r)
    # invert_match does not rescue a missing header (A41).
    assert not matches(HeaderRule(HeaderMatcher("x-b", exact("1"), invert_match=True)), r)
    assert matches(HeaderRule(HeaderMatcher("x-b", present_match=False)), r)
    assert matches(
        HeaderRule(HeaderMatcher("x-b", present_match=True, invert_match=True)),
        r,
    )
    assert not matches(HeaderRule(HeaderMatcher("x-b", present_match=True)), r)


def test_url_path_ignores_query() -> None:
    r = req(path="/pkg.Svc/Method?x=1")
    assert matches(UrlPathRule(exact("/pkg.Svc/Method")), r)
    assert matches(UrlPathRule(StringMatcher("prefix", "/pkg.Svc/")), r)
    assert not matches(UrlPathRule(exact("/pkg.Svc/Method?x=1")), r)


def test_destination_ip_and_ports() -> None:
    r = req(local="10.0.0.9", port=8443)
    assert matches(DestinationIpRule(net("10.0.0.0/28")), r)
    assert not matches(DestinationIpRule(net("10.0.0.16/28")), r)
    assert matches(DestinationPortRule(8443), r)
    assert not matches(DestinationPortRule(8080), r)
    assert matches(DestinationPortRangeRule(8443, 8444), r)
    assert not matches(DestinationPortRangeRule(8000, 8443), r)  # end exclusive


def test_requested_server_name_is_empty_and_metadata_never() -> None:
    r = req()
    assert matches(RequestedServerNameRule(exact("")), r)
    assert not matches(RequestedServerNameRule(exact("orders")), r)
    assert not matches(MetadataRule(False), r)
    assert matches(MetadataRule(True), r)
    # Not optimised out: NOT of a never-matching rule matches (A41).
    assert matches(NotRule(MetadataRule(False)), r)


# ---- actions, engines, chains --------------------------------------------------------


def policy(perm: RbacRule, princ: RbacRule) -> RbacPolicy:
    return RbacPolicy((perm,), (princ,))


POST_BY_FRONT = policy(
    HeaderRule(HeaderMatcher(":method", exact("POST"))), AuthenticatedRule(exact(FRONT))
)
ANYONE = policy(AnyRule(), AnyRule())


def test_allow_and_deny_report_the_matching_policy() -> None:
    allow = RbacEngine(RbacRules("ALLOW", (("post-by-front", POST_BY_FRONT),)))
    front = PeerCertificate(uri_sans=(FRONT,))
    assert allow.evaluate(req(method="POST", cert=front)) == (True, "post-by-front")
    assert allow.evaluate(req(method="GET", cert=front)) == (False, None)
    deny = RbacEngine(RbacRules("DENY", (("post-by-front", POST_BY_FRONT),)))
    assert deny.evaluate(req(method="POST", cert=front)) == (False, "post-by-front")
    assert deny.evaluate(req(method="POST", cert=None)) == (True, None)


def test_empty_allow_denies_everything_and_empty_deny_allows() -> None:
    assert RbacEngine(RbacRules("ALLOW", ())).evaluate(req()) == (False, None)
    assert RbacEngine(RbacRules("DENY", ())).evaluate(req()) == (True, None)


def test_first_matching_policy_by_name() -> None:
    engine = RbacEngine(RbacRules("DENY", (("a", ANYONE), ("b", ANYONE))))
    assert engine.evaluate(req()) == (False, "a")


def filters(*cfgs: tuple[str, RbacConfig]) -> list[HttpFilter]:
    out = [HttpFilter(name, RBAC_TYPE, cfg) for name, cfg in cfgs]
    out.append(HttpFilter("router", ROUTER_TYPE, None))
    return out


def test_chain_first_denial_wins_and_log_is_noop() -> None:
    deny_all = RbacConfig(RbacRules("DENY", (("all", ANYONE),)))
    allow_all = RbacConfig(RbacRules("ALLOW", (("all", ANYONE),)))
    chain = RbacAuthorizer.from_http_filters(
        filters(("log", RbacConfig(None)), ("allow", allow_all), ("deny", deny_all))
    )
    d = chain.decide(req())
    assert not d.allowed and d.filter_name == "deny" and d.policy == "all" and d.action == "DENY"
    assert (
        RbacAuthorizer.from_http_filters(filters(("log", RbacConfig(None)))).decide(req()).allowed
    )
    assert not RbacAuthorizer.from_http_filters(filters()).enforcing


def test_per_route_override_replaces_the_filter_config() -> None:
    deny_all = RbacConfig(RbacRules("DENY", (("all", ANYONE),)))
    chain = RbacAuthorizer.from_http_filters(filters(("rbac", deny_all)))
    assert not chain.decide(req()).allowed
    off = chain.with_overrides({"rbac": RbacConfig(None)})
    assert off.decide(req()).allowed and not off.enforcing
    # An override for another filter name, or of another type, changes nothing.
    assert chain.with_overrides({"other": RbacConfig(None), "rbac": object()}) is chain


def test_denial_error_log_and_metric(caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from pymesh.telemetry import _providers

    reader = InMemoryMetricReader()
    _providers.configure(meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        deny = RbacConfig(RbacRules("DENY", (("no-batch", policy(AnyRule(), AnyRule())),)))
        chain = RbacAuthorizer.from_config(deny, name="authz")
        with caplog.at_level(logging.INFO, logger="pymesh.security.rbac"):
            d = chain.check(req(cert=PeerCertificate(uri_sans=(OTHER,))), protocol="grpc")
        assert not d.allowed
        assert "no-batch" in caplog.text and OTHER in caplog.text
        err = d.error("listener-1")
        assert isinstance(err, PermissionDeniedError)
        assert err.http_status == 403 and err.grpc_status == 7
        assert err.policy == "no-batch" and err.filter_name == "authz"
        assert "no-batch" in str(err) and "listener-1" in str(err)
        data = reader.get_metrics_data()
        points = [
            p
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "pymesh.server.rbac.denied"
            for p in m.data.data_points
        ]
        assert len(points) == 1 and points[0].value == 1
        assert points[0].attributes["pymesh.rbac.policy"] == "no-batch"
        assert points[0].attributes["pymesh.protocol"] == "grpc"
    finally:
        _providers.configure(meter_provider=None)


# ---- properties ----------------------------------------------------------------------

_leaf = st.sampled_from(
    [
        AnyRule(),
        MetadataRule(False),
        MetadataRule(True),
        HeaderRule(HeaderMatcher(":method", exact("POST"))),
        HeaderRule(HeaderMatcher("x-a", present_match=True)),
        UrlPathRule(StringMatcher("prefix", "/orders")),
        RemoteIpRule(net("10.0.0.0/8")),
        DestinationPortRule(8443),
        AuthenticatedRule(exact(FRONT)),
        AuthenticatedRule(None),
    ]
)
_rules: st.SearchStrategy[RbacRule] = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda rs: AndRule(tuple(rs))),
        st.lists(inner, min_size=1, max_size=3).map(lambda rs: OrRule(tuple(rs))),
        inner.map(NotRule),
    ),
    max_leaves=8,
)
_requests = st.builds(
    req,
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(["/orders/1", "/other"]),
    headers=st.sampled_from([{}, {"x-a": "1"}]),
    peer=st.sampled_from(["10.2.3.4", "192.168.1.1", "::1"]),
    port=st.sampled_from([8443, 80]),
    tls=st.booleans(),
    cert=st.sampled_from([None, PeerCertificate(uri_sans=(FRONT,)), PeerCertificate()]),
)


def _reference(rule: RbacRule, r: RbacRequest) -> bool:
    """A direct, uncompiled reading of the tree (the leaves use the compiled tests)."""
    if isinstance(rule, AndRule):
        return all(_reference(x, r) for x in rule.rules)
    if isinstance(rule, OrRule):
        return any(_reference(x, r) for x in rule.rules)
    if isinstance(rule, NotRule):
        return not _reference(rule.rule, r)
    return compile_rule(rule)(r)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_rules, _requests)
def test_compiled_tree_equals_reference_and_not_is_complement(
    rule: RbacRule, r: RbacRequest
) -> None:
    got = compile_rule(rule)(r)
    assert got == _reference(rule, r)
    assert compile_rule(NotRule(rule))(r) is (not got)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_rules, _rules), min_size=0, max_size=3), _requests)
def test_allow_and_deny_of_the_same_policies_are_complements(
    pairs: list[tuple[RbacRule, RbacRule]], r: RbacRequest
) -> None:
    policies = tuple((f"p{i}", policy(a, b)) for i, (a, b) in enumerate(pairs))
    allowed, name = RbacEngine(RbacRules("ALLOW", policies)).evaluate(r)
    denied_ok, deny_name = RbacEngine(RbacRules("DENY", policies)).evaluate(r)
    assert allowed is (not denied_ok)
    assert name == deny_name
    expected = next(
        (
            n
            for n, p in policies
            if _reference(p.permissions[0], r) and _reference(p.principals[0], r)
        ),
        None,
    )
    assert name == expected
