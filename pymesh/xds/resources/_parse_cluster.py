"""envoy.config.cluster.v3.Cluster → Cluster (Envoy's defaults applied here)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from pymesh.xds.resources import _parse_endpoint, _parse_lb, _parse_tls
from pymesh.xds.resources._common import (
    Ctx,
    check_config_source,
    config_source_is_ads_or_self,
    join,
    opt_duration,
    type_name,
    unpack,
    wrapped,
)
from pymesh.xds.resources.cluster import (
    CircuitBreakers,
    Cluster,
    ClusterKind,
    LbPolicy,
    OutlierDetection,
    RetryBudget,
)
from pymesh.xds.resources.tls import UpstreamTls

AGGREGATE_TYPE = "envoy.extensions.clusters.aggregate.v3.ClusterConfig"
TLS_TYPE = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
RAW_BUFFER_TYPE = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
HTTP_OPTIONS_TYPE = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_KINDS: dict[int, ClusterKind] = {0: "STATIC", 1: "STRICT_DNS", 2: "LOGICAL_DNS", 3: "EDS"}
DnsFamily = Literal["AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL"]
_DNS_FAMILIES: dict[int, DnsFamily] = {
    0: "AUTO",
    1: "V4_ONLY",
    2: "V6_ONLY",
    3: "V4_PREFERRED",
    4: "ALL",
}
_LOAD_BALANCING_POLICY_CONFIG = 7


_OD_PERCENTS = (
    "max_ejection_percent",
    "enforcing_consecutive_5xx",
    "enforcing_consecutive_gateway_failure",
    "enforcing_consecutive_local_origin_failure",
    "enforcing_success_rate",
    "enforcing_local_origin_success_rate",
    "enforcing_failure_percentage",
    "enforcing_failure_percentage_local_origin",
    "failure_percentage_threshold",
)
_OD_COUNTS = (
    "consecutive_5xx",
    "consecutive_gateway_failure",
    "consecutive_local_origin_failure",
    "success_rate_minimum_hosts",
    "success_rate_request_volume",
    "success_rate_stdev_factor",
    "failure_percentage_minimum_hosts",
    "failure_percentage_request_volume",
)


def _kind(ctx: Ctx, msg: Any) -> tuple[ClusterKind, tuple[str, ...]]:
    which = msg.WhichOneof("cluster_discovery_type")
    if which == "cluster_type":
        ct = msg.cluster_type
        tn = type_name(ct.typed_config.type_url)
        if tn != AGGREGATE_TYPE:
            ctx.fail(
                "cluster_type",
                f"custom cluster type {ct.name!r} ({tn or 'no typed_config'}) is not supported; "
                "only envoy.clusters.aggregate is",
            )
        agg = unpack(ctx, ct.typed_config, aggregate_pb2.ClusterConfig, "cluster_type.typed_config")
        ctx.check(ct, "cluster_type")
        if not agg.clusters:
            ctx.fail("cluster_type.typed_config.clusters", "an aggregate cluster needs clusters")
        for i, name in enumerate(agg.clusters):
            if not name:
                ctx.fail(f"cluster_type.typed_config.clusters[{i}]", "name must not be empty")
        ctx.check(agg, "cluster_type.typed_config")
        return "AGGREGATE", tuple(agg.clusters)
    kind = _KINDS.get(int(msg.type))
    if kind is None:
        ctx.fail(
            "type",
            f"discovery type {msg.type} is not supported (STATIC, STRICT_DNS, LOGICAL_DNS, "
            "EDS or an aggregate cluster_type)",
        )
    return kind, ()


def _lb_policy(ctx: Ctx, msg: Any) -> LbPolicy:
    if msg.HasField("load_balancing_policy"):
        policy = _parse_lb.policy_list(ctx, msg.load_balancing_policy, "load_balancing_policy")
    elif msg.lb_policy == _LOAD_BALANCING_POLICY_CONFIG:
        ctx.fail(
            "load_balancing_policy",
            "lb_policy is LOAD_BALANCING_POLICY_CONFIG but load_balancing_policy is not set",
        )
    else:
        policy = _parse_lb.from_enum(ctx, msg)
    if msg.common_lb_config.HasField("locality_weighted_lb_config"):
        ctx.check(
            msg.common_lb_config.locality_weighted_lb_config,
            "common_lb_config.locality_weighted_lb_config",
        )
        policy = dataclasses.replace(policy, locality_weighted=True)
    return policy


def _circuit_breakers(ctx: Ctx, msg: Any, http2: bool = False) -> CircuitBreakers:
    chosen = None
    for i, t in enumerate(msg.thresholds):
        if t.priority == 0 and chosen is None:
            chosen = (i, t)
        else:
            ctx.unsupported_field(
                f"circuit_breakers.thresholds[{i}]",
                "only the first DEFAULT-priority thresholds are used",
            )
    ctx.check(msg, "circuit_breakers")
    if chosen is None:
        return CircuitBreakers()
    i, t = chosen
    p = f"circuit_breakers.thresholds[{i}]"
    budget = None
    if t.HasField("retry_budget"):
        rb = t.retry_budget
        pct = float(rb.budget_percent.value) if rb.HasField("budget_percent") else 20.0
        if not 0 <= pct <= 100:
            ctx.fail(join(p, "retry_budget.budget_percent"), "must be in 0..100")
        budget = RetryBudget(pct, int(wrapped(rb, "min_retry_concurrency", 3)))
        if rb.HasField("budget_percent"):
            ctx.check(rb.budget_percent, join(p, "retry_budget.budget_percent"))
        ctx.check(rb, join(p, "retry_budget"))
    # max_connections and max_pending_requests are the HTTP/1.1 pools' (cluster-wide).
    ctx.check(t, p)
    return CircuitBreakers(
        max_connections=int(wrapped(t, "max_connections", 1024)),
        max_pending_requests=int(wrapped(t, "max_pending_requests", 1024)),
        max_requests=int(wrapped(t, "max_requests", 1024)),
        max_retries=int(wrapped(t, "max_retries", 3)),
        retry_budget=budget,
    )


def _outlier_detection(ctx: Ctx, msg: Any) -> OutlierDetection:
    p = "outlier_detection"
    d = OutlierDetection()
    kw: dict[str, Any] = {}
    for name in (*_OD_PERCENTS, *_OD_COUNTS):
        value = int(wrapped(msg, name, getattr(d, name)))
        if name in _OD_PERCENTS and value > 100:
            ctx.fail(join(p, name), f"a percentage must be in 0..100, got {value}")
        kw[name] = value
    interval = opt_duration(ctx, msg, "interval", p)
    if interval is not None and interval <= 0:
        ctx.fail(join(p, "interval"), "interval must be greater than 0")
    base = opt_duration(ctx, msg, "base_ejection_time", p)
    base = d.base_ejection_time if base is None else base
    if base <= 0:
        ctx.fail(join(p, "base_ejection_time"), "base_ejection_time must be greater than 0")
    mx = opt_duration(ctx, msg, "max_ejection_time", p)
    if mx is None:
        mx = max(d.max_ejection_time, base)
    elif base > mx:
        ctx.fail(
            join(p, "max_ejection_time"),
            f"max_ejection_time ({mx}s) must be at least base_ejection_time ({base}s)",
        )
    jitter = opt_duration(ctx, msg, "max_ejection_time_jitter", p)
    ctx.check(msg, p)
    return OutlierDetection(
        **kw,
        interval=d.interval if interval is None else interval,
        base_ejection_time=base,
        max_ejection_time=mx,
        split_external_local_origin_errors=bool(msg.split_external_local_origin_errors),
        max_ejection_time_jitter=0.0 if jitter is None else jitter,
    )


def _transport_socket(ctx: Ctx, msg: Any) -> UpstreamTls | None:
    p = "transport_socket"
    if not msg.HasField("typed_config"):
        if msg.name in ("envoy.transport_sockets.raw_buffer", "raw_buffer"):
            return None
        ctx.fail(join(p, "typed_config"), f"transport socket {msg.name!r} needs a typed_config")
    ctx.check(msg, p)
    tn = type_name(msg.typed_config.type_url)
    if tn == TLS_TYPE:
        return _parse_tls.upstream_tls(ctx, msg.typed_config, join(p, "typed_config"))
    if tn == RAW_BUFFER_TYPE:
        tp = join(p, "typed_config")
        ctx.check(unpack(ctx, msg.typed_config, raw_buffer_pb2.RawBuffer, tp), tp)
        return None
    ctx.fail(
        join(p, "typed_config"),
        f"transport socket type {tn} is not supported (use UpstreamTlsContext or RawBuffer)",
    )


_DEFAULT_IDLE_TIMEOUT = 3600.0  # Envoy's default for upstream connections


def _common_options(
    ctx: Ctx, cp: Any, path: str, max_requests: int | None, idle: float | None
) -> tuple[int | None, float | None]:
    """max_requests_per_connection and idle_timeout (0 → None: no idle timeout)."""
    max_requests = wrapped(cp, "max_requests_per_connection", max_requests)
    if cp.HasField("idle_timeout"):
        idle = opt_duration(ctx, cp, "idle_timeout", path) or None
    ctx.check(cp, path, "envoy.config.core.v3.HttpProtocolOptions@cluster")
    return max_requests, idle


def _http_options(ctx: Ctx, msg: Any) -> tuple[bool, int | None, float | None]:
    """(http2, max_requests_per_connection, idle_timeout) from the HTTP protocol options."""
    http2 = msg.HasField("http2_protocol_options")
    if http2:
        ctx.check(msg.http2_protocol_options, "http2_protocol_options")
    if msg.HasField("http_protocol_options"):
        ctx.check(msg.http_protocol_options, "http_protocol_options")
    max_requests = wrapped(msg, "max_requests_per_connection", None)
    idle: float | None = _DEFAULT_IDLE_TIMEOUT
    if msg.HasField("common_http_protocol_options"):
        max_requests, idle = _common_options(
            ctx,
            msg.common_http_protocol_options,
            "common_http_protocol_options",
            max_requests,
            idle,
        )
    entries = msg.typed_extension_protocol_options
    for key in sorted(entries):
        p = f'typed_extension_protocol_options["{key}"]'
        any_msg = entries[key]
        if type_name(any_msg.type_url) != HTTP_OPTIONS_TYPE:
            ctx.unsupported_field(
                p, f"protocol options type {type_name(any_msg.type_url)} is not supported"
            )
            continue
        opts = unpack(ctx, any_msg, http_protocol_options_pb2.HttpProtocolOptions, p)
        which = opts.WhichOneof("upstream_protocol_options")
        if which == "explicit_http_config":
            ex = opts.explicit_http_config
            ep = join(p, "explicit_http_config")
            proto = ex.WhichOneof("protocol_config")
            if proto == "http2_protocol_options":
                http2 = True
                ctx.check(ex.http2_protocol_options, join(ep, "http2_protocol_options"))
            elif proto == "http_protocol_options":
                ctx.check(ex.http_protocol_options, join(ep, "http_protocol_options"))
            ctx.check(ex, ep)
        if opts.HasField("common_http_protocol_options"):
            max_requests, idle = _common_options(
                ctx,
                opts.common_http_protocol_options,
                join(p, "common_http_protocol_options"),
                max_requests,
                idle,
            )
        ctx.check(opts, p)
    if max_requests is not None and int(max_requests) and http2:
        # Enforced for HTTP/1.1 upstreams (pymesh.transports._conn_limits), not HTTP/2.
        ctx.unsupported_field(
            "max_requests_per_connection", "enforced for HTTP/1.1 upstreams only, not HTTP/2"
        )
    return http2, (int(max_requests) or None) if max_requests is not None else None, idle


def _dns(ctx: Ctx, msg: Any) -> dict[str, Any]:
    refresh = opt_duration(ctx, msg, "dns_refresh_rate", "")
    if refresh is not None and refresh < 0.001:
        ctx.fail("dns_refresh_rate", "dns_refresh_rate must be at least 1ms")
    failure = None
    if msg.HasField("dns_failure_refresh_rate"):
        fr = msg.dns_failure_refresh_rate
        failure = opt_duration(ctx, fr, "base_interval", "dns_failure_refresh_rate")
        if failure is None or failure < 0.001:
            ctx.fail("dns_failure_refresh_rate.base_interval", "must be set and at least 1ms")
        ctx.check(fr, "dns_failure_refresh_rate")
    family = _DNS_FAMILIES.get(int(msg.dns_lookup_family))
    if family is None:
        ctx.fail("dns_lookup_family", f"unknown dns_lookup_family {msg.dns_lookup_family}")
    return {
        "dns_refresh_rate": 5.0 if refresh is None else refresh,
        "dns_failure_refresh_rate": failure,
        "respect_dns_ttl": bool(msg.respect_dns_ttl),
        "dns_lookup_family": family,
    }


def _health_set(ctx: Ctx, msg: Any) -> frozenset[str]:
    """envoy.config.core.v3.HealthStatusSet → status names (unknown values → NACK)."""
    from envoy.config.core.v3 import health_check_pb2

    path = "common_lb_config.override_host_status"
    ctx.check(msg, path)
    names = []
    for i, value in enumerate(msg.statuses):
        vd = health_check_pb2.HealthStatus.DESCRIPTOR.values_by_number.get(int(value))
        if vd is None:
            ctx.fail(f"{path}.statuses[{i}]", f"unknown health status {value}")
        names.append(vd.name)
    return frozenset(names)


def parse(msg: Any) -> Cluster:
    ctx = Ctx("Cluster", msg.name)
    if not msg.name:
        ctx.fail("name", "resource name must not be empty")
    kind, aggregate = _kind(ctx, msg)
    eds_service_name = ""
    if kind == "EDS":
        ecc = msg.eds_cluster_config
        if not config_source_is_ads_or_self(ecc.eds_config):
            ctx.fail(
                "eds_cluster_config.eds_config",
                "eds_config must be ads or self (endpoints come over the same stream)",
            )
        eds_service_name = ecc.service_name
        ctx.check(ecc, "eds_cluster_config")
        check_config_source(ctx, ecc.eds_config, "eds_cluster_config.eds_config")
    load_assignment = None
    if kind in ("STATIC", "STRICT_DNS", "LOGICAL_DNS") and msg.HasField("load_assignment"):
        sub = ctx.child("load_assignment", "ClusterLoadAssignment")
        load_assignment = _parse_endpoint.cluster_load_assignment(
            sub, msg.load_assignment, ip_only=kind == "STATIC"
        )
    if kind == "LOGICAL_DNS" and (
        load_assignment is None
        or len(load_assignment.localities) != 1
        or len(load_assignment.localities[0].endpoints) != 1
    ):
        ctx.fail(
            "load_assignment",
            "a LOGICAL_DNS cluster needs exactly one locality with exactly one endpoint",
        )
    # Aggregate clusters take their balancing from the child clusters (lb_policy is
    # CLUSTER_PROVIDED in Envoy's own examples).
    lb = LbPolicy() if kind == "AGGREGATE" else _lb_policy(ctx, msg)
    connect_timeout = opt_duration(ctx, msg, "connect_timeout", "")
    if connect_timeout is not None and connect_timeout <= 0:
        ctx.fail("connect_timeout", "connect_timeout must be greater than 0")
    panic = 50.0
    override_status: frozenset[str] | None = None
    if msg.HasField("common_lb_config"):
        clc = msg.common_lb_config
        if clc.HasField("healthy_panic_threshold"):
            panic = float(clc.healthy_panic_threshold.value)
            if not 0 <= panic <= 100:
                ctx.fail("common_lb_config.healthy_panic_threshold", "must be in 0..100")
        if clc.HasField("override_host_status"):
            override_status = _health_set(ctx, clc.override_host_status)
        ctx.check(clc, "common_lb_config")
    http2, max_requests, idle_timeout = _http_options(ctx, msg)
    cb = (
        _circuit_breakers(ctx, msg.circuit_breakers, http2)
        if msg.HasField("circuit_breakers")
        else None
    )
    od = (
        _outlier_detection(ctx, msg.outlier_detection)
        if msg.HasField("outlier_detection")
        else None
    )
    tls = _transport_socket(ctx, msg.transport_socket) if msg.HasField("transport_socket") else None
    dns = _dns(ctx, msg)
    ctx.check(msg, "")
    return Cluster(
        name=msg.name,
        kind=kind,
        eds_service_name=eds_service_name,
        load_assignment=load_assignment,
        aggregate_clusters=aggregate,
        lb_policy=lb,
        connect_timeout=5.0 if connect_timeout is None else connect_timeout,
        circuit_breakers=cb or CircuitBreakers(),
        outlier_detection=od,
        tls=tls,
        healthy_panic_threshold=panic,
        override_host_status=override_status,
        max_requests_per_connection=max_requests,
        http2=http2,
        idle_timeout=idle_timeout,
        unsupported=tuple(ctx.unsupported),
        **dns,
    )
