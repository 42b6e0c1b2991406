"""Cluster parser: discovery types, LB policies, breakers, outlier detection, TLS, NACKs."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from _resbuild import cla, eds_cluster, invalid
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (
    client_side_weighted_round_robin_pb2 as cswrr_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.pick_first.v3 import pick_first_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.load_balancing_policies.subset.v3 import subset_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from udpa.type.v1 import typed_struct_pb2 as udpa_ts_pb2
from xds.type.v3 import typed_struct_pb2

from pymesh.xds.resources import _warnings
from pymesh.xds.resources.cluster import (
    PEAK_EWMA_TYPE,
    CircuitBreakers,
    LbPolicy,
    OutlierDetection,
    RetryBudget,
    WrrConfig,
    parse_cluster,
)
from pymesh.xds.resources.tls import CertificateProviderInstance, SanMatcher, UpstreamTls

parse = parse_cluster


def test_eds_cluster_defaults() -> None:
    out = parse(eds_cluster("c"))
    assert out.kind == "EDS" and out.eds_resource_name == "c"
    assert out.lb_policy == LbPolicy()
    assert out.connect_timeout == 5.0
    assert out.circuit_breakers == CircuitBreakers()
    assert out.outlier_detection is None and out.tls is None
    assert out.healthy_panic_threshold == 50.0
    assert out.max_requests_per_connection is None and not out.http2
    assert (out.dns_refresh_rate, out.dns_failure_refresh_rate) == (5.0, None)
    assert out.unsupported == ()


def test_eds_service_name_and_self_source() -> None:
    c = eds_cluster("c")
    c.eds_cluster_config.service_name = "svc-eds"
    c.eds_cluster_config.eds_config.self.SetInParent()
    assert parse(c).eds_resource_name == "svc-eds"


def test_eds_wrong_config_source_nacks() -> None:
    c = eds_cluster("c")
    c.eds_cluster_config.eds_config.path_config_source.path = "/x"
    invalid(parse, c, "eds_cluster_config.eds_config", reason="ads or self")
    c = cluster_pb2.Cluster(name="c", type=cluster_pb2.Cluster.EDS)
    invalid(parse, c, "eds_cluster_config.eds_config")


def test_static_and_dns_clusters_with_load_assignment() -> None:
    c = cluster_pb2.Cluster(name="s", type=cluster_pb2.Cluster.STATIC)
    c.load_assignment.CopyFrom(cla("s", 1, 2))
    out = parse(c)
    assert out.kind == "STATIC"
    assert out.load_assignment is not None and len(out.load_assignment.endpoints) == 2
    c = cluster_pb2.Cluster(name="d", type=cluster_pb2.Cluster.STRICT_DNS)
    c.load_assignment.CopyFrom(cla("", 80))
    c.load_assignment.endpoints[0].lb_endpoints[
        0
    ].endpoint.address.socket_address.address = "example.com"
    c.dns_refresh_rate.FromSeconds(30)
    c.dns_failure_refresh_rate.base_interval.FromSeconds(2)
    c.respect_dns_ttl = True
    c.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
    out = parse(c)
    assert out.kind == "STRICT_DNS"
    assert out.load_assignment is not None
    assert out.load_assignment.cluster_name == "d"
    assert out.load_assignment.endpoints[0].host == "example.com"
    assert (out.dns_refresh_rate, out.dns_failure_refresh_rate) == (30.0, 2.0)
    assert out.respect_dns_ttl and out.dns_lookup_family == "V4_ONLY"


def test_static_cluster_needs_ip_literals() -> None:
    c = cluster_pb2.Cluster(name="s", type=cluster_pb2.Cluster.STATIC)
    c.load_assignment.CopyFrom(cla("s", 80))
    c.load_assignment.endpoints[0].lb_endpoints[
        0
    ].endpoint.address.socket_address.address = "example.com"
    invalid(
        parse,
        c,
        "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
        reason="not an IP address",
    )


def test_load_assignment_errors_are_prefixed() -> None:
    c = cluster_pb2.Cluster(name="s", type=cluster_pb2.Cluster.STATIC)
    c.load_assignment.CopyFrom(cla("s", 0))
    err = invalid(
        parse,
        c,
        "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value",
    )
    assert err.resource_name == "s"


def test_logical_dns_needs_one_endpoint() -> None:
    c = cluster_pb2.Cluster(name="l", type=cluster_pb2.Cluster.LOGICAL_DNS)
    c.load_assignment.CopyFrom(cla("l", 1, 2))
    invalid(parse, c, "load_assignment", reason="exactly one")
    c.load_assignment.CopyFrom(cla("l", 1))
    assert parse(c).kind == "LOGICAL_DNS"


def test_original_dst_nacks() -> None:
    c = cluster_pb2.Cluster(name="o", type=cluster_pb2.Cluster.ORIGINAL_DST)
    invalid(parse, c, "type", reason="not supported")


def _aggregate(*names: str) -> Any:
    c = cluster_pb2.Cluster(name="agg", lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
    c.cluster_type.name = "envoy.clusters.aggregate"
    c.cluster_type.typed_config.Pack(aggregate_pb2.ClusterConfig(clusters=list(names)))
    return c


def test_aggregate_cluster() -> None:
    out = parse(_aggregate("primary", "fallback"))
    assert out.kind == "AGGREGATE"
    assert out.aggregate_clusters == ("primary", "fallback")


def test_aggregate_without_clusters_and_unknown_custom_type_nack() -> None:
    invalid(parse, _aggregate(), "cluster_type.typed_config.clusters")
    c = cluster_pb2.Cluster(name="x")
    c.cluster_type.name = "envoy.clusters.redis"
    c.cluster_type.typed_config.Pack(round_robin_pb2.RoundRobin())
    invalid(parse, c, "cluster_type", reason="only envoy.clusters.aggregate")


def test_lb_policy_enum_variants() -> None:
    c = eds_cluster()
    c.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    c.least_request_lb_config.choice_count.value = 3
    c.least_request_lb_config.active_request_bias.default_value = 0.5
    assert parse(c).lb_policy == LbPolicy("least_request", choice_count=3, active_request_bias=0.5)
    c = eds_cluster()
    c.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    assert parse(c).lb_policy == LbPolicy("least_request", choice_count=2)
    c = eds_cluster()
    c.lb_policy = cluster_pb2.Cluster.RANDOM
    assert parse(c).lb_policy.name == "random"
    c = eds_cluster()
    c.lb_policy = cluster_pb2.Cluster.RING_HASH
    c.ring_hash_lb_config.minimum_ring_size.value = 2048
    lb = parse(c).lb_policy
    assert (lb.name, lb.min_ring_size, lb.max_ring_size, lb.hash_function) == (
        "ring_hash",
        2048,
        8 * 1024 * 1024,
        "XX_HASH",
    )
    c.ring_hash_lb_config.minimum_ring_size.value = 0  # allowed, as in Envoy
    assert parse(c).lb_policy.min_ring_size == 0
    c = eds_cluster()
    c.lb_policy = cluster_pb2.Cluster.MAGLEV
    assert parse(c).lb_policy == LbPolicy("maglev", table_size=65537)
    c.maglev_lb_config.table_size.value = 251
    assert parse(c).lb_policy.table_size == 251


def test_lb_policy_enum_nacks() -> None:
    c = eds_cluster()
    c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    invalid(parse, c, "lb_policy")
    c = eds_cluster()
    c.lb_policy = cluster_pb2.Cluster.RING_HASH
    c.ring_hash_lb_config.minimum_ring_size.value = 4096
    c.ring_hash_lb_config.maximum_ring_size.value = 1024
    invalid(parse, c, "ring_hash_lb_config.minimum_ring_size", reason="must not exceed")
    c = eds_cluster()
    c.lb_policy = cluster_pb2.Cluster.MAGLEV
    c.maglev_lb_config.table_size.value = 65536
    invalid(parse, c, "maglev_lb_config.table_size", reason="prime")
    c = eds_cluster()
    c.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    c.least_request_lb_config.choice_count.value = 1
    invalid(parse, c, "least_request_lb_config.choice_count")


def _policies(*msgs: Any) -> Any:
    c = eds_cluster()
    for i, m in enumerate(msgs):
        p = c.load_balancing_policy.policies.add()
        p.typed_extension_config.name = f"p{i}"
        p.typed_extension_config.typed_config.Pack(m)
    return c


def test_load_balancing_policy_first_supported_wins() -> None:
    out = parse(_policies(subset_pb2.Subset(), random_pb2.Random()))
    assert out.lb_policy.name == "random"
    # The skipped policy is not dropped silently: a counted warning names it.
    assert out.unsupported == (
        "load_balancing_policy.policies[0].typed_extension_config.typed_config",
    )
    lr = least_request_pb2.LeastRequest()
    lr.choice_count.value = 4
    assert parse(_policies(lr)).lb_policy == LbPolicy("least_request", choice_count=4)
    rh = ring_hash_pb2.RingHash(hash_function=ring_hash_pb2.RingHash.XX_HASH)
    rh.maximum_ring_size.value = 4096
    lb = parse(_policies(rh)).lb_policy
    assert (lb.name, lb.max_ring_size, lb.hash_function) == ("ring_hash", 4096, "XX_HASH")
    assert parse(_policies(ring_hash_pb2.RingHash())).lb_policy.hash_function == "XX_HASH"
    assert parse(_policies(maglev_pb2.Maglev())).lb_policy.name == "maglev"
    assert parse(_policies(pick_first_pb2.PickFirst())).lb_policy.name == "pick_first"
    assert parse(_policies(round_robin_pb2.RoundRobin())).lb_policy == LbPolicy()


def test_wrr_locality_wraps_child() -> None:
    wl = wrr_locality_pb2.WrrLocality()
    p = wl.endpoint_picking_policy.policies.add()
    p.typed_extension_config.typed_config.Pack(least_request_pb2.LeastRequest())
    lb = parse(_policies(wl)).lb_policy
    assert (lb.name, lb.locality_weighted) == ("least_request", True)


def test_locality_weighted_lb_config_enum_path() -> None:
    c = eds_cluster()
    c.common_lb_config.locality_weighted_lb_config.SetInParent()
    c.common_lb_config.healthy_panic_threshold.value = 0
    out = parse(c)
    assert out.lb_policy.locality_weighted
    assert out.healthy_panic_threshold == 0.0


@pytest.mark.parametrize("ts_cls", [typed_struct_pb2.TypedStruct, udpa_ts_pb2.TypedStruct])
def test_peak_ewma_typed_struct(ts_cls: Any) -> None:
    ts = ts_cls(type_url=f"type.googleapis.com/{PEAK_EWMA_TYPE}")
    ts.value.update({"decay_time": "2.5s", "extra": 1})
    lb = parse(_policies(ts)).lb_policy
    assert (lb.name, lb.decay_time) == ("peak_ewma", 2.5)
    assert lb.params == {"decay_time": "2.5s", "extra": 1.0}
    ts.value.update({"decay_time": 4})
    assert parse(_policies(ts)).lb_policy.decay_time == 4.0
    ts.value.update({"decay_time": "soon"})
    invalid(
        parse,
        _policies(ts),
        "load_balancing_policy.policies[0].typed_extension_config.typed_config.value.decay_time",
    )


def test_no_supported_lb_policy_nacks() -> None:
    other = typed_struct_pb2.TypedStruct(type_url="type.googleapis.com/acme.Lb")
    invalid(
        parse,
        _policies(subset_pb2.Subset(), other),
        "load_balancing_policy.policies",
        reason="Subset",
    )


def test_client_side_weighted_round_robin() -> None:
    lb = parse(_policies(cswrr_pb2.ClientSideWeightedRoundRobin())).lb_policy
    # Envoy's and gRFC A58's defaults.
    assert lb == LbPolicy("client_side_weighted_round_robin", wrr=WrrConfig())
    assert lb.wrr == WrrConfig(False, 10.0, 10.0, 180.0, 1.0, 1.0, ())
    msg = cswrr_pb2.ClientSideWeightedRoundRobin(metric_names_for_computing_utilization=["a"])
    msg.enable_oob_load_report.value = True
    msg.oob_reporting_period.FromMilliseconds(500)
    msg.blackout_period.FromMilliseconds(0)
    msg.weight_expiration_period.FromSeconds(60)
    msg.weight_update_period.FromMilliseconds(20)  # below A58's floor of 100 ms
    msg.error_utilization_penalty.value = 2.5
    wrr = parse(_policies(msg)).lb_policy.wrr
    assert wrr == WrrConfig(True, 0.5, 0.0, 60.0, 0.1, 2.5, ("a",))
    bad = cswrr_pb2.ClientSideWeightedRoundRobin()
    bad.error_utilization_penalty.value = -1
    invalid(
        parse,
        _policies(bad),
        "load_balancing_policy.policies[0].typed_extension_config.typed_config"
        ".error_utilization_penalty",
    )


def test_connect_timeout_and_breakers() -> None:
    c = eds_cluster()
    c.connect_timeout.FromMilliseconds(250)
    t = c.circuit_breakers.thresholds.add()
    t.max_connections.value = 10
    t.max_requests.value = 20
    t.max_pending_requests.value = 30
    t.max_retries.value = 1
    t.retry_budget.budget_percent.value = 50
    high = c.circuit_breakers.thresholds.add(priority=1)
    high.max_requests.value = 5
    out = parse(c)
    assert out.connect_timeout == 0.25
    assert out.circuit_breakers == CircuitBreakers(10, 30, 20, 1, RetryBudget(50.0, 3))
    # Only DEFAULT priority thresholds apply (max_connections and max_pending_requests
    # by the HTTP/1.1 pools: tests/transports/test_pool.py). connect_timeout is honoured
    # (tests/e2e/test_resilience_http.py).
    assert sorted(out.unsupported) == ["circuit_breakers.thresholds[1]"]


def test_connect_timeout_zero_nacks() -> None:
    c = eds_cluster()
    c.connect_timeout.FromSeconds(0)
    invalid(parse, c, "connect_timeout")


def test_outlier_detection_defaults_and_fields() -> None:
    c = eds_cluster()
    c.outlier_detection.SetInParent()
    assert parse(c).outlier_detection == OutlierDetection()
    od = c.outlier_detection
    od.consecutive_5xx.value = 3
    od.interval.FromSeconds(1)
    od.base_ejection_time.FromSeconds(400)
    od.max_ejection_percent.value = 50
    od.enforcing_success_rate.value = 0
    od.failure_percentage_threshold.value = 90
    od.enforcing_failure_percentage.value = 100
    od.split_external_local_origin_errors = True
    od.max_ejection_time_jitter.FromMilliseconds(100)
    out = parse(c).outlier_detection
    assert out is not None
    assert out.consecutive_5xx == 3 and out.interval == 1.0
    assert out.base_ejection_time == 400.0
    assert out.max_ejection_time == 400.0  # default max is raised to the base
    assert out.max_ejection_percent == 50 and out.enforcing_success_rate == 0
    assert out.failure_percentage_threshold == 90 and out.enforcing_failure_percentage == 100
    assert out.split_external_local_origin_errors and out.max_ejection_time_jitter == 0.1
    assert out.consecutive_gateway_failure == 5  # untouched default


def test_outlier_detection_nacks() -> None:
    c = eds_cluster()
    c.outlier_detection.max_ejection_percent.value = 101
    invalid(parse, c, "outlier_detection.max_ejection_percent")
    c = eds_cluster()
    c.outlier_detection.base_ejection_time.FromSeconds(60)
    c.outlier_detection.max_ejection_time.FromSeconds(30)
    invalid(parse, c, "outlier_detection.max_ejection_time")


def _tls_cluster(utc: Any) -> Any:
    c = eds_cluster()
    c.transport_socket.name = "envoy.transport_sockets.tls"
    c.transport_socket.typed_config.Pack(utc)
    return c


def test_tls_with_certificate_providers() -> None:
    utc = tls_pb2.UpstreamTlsContext(sni="reviews.default.svc")
    ctc = utc.common_tls_context
    ctc.tls_certificate_provider_instance.instance_name = "default"
    ctc.tls_certificate_provider_instance.certificate_name = "id"
    cvc = ctc.combined_validation_context.default_validation_context
    cvc.ca_certificate_provider_instance.instance_name = "roots"
    san = cvc.match_typed_subject_alt_names.add(san_type=common_pb2.SubjectAltNameMatcher.URI)
    san.matcher.prefix = "spiffe://cluster.local/"
    cvc.match_subject_alt_names.add().exact = "reviews"
    ctc.alpn_protocols.extend(["h2", "http/1.1"])
    ctc.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TLSv1_2
    ctc.tls_params.cipher_suites.append("ECDHE-RSA-AES128-GCM-SHA256")
    out = parse(_tls_cluster(utc)).tls
    assert out is not None
    assert out.identity == CertificateProviderInstance("default", "id")
    assert out.validation == CertificateProviderInstance("roots")
    assert [(s.san_type, s.matcher.kind, s.matcher.value) for s in out.san_matchers] == [
        ("ANY", "exact", "reviews"),
        ("URI", "prefix", "spiffe://cluster.local/"),
    ]
    assert isinstance(out.san_matchers[0], SanMatcher)
    assert out.sni == "reviews.default.svc"
    assert out.alpn_protocols == ("h2", "http/1.1")
    assert (out.min_version, out.max_version) == ("TLSv1_2", None)
    assert out.cipher_suites == ("ECDHE-RSA-AES128-GCM-SHA256",)


def test_tls_with_files_and_plain_validation_context() -> None:
    utc = tls_pb2.UpstreamTlsContext()
    ctc = utc.common_tls_context
    cert = ctc.tls_certificates.add()
    cert.certificate_chain.filename = "/certs/cert.pem"
    cert.private_key.filename = "/certs/key.pem"
    ctc.validation_context.trusted_ca.filename = "/certs/ca.pem"
    ctc.validation_context.match_subject_alt_names.add().suffix = ".svc"
    out = parse(_tls_cluster(utc)).tls
    assert out == UpstreamTls(
        san_matchers=out.san_matchers if out else (),
        certificate_file="/certs/cert.pem",
        private_key_file="/certs/key.pem",
        trusted_ca_file="/certs/ca.pem",
    )
    assert out is not None and out.san_matchers[0].matcher.value == ".svc"


def test_tls_deprecated_provider_instance_fields() -> None:
    utc = tls_pb2.UpstreamTlsContext()
    ctc = utc.common_tls_context
    ctc.tls_certificate_certificate_provider_instance.instance_name = "id"
    ctc.validation_context_certificate_provider_instance.instance_name = "ca"
    out = parse(_tls_cluster(utc)).tls
    assert out is not None
    assert out.identity == CertificateProviderInstance("id")
    assert out.validation == CertificateProviderInstance("ca")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda c: c.tls_certificate_sds_secret_configs.add(name="s"),
            "common_tls_context.tls_certificate_sds_secret_configs",
        ),
        (
            lambda c: c.validation_context.verify_certificate_spki.append("x"),
            "common_tls_context.validation_context.verify_certificate_spki",
        ),
        (
            lambda c: setattr(c.validation_context.crl, "filename", "/crl"),
            "common_tls_context.validation_context.crl",
        ),
        (
            lambda c: (
                c.validation_context.match_typed_subject_alt_names.add().matcher.SetInParent()
            ),
            "common_tls_context.validation_context.match_typed_subject_alt_names[0].san_type",
        ),
        (
            lambda c: setattr(c.tls_certificates.add().certificate_chain, "inline_string", "PEM"),
            "common_tls_context.tls_certificates[0].certificate_chain.inline_string",
        ),
    ],
)
def test_tls_nacks(mutate: Any, field: str) -> None:
    utc = tls_pb2.UpstreamTlsContext()
    mutate(utc.common_tls_context)
    invalid(parse, _tls_cluster(utc), f"transport_socket.typed_config.{field}")


def test_raw_buffer_and_unknown_transport_socket() -> None:
    c = eds_cluster()
    c.transport_socket.name = "envoy.transport_sockets.raw_buffer"
    assert parse(c).tls is None
    c.transport_socket.typed_config.Pack(raw_buffer_pb2.RawBuffer())
    assert parse(c).tls is None
    c.transport_socket.typed_config.Pack(round_robin_pb2.RoundRobin())
    invalid(parse, c, "transport_socket.typed_config", reason="not supported")


def test_http2_and_max_requests_per_connection() -> None:
    c = eds_cluster()
    c.http2_protocol_options.SetInParent()
    c.max_requests_per_connection.value = 100
    out = parse(c)
    assert out.http2 and out.max_requests_per_connection == 100
    assert out.unsupported == ("max_requests_per_connection",)  # enforced for HTTP/1.1 only
    c = eds_cluster()
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    opts.explicit_http_config.http2_protocol_options.SetInParent()
    opts.common_http_protocol_options.max_requests_per_connection.value = 7
    c.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Pack(opts)
    out = parse(c)
    assert out.http2 and out.max_requests_per_connection == 7
    opts.explicit_http_config.http_protocol_options.SetInParent()
    c.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Pack(opts)
    http1 = parse(c)
    assert not http1.http2 and http1.max_requests_per_connection == 7
    assert "max_requests_per_connection" not in http1.unsupported


def test_unsupported_cluster_fields_warn(caplog: pytest.LogCaptureFixture) -> None:
    _warnings.reset()  # outside an xDS client: once per resource and field per process
    c = eds_cluster("warned")
    c.health_checks.add().timeout.FromSeconds(1)
    c.lb_subset_config.SetInParent()
    c.lrs_server.self.SetInParent()
    c.alt_stat_name = "benign"
    with caplog.at_level(logging.WARNING, logger="pymesh.xds"):
        out = parse(c)
    assert set(out.unsupported) == {"health_checks", "lb_subset_config", "lrs_server"}
    assert any("lrs_server" in r.getMessage() for r in caplog.records)


def test_empty_cluster_name_nacks() -> None:
    invalid(parse, eds_cluster(""), "name")


def test_idle_timeout_defaults_to_an_hour_and_zero_disables() -> None:
    assert parse(eds_cluster()).idle_timeout == 3600.0  # Envoy's default
    c = eds_cluster()
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    opts.explicit_http_config.http_protocol_options.SetInParent()
    opts.common_http_protocol_options.idle_timeout.FromSeconds(30)
    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    c.typed_extension_protocol_options[key].Pack(opts)
    out = parse(c)
    assert out.idle_timeout == 30.0 and "idle_timeout" not in " ".join(out.unsupported)
    opts.common_http_protocol_options.idle_timeout.FromSeconds(0)
    c.typed_extension_protocol_options[key].Pack(opts)
    assert parse(c).idle_timeout is None


def test_murmur_hash_2_is_nacked_at_parse_time() -> None:
    """ACKing MURMUR_HASH_2 and failing later at apply time left the listener broken;
    the table NACKs it with a precise reason instead (the ring is xxHash64 only)."""
    c = eds_cluster()
    c.lb_policy = cluster_pb2.Cluster.RING_HASH
    c.ring_hash_lb_config.hash_function = cluster_pb2.Cluster.RingHashLbConfig.MURMUR_HASH_2
    err = invalid(parse, c, "ring_hash_lb_config.hash_function", reason="MURMUR_HASH_2")
    assert "set hash_function to XX_HASH" in err.reason
    rh = ring_hash_pb2.RingHash(hash_function=ring_hash_pb2.RingHash.MURMUR_HASH_2)
    c = eds_cluster()
    c.load_balancing_policy.policies.add().typed_extension_config.typed_config.Pack(rh)
    invalid(
        parse,
        c,
        "load_balancing_policy.policies[0].typed_extension_config.typed_config.hash_function",
        reason="MURMUR_HASH_2 is not supported: pymesh's ring uses xxHash64",
    )
    # XX_HASH and DEFAULT_HASH stay accepted.
    for fn in (ring_hash_pb2.RingHash.XX_HASH, ring_hash_pb2.RingHash.DEFAULT_HASH):
        c = eds_cluster()
        rh = ring_hash_pb2.RingHash(hash_function=fn)
        c.load_balancing_policy.policies.add().typed_extension_config.typed_config.Pack(rh)
        assert parse(c).lb_policy.hash_function == "XX_HASH"


def test_degraded_endpoints_are_kept_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    """DEGRADED is honoured (Envoy's degraded tier for HTTP; unused on gRPC): no warning."""
    from pymesh.xds.resources import parse_cluster_load_assignment

    m = cla("c", 8080, 8081)
    m.endpoints[0].lb_endpoints[0].health_status = 5  # DEGRADED
    m.endpoints[0].lb_endpoints[1].health_status = 2  # UNHEALTHY
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        _warnings, "report", lambda kind, name, path, note="": seen.append((path, note))
    )
    out = parse_cluster_load_assignment(m)
    assert [e.health for e in out.localities[0].endpoints] == ["DEGRADED", "UNHEALTHY"]
    assert seen == []


@pytest.mark.parametrize("where", [0, 6, 11])
def test_one_endpoint_with_a_warned_field_among_plain_ones_is_named(
    monkeypatch: pytest.MonkeyPatch, where: int
) -> None:
    """The field table is asked once for a whole endpoint list (merged); a warned field on
    any one endpoint still gets its own warning with that endpoint's path."""
    from pymesh.xds.resources import parse_cluster_load_assignment

    m = cla("c", *range(8000, 8012))
    m.endpoints[0].lb_endpoints[where].endpoint.additional_addresses.add()
    seen: list[str] = []
    monkeypatch.setattr(_warnings, "report", lambda kind, name, path, note="": seen.append(path))
    out = parse_cluster_load_assignment(m)
    assert len(out.localities[0].endpoints) == 12
    assert seen == [f"endpoints[0].lb_endpoints[{where}].endpoint.additional_addresses"]


def test_slow_start_config_is_parsed_from_the_cluster_and_the_extensions() -> None:
    from pymesh.xds.resources.cluster import SlowStart

    c = eds_cluster()
    ss = c.round_robin_lb_config.slow_start_config
    ss.slow_start_window.FromSeconds(30)
    ss.aggression.default_value = 2.0
    ss.aggression.runtime_key = "k"
    ss.min_weight_percent.value = 5.0
    assert parse(c).lb_policy.slow_start == SlowStart(30.0, 2.0, 5.0)
    c = eds_cluster()
    c.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    c.least_request_lb_config.slow_start_config.slow_start_window.FromSeconds(10)
    assert parse(c).lb_policy.slow_start == SlowStart(10.0)
    rr = round_robin_pb2.RoundRobin()
    rr.slow_start_config.slow_start_window.FromSeconds(20)
    assert parse(_policies(rr)).lb_policy.slow_start == SlowStart(20.0)
    lr = least_request_pb2.LeastRequest()
    lr.slow_start_config.slow_start_window.FromMilliseconds(1500)
    lr.slow_start_config.min_weight_percent.value = 50.0
    out = parse(_policies(lr)).lb_policy
    assert (out.name, out.slow_start) == ("least_request", SlowStart(1.5, 1.0, 50.0))


def test_slow_start_window_zero_is_off_and_bad_values_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = eds_cluster()
    c.round_robin_lb_config.slow_start_config.min_weight_percent.value = 10.0
    assert parse(c).lb_policy.slow_start is None  # no window: Envoy's slow start is off
    c = eds_cluster()
    c.round_robin_lb_config.slow_start_config.min_weight_percent.value = 120.0
    invalid(parse, c, "round_robin_lb_config.slow_start_config.min_weight_percent")
    # aggression <= 0: Envoy uses 1.0 (and logs); pymesh too, with a counted warning.
    seen: list[str] = []
    monkeypatch.setattr(_warnings, "report", lambda kind, name, path, note="": seen.append(path))
    c = eds_cluster()
    c.round_robin_lb_config.slow_start_config.slow_start_window.FromSeconds(5)
    c.round_robin_lb_config.slow_start_config.aggression.default_value = -1.0
    assert parse(c).lb_policy.slow_start.aggression == 1.0  # type: ignore[union-attr]
    assert seen == ["round_robin_lb_config.slow_start_config.aggression"]


def test_override_host_status_is_parsed() -> None:
    c = eds_cluster()
    assert parse(c).override_host_status is None
    c.common_lb_config.override_host_status.statuses.extend([1, 5])  # HEALTHY, DEGRADED
    assert parse(c).override_host_status == frozenset({"HEALTHY", "DEGRADED"})
