"""RouteConfiguration parser: every supported field, defaults, and each NACK reason."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from _resbuild import fault, first_route, invalid, pack, route_config
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

from pymesh.xds.resources import _warnings
from pymesh.xds.resources.fault import FaultConfig
from pymesh.xds.resources.matchers import FractionalPercent, Int64Range
from pymesh.xds.resources.route import (
    RETRY_ON_GRPC,
    RETRY_ON_HTTP,
    DirectResponseAction,
    HashPolicy,
    HeaderValueOption,
    NonForwardingAction,
    RedirectAction,
    RetryBackOff,
    RouteAction,
    parse_route_configuration,
)

parse = parse_route_configuration


def _action(rc: Any) -> RouteAction:
    action = parse(rc).virtual_hosts[0].routes[0].action
    assert isinstance(action, RouteAction)
    return action


def test_minimal_route_defaults() -> None:
    out = parse(route_config())
    assert out.name == "rc"
    vh = out.virtual_hosts[0]
    assert vh.domains == ("*",)
    r = vh.routes[0]
    assert r.match.path_kind == "prefix" and r.match.path == "/" and r.match.case_sensitive
    assert isinstance(r.action, RouteAction)
    assert r.action.cluster == "c"
    assert r.action.timeout == 15.0
    assert r.action.cluster_not_found_response_code == 503
    assert r.action.retry_policy is None
    assert out.unsupported == ()


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("prefix", "/api", "prefix"),
        ("path", "/exact", "path"),
        ("path_separated_prefix", "/api", "path_separated_prefix"),
    ],
)
def test_path_specifiers(field: str, value: str, kind: str) -> None:
    rc = route_config()
    m = first_route(rc).match
    setattr(m, field, value)
    m.case_sensitive.value = False
    match = parse(rc).virtual_hosts[0].routes[0].match
    assert (match.path_kind, match.path, match.case_sensitive) == (kind, value, False)


def test_safe_regex_precompiled() -> None:
    rc = route_config()
    first_route(rc).match.safe_regex.regex = "/v[0-9]+/.*"
    match = parse(rc).virtual_hosts[0].routes[0].match
    assert match.path_kind == "safe_regex"
    assert match.regex.fullmatch("/v2/x") is not None
    assert match.regex.fullmatch("/x/v2") is None


def test_invalid_route_regex_nacks_with_path() -> None:
    rc = route_config()
    first_route(rc).match.safe_regex.regex = "(a"
    invalid(parse, rc, "virtual_hosts[0].routes[0].match.safe_regex.regex", reason="RE2")


def test_backreference_is_rejected_by_re2() -> None:
    rc = route_config()
    first_route(rc).match.safe_regex.regex = r"(a)\1"
    invalid(parse, rc, "virtual_hosts[0].routes[0].match.safe_regex.regex")


def test_path_separated_prefix_trailing_slash_nacks() -> None:
    rc = route_config()
    first_route(rc).match.path_separated_prefix = "/api/"
    invalid(parse, rc, "virtual_hosts[0].routes[0].match.path_separated_prefix")


def test_missing_path_specifier_nacks() -> None:
    rc = route_config()
    first_route(rc).match.ClearField("prefix")
    first_route(rc).match.headers.add(name="x")
    invalid(parse, rc, "virtual_hosts[0].routes[0].match", reason="prefix")


def test_header_matchers_all_forms() -> None:
    rc = route_config()
    m = first_route(rc).match
    m.headers.add(name="X-Exact", exact_match="a")
    m.headers.add(name="x-prefix", prefix_match="p")
    m.headers.add(name="x-suffix", suffix_match="s")
    m.headers.add(name="x-contains", contains_match="c", invert_match=True)
    h = m.headers.add(name="x-re")
    h.safe_regex_match.regex = "[a-z]+"
    h = m.headers.add(name="x-sm", treat_missing_header_as_empty=True)
    h.string_match.suffix = "Z"
    h.string_match.ignore_case = True
    h = m.headers.add(name="x-range")
    h.range_match.start, h.range_match.end = 1, 10
    m.headers.add(name="x-present", present_match=True)
    m.headers.add(name="x-absent", present_match=False)
    m.headers.add(name="x-none")
    hs = parse(rc).virtual_hosts[0].routes[0].match.headers
    assert hs[0].name == "x-exact"
    assert (hs[0].string_match.kind, hs[0].string_match.value) == ("exact", "a")  # type: ignore[union-attr]
    assert [h.string_match.kind for h in hs[:6]] == [  # type: ignore[union-attr]
        "exact",
        "prefix",
        "suffix",
        "contains",
        "safe_regex",
        "suffix",
    ]
    assert hs[3].invert_match
    assert hs[4].string_match.matches("abc")  # type: ignore[union-attr]
    assert hs[5].string_match.ignore_case and hs[5].treat_missing_header_as_empty  # type: ignore[union-attr]
    assert hs[6].range_match == Int64Range(1, 10)
    assert hs[7].present_match is True
    assert hs[8].present_match is False
    assert hs[9].present_match is True  # no specifier: presence (Envoy)


def test_header_range_start_after_end_is_kept() -> None:
    # Envoy accepts an empty range; it simply never matches.
    rc = route_config()
    h = first_route(rc).match.headers.add(name="x")
    h.range_match.start, h.range_match.end = 5, 1
    assert parse(rc).virtual_hosts[0].routes[0].match.headers[0].range_match == Int64Range(5, 1)


def test_header_bad_regex_and_empty_prefix_nack() -> None:
    rc = route_config()
    h = first_route(rc).match.headers.add(name="x")
    h.string_match.safe_regex.regex = "*"
    invalid(parse, rc, "virtual_hosts[0].routes[0].match.headers[0].string_match.safe_regex.regex")
    rc = route_config()
    h = first_route(rc).match.headers.add(name="x")
    h.string_match.prefix = ""
    h.string_match.ignore_case = True
    invalid(parse, rc, "virtual_hosts[0].routes[0].match.headers[0].string_match.prefix")


def test_query_parameters_runtime_fraction_grpc() -> None:
    rc = route_config()
    m = first_route(rc).match
    q = m.query_parameters.add(name="debug")
    q.string_match.exact = "1"
    m.query_parameters.add(name="flag", present_match=True)
    m.query_parameters.add(name="bare")
    m.runtime_fraction.default_value.numerator = 25
    m.runtime_fraction.default_value.denominator = 1  # TEN_THOUSAND
    m.runtime_fraction.runtime_key = "ignored"
    m.grpc.SetInParent()
    match = parse(rc).virtual_hosts[0].routes[0].match
    assert match.query_parameters[0].string_match.value == "1"  # type: ignore[union-attr]
    assert match.query_parameters[1].present_match is True
    assert match.query_parameters[2].present_match is True
    assert match.runtime_fraction == FractionalPercent(25, 10_000)
    assert match.grpc


def test_route_action_fields() -> None:
    rc = route_config()
    a = first_route(rc).route
    a.timeout.FromMilliseconds(2500)
    a.idle_timeout.FromSeconds(7)
    a.prefix_rewrite = "/v2"
    a.host_rewrite_literal = "backend.local"
    a.cluster_not_found_response_code = rc_pb2.RouteAction.NOT_FOUND
    a.max_stream_duration.max_stream_duration.FromSeconds(3)
    a.max_stream_duration.grpc_timeout_header_max.FromSeconds(0)
    out = _action(rc)
    assert out.timeout == 2.5
    assert out.idle_timeout == 7.0
    assert out.prefix_rewrite == "/v2"
    assert out.host_rewrite_literal == "backend.local"
    assert out.cluster_not_found_response_code == 404
    assert out.max_stream_duration == 3.0
    assert out.grpc_timeout_header_max == 0.0  # Envoy: 0 means uncapped grpc-timeout


def test_timeout_zero_means_none_and_regex_rewrite_auto_host() -> None:
    rc = route_config()
    a = first_route(rc).route
    a.timeout.FromSeconds(0)
    a.regex_rewrite.pattern.regex = "^/old/(.*)$"
    a.regex_rewrite.substitution = r"/new/\1"
    a.auto_host_rewrite.value = True
    out = _action(rc)
    assert out.timeout is None
    assert out.regex_rewrite is not None and out.regex_rewrite.substitution == r"/new/\1"
    assert out.regex_rewrite.regex.fullmatch("/old/x") is not None
    assert out.auto_host_rewrite


def test_prefix_and_regex_rewrite_together_nack() -> None:
    rc = route_config()
    a = first_route(rc).route
    a.prefix_rewrite = "/x"
    a.regex_rewrite.pattern.regex = "a"
    invalid(parse, rc, "virtual_hosts[0].routes[0].route.regex_rewrite")


def test_negative_timeout_nacks() -> None:
    rc = route_config()
    first_route(rc).route.timeout.seconds = -1
    invalid(parse, rc, "virtual_hosts[0].routes[0].route.timeout", reason="negative")


def test_weighted_clusters_sum_and_per_cluster_ops() -> None:
    rc = route_config()
    a = first_route(rc).route
    a.ClearField("cluster")
    w = a.weighted_clusters.clusters.add(name="a")
    w.weight.value = 30
    hv = w.request_headers_to_add.add()
    hv.header.key, hv.header.value = "X-Split", "a"
    w.typed_per_filter_config["envoy.filters.http.fault"].Pack(fault(abort_status=503))
    w = a.weighted_clusters.clusters.add(name="b")
    w.weight.value = 70
    out = _action(rc)
    assert [(c.name, c.weight) for c in out.weighted_clusters] == [("a", 30), ("b", 70)]
    assert out.total_weight == 100
    assert out.weighted_clusters[0].header_ops.request_headers_to_add == (
        HeaderValueOption("x-split", "a"),
    )
    cfg = out.weighted_clusters[0].typed_per_filter_config["envoy.filters.http.fault"]
    assert isinstance(cfg, FaultConfig) and cfg.abort is not None and cfg.abort.http_status == 503


def test_weighted_clusters_legacy_total_weight_ignored() -> None:
    # Envoy 1.40 and gRPC split by the sum of weights whatever total_weight says.
    rc = route_config()
    a = first_route(rc).route
    a.ClearField("cluster")
    a.weighted_clusters.clusters.add(name="a").weight.value = 40
    a.weighted_clusters.clusters.add(name="b").weight.value = 60
    a.weighted_clusters.total_weight.value = 1000
    assert _action(rc).total_weight == 100
    assert parse(rc).unsupported == ()


@pytest.mark.parametrize(
    ("weights", "reason"), [((0, 0), "greater than 0"), ((2**32 - 1, 1), "2^32-1")]
)
def test_weighted_clusters_bad_totals_nack(weights: tuple[int, int], reason: str) -> None:
    rc = route_config()
    a = first_route(rc).route
    a.ClearField("cluster")
    for i, wt in enumerate(weights):
        a.weighted_clusters.clusters.add(name=f"c{i}").weight.value = wt
    invalid(parse, rc, "virtual_hosts[0].routes[0].route.weighted_clusters.clusters", reason=reason)


def test_cluster_header_and_specifier_plugin() -> None:
    rc = route_config()
    a = first_route(rc).route
    a.cluster_header = "X-Cluster"
    assert _action(rc).cluster_header == "x-cluster"
    a.cluster_specifier_plugin = "plugin"
    invalid(
        parse,
        rc,
        "virtual_hosts[0].routes[0].route.cluster_specifier_plugin",
        reason="not supported",
    )


def test_route_without_action_nacks() -> None:
    rc = route_config()
    first_route(rc).ClearField("route")
    invalid(parse, rc, "virtual_hosts[0].routes[0]", reason="no action")


def test_hash_policies() -> None:
    rc = route_config()
    a = first_route(rc).route
    h = a.hash_policy.add(terminal=True)
    h.header.header_name = "X-User"
    h.header.regex_rewrite.pattern.regex = "^(.*)-.*$"
    h.header.regex_rewrite.substitution = r"\1"
    a.hash_policy.add().cookie.name = "session"
    a.hash_policy.add().query_parameter.name = "id"
    a.hash_policy.add().connection_properties.source_ip = True
    a.hash_policy.add().filter_state.key = "io.grpc.channel_id"
    a.hash_policy.add().connection_properties.source_ip = False  # hashes nothing: dropped
    out = _action(rc).hash_policies
    assert [(h.kind, h.name, h.terminal) for h in out] == [
        ("header", "x-user", True),
        ("cookie", "session", False),
        ("query_parameter", "id", False),
        ("source_ip", "", False),
        ("filter_state", "io.grpc.channel_id", False),
    ]
    assert isinstance(out[0], HashPolicy) and out[0].regex_rewrite is not None


def test_cookie_ttl_is_unsupported(caplog: pytest.LogCaptureFixture) -> None:
    rc = route_config()
    c = first_route(rc).route.hash_policy.add().cookie
    c.name = "s"
    c.ttl.FromSeconds(10)
    with caplog.at_level(logging.WARNING, logger="pymesh.xds"):
        out = parse(rc)
    assert "virtual_hosts[0].routes[0].route.hash_policy[0].cookie.ttl" in out.unsupported


def test_retry_policy_full() -> None:
    rc = route_config()
    rp = first_route(rc).route.retry_policy
    rp.retry_on = "5xx, reset ,connect-failure,,retriable-status-codes"
    rp.num_retries.value = 4
    rp.per_try_timeout.FromMilliseconds(500)
    rp.per_try_idle_timeout.FromSeconds(2)
    rp.retriable_status_codes.extend([503, 504])
    rp.retriable_headers.add(name="X-Retry", present_match=True)
    rp.retriable_request_headers.add(name="X-Idem", exact_match="1")
    rp.retry_back_off.base_interval.FromMilliseconds(100)
    rp.rate_limited_retry_back_off.reset_headers.add(name="Retry-After")
    rp.rate_limited_retry_back_off.reset_headers.add(
        name="X-RateLimit-Reset", format=rc_pb2.RetryPolicy.UNIX_TIMESTAMP
    )
    rp.rate_limited_retry_back_off.max_interval.FromSeconds(60)
    rp.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts")
    rp.host_selection_retry_max_attempts = 5
    out = _action(rc).retry_policy
    assert out is not None
    assert out.retry_on == frozenset({"5xx", "reset", "connect-failure", "retriable-status-codes"})
    assert out.num_retries == 4
    assert out.per_try_timeout == 0.5 and out.per_try_idle_timeout == 2.0
    assert out.retriable_status_codes == frozenset({503, 504})
    assert out.retriable_headers[0].name == "x-retry"
    assert out.retriable_request_headers[0].string_match.value == "1"  # type: ignore[union-attr]
    assert out.back_off == RetryBackOff(0.1, 1.0)  # max defaults to 10x base
    assert out.rate_limited_back_off is not None
    assert out.rate_limited_back_off.reset_headers == (
        ("retry-after", "SECONDS"),
        ("x-ratelimit-reset", "UNIX_TIMESTAMP"),
    )
    assert out.rate_limited_back_off.max_interval == 60.0
    assert out.retry_host_predicates == ("previous_hosts",)
    assert out.host_selection_retry_max_attempts == 5


def test_retry_policy_defaults_and_typed_predicate() -> None:
    rc = route_config()
    rp = first_route(rc).route.retry_policy
    rp.retry_on = "gateway-error"
    pred = rp.retry_host_predicate.add(name="anything")
    pred.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    rp.retry_host_predicate.add(name="envoy.retry_host_predicates.omit_canary_hosts")
    out = parse(rc)
    action = out.virtual_hosts[0].routes[0].action
    assert isinstance(action, RouteAction)
    policy = action.retry_policy
    assert policy is not None
    assert policy.num_retries == 1
    assert policy.back_off == RetryBackOff(0.025, 0.25)
    assert policy.host_selection_retry_max_attempts == 1
    assert policy.retry_host_predicates == ("previous_hosts",)
    assert "virtual_hosts[0].routes[0].route.retry_policy.retry_host_predicate[1]" in (
        out.unsupported
    )


def test_retry_backoff_max_below_base_nacks() -> None:
    rc = route_config()
    bo = first_route(rc).route.retry_policy.retry_back_off
    bo.base_interval.FromSeconds(1)
    bo.max_interval.FromMilliseconds(500)
    invalid(parse, rc, "virtual_hosts[0].routes[0].route.retry_policy.retry_back_off.max_interval")


def test_retry_backoff_requires_base() -> None:
    rc = route_config()
    first_route(rc).route.retry_policy.retry_back_off.max_interval.FromSeconds(1)
    invalid(parse, rc, "virtual_hosts[0].routes[0].route.retry_policy.retry_back_off.base_interval")


def test_vhost_retry_hedge_and_route_hedge_mirror() -> None:
    rc = route_config()
    vh = rc.virtual_hosts[0]
    vh.retry_policy.retry_on = "unavailable"
    vh.hedge_policy.initial_requests.value = 2
    vh.hedge_policy.hedge_on_per_try_timeout = True
    a = first_route(rc).route
    a.hedge_policy.SetInParent()
    mp = a.request_mirror_policies.add(cluster="shadow")
    mp.runtime_fraction.default_value.numerator = 10
    mp.trace_sampled.value = False
    a.request_mirror_policies.add(cluster="all")
    out = parse(rc).virtual_hosts[0]
    assert out.retry_policy is not None and out.retry_policy.retry_on == {"unavailable"}
    assert out.hedge_policy is not None
    assert (out.hedge_policy.initial_requests, out.hedge_policy.hedge_on_per_try_timeout) == (
        2,
        True,
    )
    action = out.routes[0].action
    assert isinstance(action, RouteAction)
    assert action.hedge_policy is not None and action.hedge_policy.initial_requests == 1
    m0, m1 = action.request_mirror_policies
    assert (m0.cluster, m0.runtime_fraction, m0.trace_sampled) == (
        "shadow",
        FractionalPercent(10, 100),
        False,
    )
    assert (m1.cluster, m1.runtime_fraction, m1.trace_sampled) == ("all", None, True)


def test_direct_response_redirect_non_forwarding() -> None:
    rc = route_config()
    vh = rc.virtual_hosts[0]
    dr = vh.routes.add()
    dr.match.path = "/health"
    dr.direct_response.status = 200
    dr.direct_response.body.inline_string = "ok"
    rd = vh.routes.add()
    rd.match.prefix = "/old"
    rd.redirect.https_redirect = True
    rd.redirect.host_redirect = "new.example"
    rd.redirect.port_redirect = 8443
    rd.redirect.prefix_rewrite = "/new"
    rd.redirect.response_code = rc_pb2.RedirectAction.PERMANENT_REDIRECT
    rd.redirect.strip_query = True
    nf = vh.routes.add()
    nf.match.prefix = "/nf"
    nf.non_forwarding_action.SetInParent()
    db = vh.routes.add()
    db.match.prefix = "/bytes"
    db.direct_response.status = 503
    db.direct_response.body.inline_bytes = b"\x00\x01"
    routes = parse(rc).virtual_hosts[0].routes
    assert routes[1].action == DirectResponseAction(200, b"ok")
    assert routes[2].action == RedirectAction(
        scheme_redirect="https",
        host_redirect="new.example",
        port_redirect=8443,
        prefix_rewrite="/new",
        response_code=308,
        strip_query=True,
    )
    assert isinstance(routes[3].action, NonForwardingAction)
    assert routes[4].action == DirectResponseAction(503, b"\x00\x01")


def test_direct_response_body_limit() -> None:
    rc = route_config()
    dr = first_route(rc)
    dr.direct_response.status = 200
    dr.direct_response.body.inline_string = "x" * 5000
    invalid(parse, rc, "virtual_hosts[0].routes[0].direct_response.body", reason="4096")
    rc.max_direct_response_body_size_bytes.value = 10_000
    assert parse(rc).virtual_hosts[0].routes[0].action == DirectResponseAction(200, b"x" * 5000)


def test_direct_response_filename_nacks() -> None:
    rc = route_config()
    dr = first_route(rc)
    dr.direct_response.status = 200
    dr.direct_response.body.filename = "/etc/passwd"
    invalid(parse, rc, "virtual_hosts[0].routes[0].direct_response.body.filename")


def test_header_ops_all_levels() -> None:
    rc = route_config()

    def add(msg: Any, kind: str, key: str, value: str, **kw: Any) -> None:
        hv = getattr(msg, f"{kind}_headers_to_add").add(**kw)
        hv.header.key, hv.header.value = key, value

    add(rc, "response", "X-RC", "1")
    rc.request_headers_to_remove.append("X-Drop")
    add(
        rc.virtual_hosts[0],
        "request",
        "x-vh",
        "2",
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    r = first_route(rc)
    hv = r.request_headers_to_add.add(keep_empty_value=True)
    hv.header.key = "x-legacy"
    hv.append.value = False
    r.response_headers_to_remove.append("server")
    hv = r.request_headers_to_add.add()
    hv.header.key = "x-raw"
    hv.header.raw_value = b"bytes"
    out = parse(rc)
    assert out.header_ops.response_headers_to_add == (HeaderValueOption("x-rc", "1"),)
    assert out.header_ops.request_headers_to_remove == ("x-drop",)
    vh = out.virtual_hosts[0]
    assert vh.header_ops.request_headers_to_add == (
        HeaderValueOption("x-vh", "2", "OVERWRITE_IF_EXISTS_OR_ADD"),
    )
    route = vh.routes[0]
    assert route.header_ops.request_headers_to_add == (
        HeaderValueOption("x-legacy", "", "OVERWRITE_IF_EXISTS_OR_ADD", True),
        HeaderValueOption("x-raw", "bytes"),
    )
    assert route.header_ops.response_headers_to_remove == ("server",)


@pytest.mark.parametrize("key", [":path", "Host", ""])
def test_reserved_header_ops_nack(key: str) -> None:
    rc = route_config()
    hv = first_route(rc).request_headers_to_add.add()
    hv.header.key, hv.header.value = key, "v"
    invalid(parse, rc, "virtual_hosts[0].routes[0].request_headers_to_add[0].header.key")


def test_append_and_append_action_together_nack() -> None:
    rc = route_config()
    hv = rc.request_headers_to_add.add(append_action=base_pb2.HeaderValueOption.ADD_IF_ABSENT)
    hv.header.key = "x"
    hv.append.value = True
    invalid(parse, rc, "request_headers_to_add[0].append")


def test_typed_per_filter_config_fault_wrapped_and_other() -> None:
    rc = route_config()
    vh = rc.virtual_hosts[0]
    vh.typed_per_filter_config["envoy.filters.http.fault"].Pack(fault(delay_s=0.25))
    fc = rc_pb2.FilterConfig(is_optional=True)
    fc.config.Pack(fault(abort_status=418))
    first_route(rc).typed_per_filter_config["fault2"].Pack(fc)
    first_route(rc).typed_per_filter_config["router"].Pack(router_pb2.Router())
    out = parse(rc)
    v = out.virtual_hosts[0]
    delay = v.typed_per_filter_config["envoy.filters.http.fault"].delay
    assert delay.fixed_delay == 0.25 and delay.percentage == FractionalPercent(50, 100)
    r = v.routes[0]
    assert r.typed_per_filter_config["fault2"].abort.http_status == 418
    assert r.typed_per_filter_config["router"] is None
    assert 'virtual_hosts[0].routes[0].typed_per_filter_config["router"]' in out.unsupported


def test_domains_validation() -> None:
    rc = route_config()
    rc.virtual_hosts[0].ClearField("domains")
    invalid(parse, rc, "virtual_hosts[0].domains", reason="at least one")
    rc = route_config()
    rc.virtual_hosts[0].domains[:] = ["a.*.com", ""]  # accepted, as Envoy does
    assert parse(rc).virtual_hosts[0].domains == ("a.*.com", "")
    rc = route_config()
    vh = rc.virtual_hosts.add(name="dup", domains=["x.com", "*"])
    vh.routes.add().match.prefix = "/"
    vh.routes[0].route.cluster = "c"
    invalid(parse, rc, "virtual_hosts[1].domains[1]", reason="unique")


def test_domains_lower_cased() -> None:
    rc = route_config()
    rc.virtual_hosts[0].domains[:] = ["API.Example.com:8080", "*.Example.com"]
    assert parse(rc).virtual_hosts[0].domains == ("api.example.com:8080", "*.example.com")


def test_unsupported_fields_recorded_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    _warnings.reset()  # outside an xDS client: once per resource and field per process
    rc = route_config("warn-rc")
    rc.virtual_hosts[0].require_tls = rc_pb2.VirtualHost.ALL
    rc.virtual_hosts[0].cors.SetInParent()
    first_route(rc).route.priority = 1
    first_route(rc).decorator.operation = "op"
    with caplog.at_level(logging.WARNING, logger="pymesh.xds"):
        out = parse(rc)
        parse(rc)
    assert set(out.unsupported) == {
        "virtual_hosts[0].require_tls",
        "virtual_hosts[0].cors",
        "virtual_hosts[0].routes[0].route.priority",
        "virtual_hosts[0].routes[0].decorator",
    }
    priority_logs = [r for r in caplog.records if "route.priority" in r.getMessage()]
    assert len(priority_logs) == 1
    assert "warn-rc" in priority_logs[0].getMessage()


def test_filter_action_and_matcher_nack() -> None:
    rc = route_config()
    first_route(rc).filter_action.SetInParent()
    invalid(parse, rc, "virtual_hosts[0].routes[0].filter_action")
    rc = route_config()
    rc.virtual_hosts[0].matcher.SetInParent()
    invalid(parse, rc, "virtual_hosts[0].matcher")


def test_empty_name_nacks() -> None:
    invalid(parse, route_config(name=""), "name")


def test_pack_roundtrip_is_equal() -> None:
    rc = route_config()
    a = pack(rc)
    from envoy.config.route.v3 import route_pb2

    back = route_pb2.RouteConfiguration()
    a.Unpack(back)
    assert parse(back) == parse(rc)


def test_parsed_but_not_enforced_fields_are_reported() -> None:
    """idle_timeout and hedge_policy.initial_requests > 1 parse (and validate) but the
    request path does not act on them: they are reported, never silently ignored.
    hedge_on_per_try_timeout and per_try_idle_timeout are honoured: not reported."""
    from envoy.config.route.v3 import route_pb2

    from pymesh.xds.resources.route import parse_route_configuration

    rc = route_pb2.RouteConfiguration(name="rc")
    vh = rc.virtual_hosts.add(name="vh", domains=["*"])
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = "c"
    r.route.idle_timeout.FromSeconds(5)
    r.route.hedge_policy.hedge_on_per_try_timeout = True
    r.route.hedge_policy.initial_requests.value = 2
    r.route.retry_policy.retry_on = "5xx"
    r.route.retry_policy.per_try_idle_timeout.FromSeconds(1)
    out = parse_route_configuration(rc)
    assert set(out.unsupported) == {
        "virtual_hosts[0].routes[0].route.idle_timeout",
        "virtual_hosts[0].routes[0].route.hedge_policy.initial_requests",
    }


def _retry_rc(retry_on: str) -> Any:
    rc = route_config()
    first_route(rc).route.retry_policy.retry_on = retry_on
    return rc


def test_unknown_retry_on_tokens_are_warned_and_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        _warnings, "report", lambda kind, name, path, note="": seen.append((path, note))
    )
    out = _action(_retry_rc("5xx, bogus ,unavailable,http3-post-connect-failure,5XX"))
    assert out.retry_policy is not None
    assert out.retry_policy.retry_on == frozenset({"5xx", "unavailable"})
    assert seen == [
        (
            "virtual_hosts[0].routes[0].route.retry_policy.retry_on",
            "unknown condition(s) 5XX, bogus (Envoy ignores them too); condition(s) "
            "http3-post-connect-failure not implemented by pymesh; ignored",
        )
    ]
    seen.clear()
    every = ",".join(sorted(RETRY_ON_HTTP | RETRY_ON_GRPC))
    out = _action(_retry_rc(every))
    assert out.retry_policy is not None
    assert out.retry_policy.retry_on == RETRY_ON_HTTP | RETRY_ON_GRPC
    assert seen == []


def test_retry_on_names_match_the_retry_decider() -> None:
    """The parser's list of implemented conditions is the retry decider's: each name it
    keeps makes the decider retry something it otherwise would not, and the gRPC names
    are the decider's own table."""
    from pymesh.resilience.outcome import Outcome
    from pymesh.resilience.retry import GRPC_RETRY_ON, RetryDecider
    from pymesh.xds.resources.matchers import HeaderMatcher
    from pymesh.xds.resources.route import RetryPolicy

    outcomes = [
        Outcome.failure(connect_failure=True),
        Outcome.failure(reset=True),
        Outcome.failure(refused_stream=True),
        Outcome.response(500, {}),
        Outcome.response(503, {}),
        Outcome.response(409, {}),
        Outcome.response(418, {}),
        Outcome.response(200, {"x-retry": "1"}),
        Outcome.response(429, {"x-envoy-ratelimited": "true"}),
    ]

    def retried(on: frozenset[str]) -> set[int]:
        decider = RetryDecider(
            RetryPolicy(
                retry_on=on,
                retriable_status_codes=frozenset({418}),
                retriable_headers=(HeaderMatcher("x-retry", present_match=True),),
            )
        )
        return {i for i, o in enumerate(outcomes) if decider.should_retry(o) is not None}

    assert retried(frozenset()) == set()
    for name in sorted(RETRY_ON_HTTP):
        assert retried(frozenset({name})), f"{name!r} is parsed but the decider ignores it"
    assert frozenset(GRPC_RETRY_ON) == RETRY_ON_GRPC


def test_retry_after_seconds_header_is_honoured_without_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        _warnings, "report", lambda kind, name, path, note="": seen.append((path, note))
    )
    rc = _retry_rc("5xx")
    rl = first_route(rc).route.retry_policy.rate_limited_retry_back_off
    rl.reset_headers.add(name="Retry-After")  # SECONDS
    rl.reset_headers.add(name="X-RateLimit-Reset", format=1)  # UNIX_TIMESTAMP
    out = _action(rc)
    assert out.retry_policy is not None and out.retry_policy.rate_limited_back_off is not None
    assert out.retry_policy.rate_limited_back_off.reset_headers == (
        ("retry-after", "SECONDS"),
        ("x-ratelimit-reset", "UNIX_TIMESTAMP"),
    )
    # Both Retry-After forms are read (tests/resilience/test_retry_decider.py).
    assert seen == []
