"""Mesh file → Snapshot: golden-ish checks on the produced protobufs, and friendly errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2

from pymesh.errors import ConfigFileError
from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Snapshot,
    compile_mesh,
    compile_text,
    load_config_file,
)
from pymesh.server.config_file import parse_duration

FULL = """\
services:
  reviews:
    port: 9080
    versions:
      v1: {endpoints: ["127.0.0.1:8001", "127.0.0.1:8002"]}
      v2:
        endpoints:
          - {address: "127.0.0.1:8003", locality: us/east-1/a, weight: 3, priority: 1}
          - {address: "10.0.0.9", health: DRAINING}
    routes:
      - name: jason
        match: {prefix: /api, headers: {end-user: {exact: jason}, x-dbg: {present: true}},
                query: {debug: present, mode: {regex: "a+"}}}
        split: {v2: 100}
        timeout: 2s
        retries: {attempts: 3, on: "5xx,reset", per_try_timeout: 500ms,
                  backoff: {base: 25ms, max: 1s}}
        fault: {abort: {status: 503, percent: 10}, delay: {fixed: 100ms, percent: 0.5}}
      - split: {v1: 90, v2: 10, ratings: 5}
    traffic_policy:
      lb: RING_HASH
      hash_on: {header: x-user}
      outlier_detection: {consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s,
                          max_ejection_percent: 50}
      circuit_breakers: {max_requests: 100, max_pending_requests: 100, max_retries: 3}
      tls: {mode: ISTIO_MUTUAL}
  ratings:
    port: 9090
    protocol: grpc
    endpoints: ["127.0.0.1:7000", "[::1]:7001"]
raw:
  clusters:
    - name: extra
      type: STATIC
      connect_timeout: 1s
"""


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    return compile_text(FULL, "mesh.yaml")


def hcm_of(lis: listener_pb2.Listener) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    assert lis.api_listener.api_listener.Unpack(hcm)
    return hcm


def test_names_follow_istio(snap: Snapshot) -> None:
    assert sorted(snap.get(LISTENER_TYPE)) == ["ratings:9090", "reviews:9080"]
    assert sorted(snap.get(ROUTE_TYPE)) == ["ratings:9090", "reviews:9080"]
    assert sorted(snap.get(CLUSTER_TYPE)) == [
        "extra",
        "outbound|9080|v1|reviews",
        "outbound|9080|v2|reviews",
        "outbound|9080||reviews",
        "outbound|9090||ratings",
    ]
    assert sorted(snap.get(ENDPOINT_TYPE)) == [
        "outbound|9080|v1|reviews",
        "outbound|9080|v2|reviews",
        "outbound|9080||reviews",
        "outbound|9090||ratings",
    ]


def test_listener_is_api_listener_with_rds_over_ads(snap: Snapshot) -> None:
    hcm = hcm_of(snap.get(LISTENER_TYPE)["reviews:9080"])  # type: ignore[arg-type, unused-ignore]
    assert hcm.rds.route_config_name == "reviews:9080"
    assert hcm.rds.config_source.HasField("ads")
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    assert hcm.http_filters[-1].typed_config.type_url.endswith("router.v3.Router")
    # No faults configured: router only.
    plain = hcm_of(snap.get(LISTENER_TYPE)["ratings:9090"])  # type: ignore[arg-type, unused-ignore]
    assert [f.name for f in plain.http_filters] == ["envoy.filters.http.router"]


def test_route_config(snap: Snapshot) -> None:
    rc = snap.get(ROUTE_TYPE)["reviews:9080"]
    assert isinstance(rc, route_pb2.RouteConfiguration)
    (vh,) = rc.virtual_hosts
    assert list(vh.domains) == ["reviews", "reviews:9080"]
    first, second = vh.routes
    assert first.name == "jason"
    assert first.match.prefix == "/api"
    headers = {h.name: h for h in first.match.headers}
    assert headers["end-user"].string_match.exact == "jason"
    assert headers["x-dbg"].present_match is True
    query = {q.name: q for q in first.match.query_parameters}
    assert query["debug"].present_match is True
    assert query["mode"].string_match.safe_regex.regex == "a+"
    action = first.route
    assert action.cluster == "outbound|9080|v2|reviews"
    assert action.timeout.seconds == 2
    assert action.retry_policy.retry_on == "5xx,reset"
    assert action.retry_policy.num_retries.value == 3
    assert action.retry_policy.per_try_timeout.ToMilliseconds() == 500
    assert action.retry_policy.retry_back_off.max_interval.seconds == 1
    assert action.hash_policy[0].header.header_name == "x-user"
    fault = fault_pb2.HTTPFault()
    assert first.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert fault.abort.http_status == 503
    assert fault.abort.percentage.numerator == 10
    assert fault.abort.percentage.denominator == percent_pb2.FractionalPercent.HUNDRED
    assert fault.delay.fixed_delay.ToMilliseconds() == 100
    assert fault.delay.percentage.numerator == 5000
    assert fault.delay.percentage.denominator == percent_pb2.FractionalPercent.MILLION
    assert second.match.prefix == "/"
    weights = {c.name: c.weight.value for c in second.route.weighted_clusters.clusters}
    assert weights == {
        "outbound|9080|v1|reviews": 90,
        "outbound|9080|v2|reviews": 10,
        "outbound|9090||ratings": 5,
    }


def test_default_route_goes_to_the_service(snap: Snapshot) -> None:
    rc = snap.get(ROUTE_TYPE)["ratings:9090"]
    assert isinstance(rc, route_pb2.RouteConfiguration)
    (route,) = rc.virtual_hosts[0].routes
    assert route.match.prefix == "/"
    assert route.route.cluster == "outbound|9090||ratings"


def test_clusters(snap: Snapshot) -> None:
    c = snap.get(CLUSTER_TYPE)["outbound|9080|v1|reviews"]
    assert isinstance(c, cluster_pb2.Cluster)
    assert c.type == cluster_pb2.Cluster.EDS
    assert c.eds_cluster_config.service_name == "outbound|9080|v1|reviews"
    assert c.eds_cluster_config.eds_config.HasField("ads")
    assert c.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert c.outlier_detection.consecutive_5xx.value == 5
    assert c.outlier_detection.base_ejection_time.seconds == 30
    assert c.outlier_detection.max_ejection_percent.value == 50
    (th,) = c.circuit_breakers.thresholds
    assert (th.max_requests.value, th.max_pending_requests.value, th.max_retries.value) == (
        100,
        100,
        3,
    )
    assert not th.HasField("max_connections")
    tls = tls_pb2.UpstreamTlsContext()
    assert c.transport_socket.typed_config.Unpack(tls)
    ctx = tls.common_tls_context
    assert ctx.tls_certificate_provider_instance.instance_name == "default"
    assert ctx.validation_context.ca_certificate_provider_instance.certificate_name == "ROOTCA"
    (san,) = ctx.validation_context.match_subject_alt_names
    assert san.exact == "spiffe://cluster.local/ns/default/sa/reviews"

    grpc_cluster = snap.get(CLUSTER_TYPE)["outbound|9090||ratings"]
    assert isinstance(grpc_cluster, cluster_pb2.Cluster)
    assert grpc_cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert not grpc_cluster.HasField("transport_socket")
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    assert grpc_cluster.typed_extension_protocol_options[key].Unpack(opts)
    assert opts.explicit_http_config.HasField("http2_protocol_options")


def test_endpoints(snap: Snapshot) -> None:
    def addrs(cla: object) -> list[tuple[str, int, int, int]]:
        assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
        return [
            (
                lb.endpoint.address.socket_address.address,
                lb.endpoint.address.socket_address.port_value,
                lb.load_balancing_weight.value,
                loc.priority,
            )
            for loc in cla.endpoints
            for lb in loc.lb_endpoints
        ]

    ep = snap.get(ENDPOINT_TYPE)
    assert addrs(ep["outbound|9080|v1|reviews"]) == [
        ("127.0.0.1", 8001, 1, 0),
        ("127.0.0.1", 8002, 1, 0),
    ]
    # The service cluster holds every version's endpoints; the port defaults to the service's.
    assert sorted(addrs(ep["outbound|9080||reviews"])) == [
        ("10.0.0.9", 9080, 1, 0),
        ("127.0.0.1", 8001, 1, 0),
        ("127.0.0.1", 8002, 1, 0),
        ("127.0.0.1", 8003, 3, 1),
    ]
    v2 = ep["outbound|9080|v2|reviews"]
    assert isinstance(v2, endpoint_pb2.ClusterLoadAssignment)
    by_zone = {
        (loc.locality.region, loc.locality.zone, loc.locality.sub_zone): loc for loc in v2.endpoints
    }
    east = by_zone[("us", "east-1", "a")]
    assert (east.priority, east.load_balancing_weight.value) == (1, 3)
    assert by_zone[("", "", "")].lb_endpoints[0].health_status == health_check_pb2.DRAINING
    assert addrs(ep["outbound|9090||ratings"]) == [("127.0.0.1", 7000, 1, 0), ("::1", 7001, 1, 0)]


def test_version_is_a_stable_content_hash(snap: Snapshot) -> None:
    again = compile_text(FULL, "other-name.yaml")
    assert again.version == snap.version
    changed = compile_text(FULL.replace("timeout: 2s", "timeout: 3s"), "mesh.yaml")
    assert changed.version != snap.version


def test_compile_mesh_from_dict_and_load_file(tmp_path: Path) -> None:
    data = {"services": {"a": {"port": 80, "endpoints": ["127.0.0.1:1"]}}}
    snap = compile_mesh(data, "dict")
    path = tmp_path / "mesh.yaml"
    path.write_text("services:\n  a: {port: 80, endpoints: ['127.0.0.1:1']}\n")
    assert load_config_file(path).version == snap.version
    empty = compile_mesh({}, "dict")
    assert all(len(empty.get(t)) == 0 for t in (LISTENER_TYPE, CLUSTER_TYPE))


def test_retry_defaults_and_grpc_abort() -> None:
    snap = compile_mesh(
        {
            "services": {
                "a": {
                    "port": 80,
                    "routes": [{"retries": {}, "fault": {"abort": {"grpc_status": 14}}}],
                }
            }
        }
    )
    rc = snap.get(ROUTE_TYPE)["a:80"]
    assert isinstance(rc, route_pb2.RouteConfiguration)
    route = rc.virtual_hosts[0].routes[0]
    assert (
        route.route.retry_policy.retry_on == "connect-failure,refused-stream,unavailable,cancelled"
    )
    assert route.route.retry_policy.num_retries.value == 1
    fault = fault_pb2.HTTPFault()
    route.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert fault.abort.grpc_status == 14
    assert fault.abort.percentage.numerator == 100


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("100us", 1e-4),
        (3, 3.0),
        (0.5, 0.5),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    # "99999999999999s" is past protobuf's Duration range (about 10,000 years).
    "bad",
    ["2 days", "", "-1s", "s", "1e3s", "99999999999999s", True, None, -2],
)
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


BASE = """\
services:
  reviews:
    port: 9080
    versions:
      v1: {endpoints: ["127.0.0.1:8001"]}
      v2: {endpoints: ["127.0.0.1:8002"]}
    routes:
      - match: {prefix: /}
        split: {v1: 100}
"""


def bad(replace: str, by: str) -> str:
    assert replace in BASE
    return BASE.replace(replace, by)


@pytest.mark.parametrize(
    ("text", "where", "reason", "line"),
    [
        (
            bad("split: {v1: 100}", "split: {v9: 100}"),
            "services.reviews.routes[0].split.v9",
            "unknown version 'v9'; known: v1, v2",
            9,
        ),
        (bad("    port: 9080\n", ""), "services.reviews", "missing required key 'port'", 2),
        (bad("port: 9080", "port: 99999"), "services.reviews.port", "[1, 65535]", 3),
        (bad("port: 9080", "port: http"), "services.reviews.port", "expected an integer", 3),
        (
            bad("match: {prefix: /}", "match: {prefix: /, path: /x}"),
            "services.reviews.routes[0].match",
            "only one of prefix, path, regex",
            8,
        ),
        (
            bad("match: {prefix: /}", "match: {prefx: /}"),
            "services.reviews.routes[0].match.prefx",
            "unknown key 'prefx'; allowed: prefix, path, regex, headers, query",
            8,
        ),
        (
            bad("match: {prefix: /}", "match: {regex: '(a'}"),
            "services.reviews.routes[0].match.regex",
            "invalid RE2 regex",
            8,
        ),
        (
            bad("127.0.0.1:8002", "reviews.local:8002"),
            "services.reviews.versions.v2.endpoints[0]",
            "must be an IP literal",
            6,
        ),
        (
            bad("split: {v1: 100}", "split: {v1: 100}\n        timeout: soon"),
            "services.reviews.routes[0].timeout",
            "expected a duration like 250ms",
            10,
        ),
        (
            bad("split: {v1: 100}", "split: {v1: 0}"),
            "services.reviews.routes[0].split",
            "add up to more than 0",
            9,
        ),
        (
            bad("split: {v1: 100}", 'split: {v1: 1}\n        retries: {on: "5xx,oops"}'),
            "services.reviews.routes[0].retries.on",
            "unknown retry condition 'oops'",
            10,
        ),
        (
            bad(
                "split: {v1: 100}",
                "split: {v1: 1}\n        fault: {abort: {status: 503, percent: 150}}",
            ),
            "services.reviews.routes[0].fault.abort.percent",
            "between 0 and 100",
            10,
        ),
        (
            bad("    routes:", "    traffic_policy: {lb: FASTEST}\n    routes:"),
            "services.reviews.traffic_policy.lb",
            "unknown lb 'FASTEST'; use one of ROUND_ROBIN",
            7,
        ),
        (
            bad("    routes:", "    traffic_policy: {hash_on: {header: x}}\n    routes:"),
            "services.reviews.traffic_policy.hash_on",
            "needs lb: RING_HASH or MAGLEV",
            7,
        ),
        (
            bad(
                "    routes:",
                "    traffic_policy: {outlier_detection: {consecutive5xx: 1}}\n    routes:",
            ),
            "services.reviews.traffic_policy.outlier_detection.consecutive5xx",
            "unknown key 'consecutive5xx'",
            7,
        ),
        (
            bad("    port: 9080", "    port: 9080\n    protocol: websocket"),
            "services.reviews.protocol",
            "use one of http, http2, grpc",
            4,
        ),
        (BASE + "  Bad_Name: {port: 1}\n", "services.Bad_Name", "lower-case DNS names", 10),
        (BASE + "extra: 1\n", "extra", "unknown key 'extra'; allowed: services, raw", 10),
        (
            BASE + "raw:\n  clusters:\n    - {name: x, lb_policy: NOPE}\n",
            "raw.clusters[0]",
            "not a valid Cluster",
            12,
        ),
        (
            BASE + "raw:\n  clusters:\n    - {name: 'outbound|9080||reviews'}\n",
            "raw",
            "duplicate Cluster named 'outbound|9080||reviews'",
            10,
        ),
        (
            BASE + "raw:\n  routes:\n    - {name: r, virtual_hosts: [{name: v, domains: ['*'],"
            " routes: [{match: {prefix: /}, route: {cluster: nope}}]}]}\n",
            "raw",
            "cluster 'nope', which is missing",
            10,
        ),
        ("services: [\n", "<yaml>", "not valid YAML", 2),
        (
            bad('"127.0.0.1:8002"]', '"127.0.0.1:8002", "127.0.0.1:8002"]'),
            "services.reviews.versions.v2.endpoints[1]",
            "duplicate endpoint 127.0.0.1:8002",
            6,
        ),
        (
            bad('"127.0.0.1:8002"]', '{address: "127.0.0.1:8002", priority: 1}]'),
            "services.reviews.versions.v2.endpoints",
            "nothing has priority 0",
            6,
        ),
    ],
)
def test_bad_files_name_where_fix_and_line(
    tmp_path: Path, text: str, where: str, reason: str, line: int
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as info:
        load_config_file(path)
    err = info.value
    assert err.where == where
    assert reason in err.reason
    assert err.line == line
    assert err.source == str(path)
    assert f"{path}:{line}: {where}: " in str(err)


def test_dict_errors_have_no_line() -> None:
    with pytest.raises(ConfigFileError) as info:
        compile_mesh({"services": {"a": {"port": 1, "routes": [{"split": {"zz": 1}}]}}}, "x")
    assert info.value.where == "services.a.routes[0].split.zz"
    assert info.value.line is None
    assert "known: none" in info.value.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read the file"):
        load_config_file(tmp_path / "nope.yaml")


def test_yaml_on_is_a_string_key() -> None:
    # YAML 1.1 would read `on:` as true; the mesh file uses YAML 1.2 booleans.
    text = textwrap.dedent(
        """\
        services:
          a:
            port: 80
            routes: [{retries: {on: 5xx, attempts: 2}}]
        """
    )
    rc = compile_text(text).get(ROUTE_TYPE)["a:80"]
    assert isinstance(rc, route_pb2.RouteConfiguration)
    assert rc.virtual_hosts[0].routes[0].route.retry_policy.retry_on == "5xx"


def test_example_mesh_file_compiles() -> None:
    example = Path(__file__).parents[2] / "examples" / "mesh.yaml"
    snap = load_config_file(example)
    assert sorted(snap.get(LISTENER_TYPE)) == ["ratings:50051", "reviews:9080"]
    assert "outbound|9080|v2|reviews" in snap.get(CLUSTER_TYPE)


@pytest.mark.parametrize(
    ("lb", "enum", "policies"),
    [
        ("ROUND_ROBIN", cluster_pb2.Cluster.ROUND_ROBIN, []),
        ("RING_HASH", cluster_pb2.Cluster.RING_HASH, []),
        ("LEAST_REQUEST", cluster_pb2.Cluster.ROUND_ROBIN, ["least_request", "round_robin"]),
        ("RANDOM", cluster_pb2.Cluster.ROUND_ROBIN, ["random", "round_robin"]),
        ("MAGLEV", cluster_pb2.Cluster.ROUND_ROBIN, ["maglev", "ring_hash"]),
        (
            "CLIENT_SIDE_WEIGHTED_ROUND_ROBIN",
            cluster_pb2.Cluster.ROUND_ROBIN,
            ["client_side_weighted_round_robin", "round_robin"],
        ),
    ],
)
def test_lb_policy_forms(lb: str, enum: int, policies: list[str]) -> None:
    snap = compile_mesh({"services": {"a": {"port": 80, "traffic_policy": {"lb": lb}}}})
    c = snap.get(CLUSTER_TYPE)["outbound|80||a"]
    assert isinstance(c, cluster_pb2.Cluster)
    assert c.lb_policy == enum
    names = [p.typed_extension_config.name for p in c.load_balancing_policy.policies]
    assert names == [f"envoy.load_balancing_policies.{p}" for p in policies]
    for p in c.load_balancing_policy.policies:
        short = p.typed_extension_config.name.rsplit(".", 1)[1]
        assert f".{short}.v3." in p.typed_extension_config.typed_config.type_url


def test_weighted_round_robin_options() -> None:
    from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (
        client_side_weighted_round_robin_pb2 as cswrr_pb2,
    )

    tp = {
        "lb": "CLIENT_SIDE_WEIGHTED_ROUND_ROBIN",
        "weighted_round_robin": {
            "blackout_period": "1s",
            "weight_update_period": "100ms",
            "error_utilization_penalty": 2,
            "enable_oob_load_report": True,
            "metric_names_for_computing_utilization": ["named_metrics.gpu"],
        },
    }
    snap = compile_mesh({"services": {"a": {"port": 80, "traffic_policy": tp}}})
    c = snap.get(CLUSTER_TYPE)["outbound|80||a"]
    msg = cswrr_pb2.ClientSideWeightedRoundRobin()
    c.load_balancing_policy.policies[0].typed_extension_config.typed_config.Unpack(msg)
    assert msg.blackout_period.ToMilliseconds() == 1000
    assert msg.weight_update_period.ToMilliseconds() == 100
    assert msg.error_utilization_penalty.value == 2.0
    assert msg.enable_oob_load_report.value is True
    assert list(msg.metric_names_for_computing_utilization) == ["named_metrics.gpu"]
    with pytest.raises(ConfigFileError, match="needs lb: CLIENT_SIDE_WEIGHTED_ROUND_ROBIN"):
        compile_mesh(
            {"services": {"a": {"port": 80, "traffic_policy": {"weighted_round_robin": {}}}}}
        )
    bad = {**tp, "weighted_round_robin": {"error_utilization_penalty": -1}}
    with pytest.raises(ConfigFileError, match="error_utilization_penalty"):
        compile_mesh({"services": {"a": {"port": 80, "traffic_policy": bad}}})


def test_shared_endpoints_appear_once_in_the_service_cluster() -> None:
    snap = compile_mesh(
        {
            "services": {
                "a": {
                    "port": 80,
                    "endpoints": ["127.0.0.1:1"],
                    "versions": {"v1": {"endpoints": ["127.0.0.1:1", "127.0.0.1:2"]}},
                }
            }
        }
    )
    cla = snap.get(ENDPOINT_TYPE)["outbound|80||a"]
    assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
    ports = [lb.endpoint.address.socket_address.port_value for lb in cla.endpoints[0].lb_endpoints]
    assert ports == [1, 2]


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("services:\n  a: {port: 1}\n  b: {port: 2}\n  a: {port: 3}\n")
    with pytest.raises(ConfigFileError) as info:
        load_config_file(path)
    assert (info.value.where, info.value.line) == ("services.a", 4)
    assert "duplicate key 'a' (first on line 2)" in info.value.reason


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_bytes(b"services: {\xff: 1}\n")
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        load_config_file(path)


@pytest.mark.timeout(20)
def test_billion_laughs_stays_cheap() -> None:
    lines = ['a0: &a0 ["127.0.0.1:1"]']
    for i in range(1, 30):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    text = "x:\n" + "\n".join("  " + ln for ln in lines) + "\n"
    with pytest.raises(ConfigFileError) as info:
        compile_text(text, "laughs.yaml")
    assert info.value.where == "x"
