"""The field table: every field pymesh parses is honoured, warned or NACKed, by machine.

The descriptor walk fails when xds-protos has a field (or enum value) the table does not
classify; the parser tests show that the parsers follow the table (it decides).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from _resbuild import cla, eds_cluster, hcm, listener, route_config
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from pymesh.errors import ResourceInvalid
from pymesh.xds.resources import (
    _fields,
    _warnings,
    parse_cluster,
    parse_cluster_load_assignment,
    parse_listener,
    parse_route_configuration,
)
from pymesh.xds.resources._fields import TABLE, Status, check_table, walk
from pymesh.xds.resources.listener import parse_lds_listener

CLUSTER = "envoy.config.cluster.v3.Cluster"


def test_every_reachable_field_is_classified() -> None:
    assert check_table() == []


def test_walk_reaches_the_messages_pymesh_parses() -> None:
    keys = {key for _, key in walk().order}
    for expected in (
        "envoy.config.listener.v3.Listener",
        _fields.HCM,
        _fields.ROUTER,
        _fields.FAULT,
        "envoy.config.route.v3.RouteConfiguration",
        "envoy.config.route.v3.RouteAction",
        "envoy.config.route.v3.RetryPolicy",
        "envoy.config.route.v3.RetryPolicy.RetryHostPredicate",
        CLUSTER,
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds",
        "envoy.config.cluster.v3.OutlierDetection",
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
        "envoy.config.core.v3.DataSource@tls",
        "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
        "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash",
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "envoy.config.endpoint.v3.LbEndpoint",
        _fields.STATEFUL_SESSION,
        _fields.COOKIE_SESSION_STATE,
    ):
        assert expected in keys
    # Every table entry is reached, and nothing is reached that has no entry.
    assert keys == set(TABLE)


def _without(key: str, field: str) -> dict[str, dict[str, _fields.Field]]:
    table = copy.deepcopy(TABLE)
    del table[key][field]
    return table


def test_deleting_a_table_entry_fails_the_check() -> None:
    problems = check_table(_without(CLUSTER, "connect_timeout"))
    assert problems == [f"{CLUSTER}.connect_timeout: field is not classified"]


def test_deleting_an_enum_value_fails_the_check() -> None:
    table = copy.deepcopy(TABLE)
    values = dict(table[CLUSTER]["lb_policy"].values or {})
    del values["MAGLEV"]
    table[CLUSTER]["lb_policy"] = _fields.H(values=values)
    assert check_table(table) == [f"{CLUSTER}.lb_policy: enum value MAGLEV is not classified"]


def test_a_field_that_no_longer_exists_fails_the_check() -> None:
    table = copy.deepcopy(TABLE)
    table[CLUSTER]["retired_field"] = _fields.W("gone")
    assert check_table(table) == [f"{CLUSTER}.retired_field: classified but no longer exists"]


def test_a_missing_or_unreachable_message_fails_the_check() -> None:
    table = copy.deepcopy(TABLE)
    del table["envoy.config.cluster.v3.OutlierDetection"]
    assert check_table(table) == [
        "envoy.config.cluster.v3.OutlierDetection: message is parsed but has no table entry"
    ]
    table = copy.deepcopy(TABLE)
    table["envoy.config.core.v3.Pipe"] = {"path": _fields.H(), "mode": _fields.H()}
    assert check_table(table) == [
        "envoy.config.core.v3.Pipe: table entry is not reachable from the roots"
    ]


def test_an_honoured_any_needs_its_types() -> None:
    table = copy.deepcopy(TABLE)
    table["envoy.config.core.v3.TransportSocket"]["typed_config"] = _fields.H("x")
    problems = check_table(table)
    assert problems[0] == (
        "envoy.config.core.v3.TransportSocket.typed_config: an Any field pymesh reads needs "
        "any_types"
    )
    # ... and what only it reached is now unreachable, so that is reported too.
    assert (
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext: table entry is not "
        "reachable from the roots"
    ) in problems


def test_counts_cover_every_field() -> None:
    counts = _fields.counts()
    assert set(counts) == {"Honoured", "Warn", "NACK"}
    assert sum(counts.values()) == sum(len(f) for f in TABLE.values())
    assert all(n > 0 for n in counts.values())


# ---------------------------------------------------------------- the table decides

Mutate = Callable[[Any], None]


def _listener_with(mutate: Mutate) -> Any:
    h = hcm()
    mutate(h)
    return listener(h)


def _router_with(mutate: Mutate) -> Any:
    h = hcm()
    r = router_pb2.Router()
    mutate(r)
    h.http_filters[0].typed_config.Pack(r)
    return listener(h)


def _fault_with(mutate: Mutate) -> Any:
    h = hcm()
    router = h.http_filters.pop()
    f = fault_pb2.HTTPFault()
    f.abort.http_status = 503
    mutate(f)
    h.http_filters.add(name="fault").typed_config.Pack(f)
    h.http_filters.append(router)
    return listener(h)


def _rc_with(get: Callable[[Any], Any]) -> Callable[[Mutate], Any]:
    def make(mutate: Mutate) -> Any:
        rc = route_config()
        mutate(get(rc))
        return rc

    return make


def _weighted(rc: Any) -> Any:
    action = rc.virtual_hosts[0].routes[0].route
    action.weighted_clusters.clusters.add(name="a").weight.value = 1
    return action.weighted_clusters


def _cluster_with(get: Callable[[Any], Any]) -> Callable[[Mutate], Any]:
    def make(mutate: Mutate) -> Any:
        c = eds_cluster()
        mutate(get(c))
        return c

    return make


def _packed_in_cluster(cls: Any, put: Callable[[Any, Any], None]) -> Callable[[Mutate], Any]:
    def make(mutate: Mutate) -> Any:
        c = eds_cluster()
        m = cls()
        mutate(m)
        put(c, m)
        return c

    return make


def _lb(c: Any, m: Any) -> None:
    c.load_balancing_policy.policies.add().typed_extension_config.typed_config.Pack(m)


def _tls(get: Callable[[Any], Any]) -> Callable[[Mutate], Any]:
    def make(mutate: Mutate) -> Any:
        c = eds_cluster()
        utc = tls_pb2.UpstreamTlsContext()
        utc.common_tls_context.validation_context.ca_certificate_provider_instance.instance_name = (
            "ca"
        )
        mutate(get(utc))
        c.transport_socket.name = "tls"
        c.transport_socket.typed_config.Pack(utc)
        return c

    return make


def _cla_with(get: Callable[[Any], Any]) -> Callable[[Mutate], Any]:
    def make(mutate: Mutate) -> Any:
        m = cla()
        mutate(get(m))
        return m

    return make


_HCM = "api_listener.api_listener"
_ROUTE = "virtual_hosts[0].routes[0]"
_UTC = "transport_socket.typed_config"
_LB = "load_balancing_policy.policies[0].typed_extension_config.typed_config"
_HPO = 'typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]'

# table key → (build a resource mutating that message, parser, path of the message)
CASES: dict[str, tuple[Callable[[Mutate], Any], Callable[[Any], Any], str]] = {
    _fields.HCM: (_listener_with, parse_listener, _HCM),
    _fields.ROUTER: (_router_with, parse_listener, f"{_HCM}.http_filters[0].typed_config"),
    _fields.FAULT: (_fault_with, parse_listener, f"{_HCM}.http_filters[0].typed_config"),
    "envoy.config.route.v3.RouteConfiguration": (
        _rc_with(lambda rc: rc),
        parse_route_configuration,
        "",
    ),
    "envoy.config.route.v3.VirtualHost": (
        _rc_with(lambda rc: rc.virtual_hosts[0]),
        parse_route_configuration,
        "virtual_hosts[0]",
    ),
    "envoy.config.route.v3.Route": (
        _rc_with(lambda rc: rc.virtual_hosts[0].routes[0]),
        parse_route_configuration,
        _ROUTE,
    ),
    "envoy.config.route.v3.RouteMatch": (
        _rc_with(lambda rc: rc.virtual_hosts[0].routes[0].match),
        parse_route_configuration,
        f"{_ROUTE}.match",
    ),
    "envoy.config.route.v3.RouteAction": (
        _rc_with(lambda rc: rc.virtual_hosts[0].routes[0].route),
        parse_route_configuration,
        f"{_ROUTE}.route",
    ),
    "envoy.config.route.v3.RetryPolicy": (
        _rc_with(lambda rc: rc.virtual_hosts[0].routes[0].route.retry_policy),
        parse_route_configuration,
        f"{_ROUTE}.route.retry_policy",
    ),
    "envoy.config.route.v3.WeightedCluster": (
        _rc_with(_weighted),
        parse_route_configuration,
        f"{_ROUTE}.route.weighted_clusters",
    ),
    "envoy.config.route.v3.WeightedCluster.ClusterWeight": (
        _rc_with(lambda rc: _weighted(rc).clusters[0]),
        parse_route_configuration,
        f"{_ROUTE}.route.weighted_clusters.clusters[0]",
    ),
    CLUSTER: (_cluster_with(lambda c: c), parse_cluster, ""),
    "envoy.config.cluster.v3.OutlierDetection": (
        _cluster_with(lambda c: c.outlier_detection),
        parse_cluster,
        "outlier_detection",
    ),
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds": (
        _cluster_with(lambda c: c.circuit_breakers.thresholds.add()),
        parse_cluster,
        "circuit_breakers.thresholds[0]",
    ),
    "envoy.config.cluster.v3.Cluster.CommonLbConfig": (
        _cluster_with(lambda c: c.common_lb_config),
        parse_cluster,
        "common_lb_config",
    ),
    "envoy.config.core.v3.Http2ProtocolOptions": (
        _cluster_with(lambda c: c.http2_protocol_options),
        parse_cluster,
        "http2_protocol_options",
    ),
    "envoy.config.core.v3.Http1ProtocolOptions": (
        _cluster_with(lambda c: c.http_protocol_options),
        parse_cluster,
        "http_protocol_options",
    ),
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": (
        _packed_in_cluster(
            http_protocol_options_pb2.HttpProtocolOptions,
            lambda c, m: c.typed_extension_protocol_options[
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
            ].Pack(m),
        ),
        parse_cluster,
        _HPO,
    ),
    "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin": (
        _packed_in_cluster(round_robin_pb2.RoundRobin, _lb),
        parse_cluster,
        _LB,
    ),
    "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest": (
        _packed_in_cluster(least_request_pb2.LeastRequest, _lb),
        parse_cluster,
        _LB,
    ),
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": (
        _tls(lambda utc: utc),
        parse_cluster,
        _UTC,
    ),
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": (
        _tls(lambda utc: utc.common_tls_context),
        parse_cluster,
        f"{_UTC}.common_tls_context",
    ),
    "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": (
        _tls(lambda utc: utc.common_tls_context.validation_context),
        parse_cluster,
        f"{_UTC}.common_tls_context.validation_context",
    ),
    "envoy.config.endpoint.v3.ClusterLoadAssignment": (
        _cla_with(lambda m: m),
        parse_cluster_load_assignment,
        "",
    ),
    "envoy.config.endpoint.v3.LocalityLbEndpoints": (
        _cla_with(lambda m: m.endpoints[0]),
        parse_cluster_load_assignment,
        "endpoints[0]",
    ),
    "envoy.config.endpoint.v3.LbEndpoint": (
        _cla_with(lambda m: m.endpoints[0].lb_endpoints[0]),
        parse_cluster_load_assignment,
        "endpoints[0].lb_endpoints[0]",
    ),
    "envoy.config.endpoint.v3.Endpoint": (
        _cla_with(lambda m: m.endpoints[0].lb_endpoints[0].endpoint),
        parse_cluster_load_assignment,
        "endpoints[0].lb_endpoints[0].endpoint",
    ),
    "envoy.config.endpoint.v3.ClusterLoadAssignment.Policy": (
        _cla_with(lambda m: m.policy),
        parse_cluster_load_assignment,
        "policy",
    ),
}


def _set_some_value(msg: Any, fd: Any) -> None:
    """Set ``fd`` of ``msg`` to a non-default value (what a control plane might send)."""
    value: Any
    if fd.message_type is not None:
        container = getattr(msg, fd.name)
        if fd.message_type.GetOptions().map_entry:
            val = fd.message_type.fields_by_name["value"]
            if val.message_type is None:
                container["k"] = "v" if val.type == val.TYPE_STRING else 1
            elif val.message_type.full_name == "google.protobuf.Any":
                container["k"].Pack(route_components_pb2.FilterConfig())
            else:
                container["k"].SetInParent()
        elif fd.is_repeated:
            container.add()
        elif fd.message_type.full_name == "google.protobuf.Any":
            container.Pack(route_components_pb2.FilterConfig())
        elif fd.message_type.full_name == "google.protobuf.Duration":
            container.seconds = 1
        elif fd.message_type.full_name in ("google.protobuf.BoolValue",):
            container.value = True
        elif fd.message_type.full_name.startswith("google.protobuf.") and (
            "Value" in fd.message_type.full_name
        ):
            container.value = 1
        else:
            container.SetInParent()
        return
    if fd.enum_type is not None:
        value = fd.enum_type.values[1].number if len(fd.enum_type.values) > 1 else 0
    elif fd.type == fd.TYPE_BOOL:
        value = True
    elif fd.type == fd.TYPE_STRING:
        value = "x"
    elif fd.type == fd.TYPE_BYTES:
        value = b"x"
    elif fd.type in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
        value = 1.0
    else:
        value = 1
    if fd.is_repeated:
        getattr(msg, fd.name).append(value)
    else:
        setattr(msg, fd.name, value)


def _params() -> list[Any]:
    out = []
    for key, (make, parser, prefix) in CASES.items():
        desc = _fields._descriptor(key)
        for name, f in TABLE[key].items():
            if f.status is Status.HONOURED and not f.inert:
                continue  # honoured fields are exercised by the parser tests
            fd = desc.fields_by_name[name]
            out.append(pytest.param(key, fd, f, make, parser, prefix, id=f"{key}.{name}"))
    return out


@pytest.mark.parametrize(("key", "fd", "f", "make", "parser", "prefix"), _params())
def test_the_parser_follows_the_table(
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    fd: Any,
    f: _fields.Field,
    make: Callable[[Mutate], Any],
    parser: Callable[[Any], Any],
    prefix: str,
) -> None:
    """Set one warned / NACKed / inert field on a valid resource: the parser does what the
    table says (a warning naming the field, a NACK at the field, or nothing)."""
    reported: list[tuple[str, str]] = []
    monkeypatch.setattr(
        _warnings, "report", lambda kind, name, path, note="": reported.append((path, note))
    )
    resource = make(lambda m: _set_some_value(m, fd))
    path = f"{prefix}.{fd.name}" if prefix else fd.name
    if f.status is Status.NACKED:
        with pytest.raises(ResourceInvalid) as ei:
            parser(resource)
        if fd.containing_oneof is not None:
            # Setting it cleared its oneof siblings: the parser may fail at the parent
            # ("no path specifier") or at the sibling it needed ("endpoint is required").
            assert ei.value.field.startswith(prefix), ei.value
        else:
            assert ei.value.field.startswith(path), ei.value
        return
    parser(resource)
    paths = [p for p, _ in reported]
    if f.status is Status.WARNED:
        assert any(p == path or p.startswith(path + "[") for p in paths), reported
        assert all(n for p, n in reported if p == path), "a warning says what pymesh does"
    else:  # inert: accepted silently
        assert not any(p.startswith(path) for p in paths), reported


def test_changing_the_table_changes_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """One table decides: reclassifying a field changes what the parser does."""
    rc = route_config()
    rc.virtual_hosts[0].cors.SetInParent()
    assert parse_route_configuration(rc).unsupported == ("virtual_hosts[0].cors",)
    vhost = dict(TABLE["envoy.config.route.v3.VirtualHost"])
    vhost["cors"] = _fields.N("CORS must not be ignored here")
    monkeypatch.setitem(TABLE, "envoy.config.route.v3.VirtualHost", vhost)
    with pytest.raises(ResourceInvalid) as ei:
        parse_route_configuration(rc)
    assert (ei.value.field, ei.value.reason) == (
        "virtual_hosts[0].cors",
        "cors is not supported: CORS must not be ignored here",
    )


def test_an_unknown_field_is_warned_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A field missing from the table (a newer xds-protos) is reported, never silent."""
    c = eds_cluster()
    c.alt_stat_name = "stats"
    assert parse_cluster(c).unsupported == ()
    cluster = dict(TABLE[CLUSTER])
    del cluster["alt_stat_name"]
    monkeypatch.setitem(TABLE, CLUSTER, cluster)
    assert parse_cluster(c).unsupported == ("alt_stat_name",)


# ---------------------------------------------------------------- every entry is consulted


def _kitchen_sink_listeners() -> list[Any]:
    from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2
    from envoy.extensions.http.stateful_session.cookie.v3 import cookie_pb2

    h = hcm()
    router = h.http_filters.pop()
    f = fault_pb2.HTTPFault()
    f.delay.header_delay.SetInParent()
    f.delay.percentage.numerator = 10
    f.abort.header_abort.SetInParent()
    hm = f.headers.add(name="x-fault")
    hm.string_match.safe_regex.regex = "on|yes"
    f.headers.add(name="x-n").range_match.end = 10
    h.http_filters.add(name="fault").typed_config.Pack(f)
    state = cookie_pb2.CookieBasedSessionState()
    state.cookie.name = "session"
    state.cookie.attributes.add(name="SameSite", value="Strict")
    session = stateful_session_pb2.StatefulSession()
    session.session_state.name = "cookie"
    session.session_state.typed_config.Pack(state)
    h.http_filters.add(name="session").typed_config.Pack(session)
    h.http_filters.add(name="rbac").typed_config.Pack(_kitchen_sink_rbac())
    h.http_filters.append(router)
    h.common_http_protocol_options.max_stream_duration.FromSeconds(5)
    h2 = hcm()
    h2.rds.config_source.ClearField("ads")
    h2.rds.config_source.self.SetInParent()
    f2 = fault_pb2.HTTPFault()
    f2.abort.http_status = 503
    h2.http_filters.insert(0, h2.http_filters[0].__class__(name="fault"))
    h2.http_filters[0].typed_config.Pack(f2)
    return [listener(h), listener(h2, name="other:80"), _kitchen_sink_server_listener()]


def _kitchen_sink_server_listener() -> Any:
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    lis = listener_pb2.Listener(name="grpc/server?a=127.0.0.1:1")
    lis.address.socket_address.address = "127.0.0.1"
    lis.address.socket_address.port_value = 1
    fc = lis.filter_chains.add(name="fc")
    fc.filter_chain_match.prefix_ranges.add(address_prefix="127.0.0.0").prefix_len.value = 8
    fc.filters.add(name="hcm").typed_config.Pack(hcm())
    d = tls_pb2.DownstreamTlsContext()
    d.common_tls_context.tls_certificate_provider_instance.instance_name = "default"
    d.common_tls_context.validation_context.ca_certificate_provider_instance.instance_name = "d"
    d.require_client_certificate.value = True
    fc.transport_socket.name = "tls"
    fc.transport_socket.typed_config.Pack(d)
    return lis


def _kitchen_sink_rbac() -> Any:
    """An RBAC filter config using every RBAC message pymesh parses."""
    from envoy.config.rbac.v3 import rbac_pb2 as config_rbac_pb2
    from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

    r = rbac_pb2.RBAC()
    r.rules.action = config_rbac_pb2.RBAC.DENY
    lc = r.rules.audit_logging_options.logger_configs.add(is_optional=True)
    lc.audit_logger.name = "stdout"
    p = r.rules.policies["p"]
    perm = p.permissions.add()
    rules = perm.and_rules.rules
    rules.add().url_path.path.exact = "/x"
    rules.add().destination_ip.address_prefix = "10.0.0.0"
    rng = rules.add().destination_port_range
    rng.start, rng.end = 1, 2
    rules.add().not_rule.metadata.invert = True
    rules.add().header.name = ":method"
    princ = p.principals.add()
    ids = princ.or_ids.ids
    ids.add().authenticated.principal_name.exact = "spiffe://x"
    ids.add().source_ip.address_prefix = "::1"
    return r


def _kitchen_sink_routes() -> Any:
    from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2
    from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

    rc = route_config()
    vh = rc.virtual_hosts[0]
    r = vh.routes[0]
    r.match.headers.add(name="x-h").exact_match = "v"
    r.match.query_parameters.add(name="q").string_match.prefix = "a"
    r.match.runtime_fraction.default_value.numerator = 50
    r.match.grpc.SetInParent()
    a = r.route
    a.ClearField("cluster")
    cw = a.weighted_clusters.clusters.add(name="c")
    cw.weight.value = 1
    add = cw.request_headers_to_add.add()
    add.header.key, add.header.value = "x-a", "1"
    wrapper = route_components_pb2.FilterConfig()
    wrapper.config.Pack(fault_pb2.HTTPFault())
    cw.typed_per_filter_config["fault"].Pack(wrapper)
    cw.typed_per_filter_config["session"].Pack(
        stateful_session_pb2.StatefulSessionPerRoute(disabled=True)
    )
    from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

    cw.typed_per_filter_config["rbac"].Pack(rbac_pb2.RBACPerRoute(rbac=_kitchen_sink_rbac()))
    a.regex_rewrite.pattern.regex = "^/x"
    a.regex_rewrite.substitution = "/"
    a.hash_policy.add().header.header_name = "x-user"
    a.hash_policy.add().cookie.name = "c"
    a.hash_policy.add().connection_properties.source_ip = True
    a.hash_policy.add().query_parameter.name = "u"
    a.hash_policy.add().filter_state.key = "k"
    rp = a.retry_policy
    rp.retry_on = "5xx"
    rp.retry_back_off.base_interval.FromMilliseconds(10)
    rp.rate_limited_retry_back_off.reset_headers.add(name="x-reset")
    pred = rp.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts")
    pred.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    a.hedge_policy.hedge_on_per_try_timeout = True
    a.request_mirror_policies.add(cluster="m")
    a.max_stream_duration.grpc_timeout_header_max.FromSeconds(1)
    d = vh.routes.add()
    d.match.path = "/d"
    d.direct_response.status = 200
    d.direct_response.body.inline_string = "ok"
    red = vh.routes.add()
    red.match.prefix = "/r"
    red.redirect.host_redirect = "example.com"
    nf = vh.routes.add()
    nf.match.prefix = "/nf"
    nf.non_forwarding_action.SetInParent()
    return rc


def _kitchen_sink_clusters() -> list[Any]:
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
    from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (
        client_side_weighted_round_robin_pb2 as cswrr_pb2,
    )
    from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
    from envoy.extensions.load_balancing_policies.pick_first.v3 import pick_first_pb2
    from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
    from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
    from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
    from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
    from udpa.type.v1 import typed_struct_pb2 as udpa_ts_pb2
    from xds.type.v3 import typed_struct_pb2

    out = []
    c = eds_cluster("full")
    t = c.circuit_breakers.thresholds.add()
    t.max_requests.value = 10
    t.retry_budget.budget_percent.value = 10
    c.outlier_detection.consecutive_5xx.value = 3
    c.common_lb_config.healthy_panic_threshold.value = 10
    c.common_lb_config.override_host_status.statuses.append(1)  # HEALTHY
    c.common_lb_config.locality_weighted_lb_config.SetInParent()
    c.http2_protocol_options.SetInParent()
    c.common_http_protocol_options.idle_timeout.FromSeconds(10)
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    opts.explicit_http_config.http_protocol_options.SetInParent()
    c.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Pack(opts)
    c.http_protocol_options.SetInParent()
    c.dns_failure_refresh_rate.base_interval.FromSeconds(1)
    c.lb_policy = cluster_pb2.Cluster.RING_HASH
    c.ring_hash_lb_config.minimum_ring_size.value = 1024
    utc = tls_pb2.UpstreamTlsContext(sni="x")
    ctc = utc.common_tls_context
    ctc.tls_params.cipher_suites.append("ECDHE-RSA-AES128-GCM-SHA256")
    cert = ctc.tls_certificates.add()
    cert.certificate_chain.filename = "cert.pem"
    cert.private_key.filename = "key.pem"
    ctc.tls_certificate_provider_instance.instance_name = "id"
    vc = ctc.validation_context
    vc.trusted_ca.filename = "ca.pem"
    vc.ca_certificate_provider_instance.instance_name = "ca"
    san = vc.match_typed_subject_alt_names.add(san_type=2)
    san.matcher.exact = "a.example"
    c.transport_socket.name = "tls"
    c.transport_socket.typed_config.Pack(utc)
    out.append(c)

    c = eds_cluster("combined")
    utc = tls_pb2.UpstreamTlsContext()
    ctc = utc.common_tls_context
    ctc.tls_certificate_certificate_provider_instance.instance_name = "id"
    ctc.combined_validation_context.default_validation_context.SetInParent()
    ctc.combined_validation_context.validation_context_certificate_provider_instance.instance_name = "ca"  # noqa: E501
    c.transport_socket.name = "tls"
    c.transport_socket.typed_config.Pack(utc)
    out.append(c)

    c = eds_cluster("raw")
    c.transport_socket.name = "raw"
    c.transport_socket.typed_config.Pack(raw_buffer_pb2.RawBuffer())
    c.lb_policy = cluster_pb2.Cluster.MAGLEV
    c.maglev_lb_config.table_size.value = 65537
    out.append(c)

    c = eds_cluster("lr")
    c.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    c.least_request_lb_config.active_request_bias.default_value = 0.5
    c.least_request_lb_config.slow_start_config.slow_start_window.FromSeconds(5)
    out.append(c)

    c = eds_cluster("rr-slow")
    ss = c.round_robin_lb_config.slow_start_config
    ss.slow_start_window.FromSeconds(5)
    ss.aggression.default_value = 2.0
    ss.min_weight_percent.value = 20.0
    out.append(c)

    rr_slow = round_robin_pb2.RoundRobin()
    rr_slow.slow_start_config.slow_start_window.FromSeconds(5)

    peak = typed_struct_pb2.TypedStruct(type_url="pymesh.lb.v1.PeakEwma")
    udpa_peak = udpa_ts_pb2.TypedStruct(type_url="pymesh.lb.v1.PeakEwma")
    wl = wrr_locality_pb2.WrrLocality()
    wl.endpoint_picking_policy.policies.add().typed_extension_config.typed_config.Pack(
        round_robin_pb2.RoundRobin()
    )
    for i, policy in enumerate(
        (
            round_robin_pb2.RoundRobin(),
            least_request_pb2.LeastRequest(),
            random_pb2.Random(),
            ring_hash_pb2.RingHash(),
            maglev_pb2.Maglev(),
            pick_first_pb2.PickFirst(),
            wl,
            peak,
            udpa_peak,
            cswrr_pb2.ClientSideWeightedRoundRobin(),
            rr_slow,
        )
    ):
        c = eds_cluster(f"policy{i}")
        c.load_balancing_policy.policies.add().typed_extension_config.typed_config.Pack(policy)
        out.append(c)

    c = eds_cluster("agg")
    c.ClearField("type")
    c.cluster_type.name = "envoy.clusters.aggregate"
    c.cluster_type.typed_config.Pack(aggregate_pb2.ClusterConfig(clusters=["a", "b"]))
    out.append(c)

    c = eds_cluster("static")
    c.type = cluster_pb2.Cluster.STATIC
    c.ClearField("eds_cluster_config")
    c.load_assignment.CopyFrom(cla("static"))
    out.append(c)
    return out


def _kitchen_sink_cla() -> Any:
    m = cla("c", 8080)
    m.endpoints[0].locality.zone = "z"
    drop = m.policy.drop_overloads.add(category="lb")
    drop.drop_percentage.numerator = 1
    return m


def test_every_table_entry_is_consulted_by_a_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing resources that use every parsed message consults every table entry: no
    message is parsed past the table."""
    from pymesh.xds.resources import _common, _parse_endpoint

    seen: set[str] = set()
    check = _common.Ctx.check

    def recording(self: Any, msg: Any, path: str, key: str | None = None) -> None:
        seen.add(key or msg.DESCRIPTOR.full_name)
        check(self, msg, path, key)

    class Consulted(dict[str, Any]):
        """The per-type cache behind ``is_plain`` (the per-endpoint pre-test): every
        lookup of a type there consults the table for it."""

        def get(self, key: str, default: Any = None) -> Any:
            seen.add(key)
            return super().get(key, default)

    monkeypatch.setattr(_common.Ctx, "check", recording)
    monkeypatch.setattr(_common, "_PLAIN", Consulted())
    monkeypatch.setattr(_parse_endpoint, "_PLAIN_TYPES", [])
    for lis in _kitchen_sink_listeners():
        parse_lds_listener(lis)
    parse_route_configuration(_kitchen_sink_routes())
    for c in _kitchen_sink_clusters():
        parse_cluster(c)
    parse_cluster_load_assignment(_kitchen_sink_cla())
    assert sorted(set(TABLE) - seen) == []
