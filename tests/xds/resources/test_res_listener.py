"""Listener parser: api_listener HCM, RDS vs inline routes, http filters, NACKs."""

from __future__ import annotations

from _resbuild import fault, hcm, invalid, listener, route_config
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from xds.type.v3 import typed_struct_pb2

from pymesh.xds.resources.fault import FaultConfig
from pymesh.xds.resources.listener import FAULT_TYPE, ROUTER_TYPE, parse_listener
from pymesh.xds.resources.matchers import FractionalPercent

parse = parse_listener
HCM = "api_listener.api_listener"


def test_rds_listener() -> None:
    out = parse(listener(hcm("routes-1")))
    assert out.name == "svc:80"
    assert out.rds_name == "routes-1" and out.route_config is None
    assert [(f.name, f.type_name, f.config) for f in out.http_filters] == [
        ("envoy.filters.http.router", ROUTER_TYPE, None)
    ]
    assert out.max_stream_duration is None
    assert out.unsupported == ()


def test_rds_self_config_source() -> None:
    h = hcm("r")
    h.rds.config_source.self.SetInParent()
    assert parse(listener(h)).rds_name == "r"


def test_rds_non_ads_config_source_nacks() -> None:
    h = hcm("r")
    h.rds.config_source.path_config_source.path = "rds.yaml"
    invalid(parse, listener(h), f"{HCM}.rds.config_source", reason="ads or self")


def test_rds_empty_name_nacks() -> None:
    h = hcm("")
    h.rds.config_source.ads.SetInParent()
    invalid(parse, listener(h), f"{HCM}.rds.route_config_name")


def test_inline_route_config_and_prefixed_paths() -> None:
    h = hcm(None)
    h.route_config.CopyFrom(route_config("inline"))
    h.route_config.virtual_hosts[0].cors.SetInParent()
    out = parse(listener(h))
    assert out.rds_name is None
    assert out.route_config is not None and out.route_config.name == "inline"
    assert out.route_config.unsupported == ("virtual_hosts[0].cors",)
    assert out.unsupported == (f"{HCM}.route_config.virtual_hosts[0].cors",)
    # An error inside the inline route config names the listener and the full path.
    h.route_config.virtual_hosts[0].routes[0].match.safe_regex.regex = "("
    err = invalid(
        parse,
        listener(h),
        f"{HCM}.route_config.virtual_hosts[0].routes[0].match.safe_regex.regex",
    )
    assert err.resource_name == "svc:80"


def test_hcm_without_routes_nacks() -> None:
    invalid(parse, listener(hcm(None)), HCM, reason="rds or route_config")


def test_scoped_routes_nacks() -> None:
    h = hcm(None)
    h.scoped_routes.name = "s"
    invalid(parse, listener(h), f"{HCM}.scoped_routes", reason="not supported")


def test_listener_without_api_listener_nacks() -> None:
    lis = listener_pb2.Listener(name="l")
    lis.address.socket_address.address = "0.0.0.0"
    invalid(parse, lis, "api_listener", reason="HttpConnectionManager")


def test_api_listener_wrong_type_nacks() -> None:
    lis = listener_pb2.Listener(name="l")
    lis.api_listener.api_listener.Pack(route_pb2.RouteConfiguration(name="x"))
    invalid(parse, lis, HCM, reason="HttpConnectionManager")


def test_fault_filter_parsed_in_order() -> None:
    h = hcm()
    router = h.http_filters.pop()
    f = fault(delay_s=1.5, abort_status=503)
    hdr = f.headers.add(name="X-Fault")
    hdr.present_match = True
    f.max_active_faults.value = 7
    f.upstream_cluster = "up"
    h.http_filters.add(name="envoy.filters.http.fault").typed_config.Pack(f)
    h.http_filters.append(router)
    out = parse(listener(h))
    assert [f.type_name for f in out.http_filters] == [FAULT_TYPE, ROUTER_TYPE]
    cfg = out.http_filters[0].config
    assert isinstance(cfg, FaultConfig)
    assert cfg.delay is not None and cfg.delay.fixed_delay == 1.5
    assert cfg.delay.percentage == FractionalPercent(50, 100)
    assert cfg.abort is not None and cfg.abort.http_status == 503
    assert cfg.headers[0].name == "x-fault"
    assert cfg.max_active_faults == 7 and cfg.upstream_cluster == "up"


def test_fault_header_controlled_and_grpc_status() -> None:
    h = hcm()
    router = h.http_filters.pop()
    f = fault()
    f.delay.header_delay.SetInParent()
    f.abort.grpc_status = 14
    f.abort.percentage.numerator = 5
    f.abort.percentage.denominator = 2  # MILLION
    h.http_filters.add(name="fault").typed_config.Pack(f)
    h.http_filters.append(router)
    cfg = parse(listener(h)).http_filters[0].config
    assert cfg.delay.header_delay and cfg.delay.fixed_delay is None
    assert cfg.delay.percentage == FractionalPercent(0, 100)
    assert cfg.abort.grpc_status == 14
    assert cfg.abort.percentage == FractionalPercent(5, 1_000_000)


def test_fault_bad_http_status_nacks() -> None:
    h = hcm()
    router = h.http_filters.pop()
    h.http_filters.add(name="fault").typed_config.Pack(fault(abort_status=700))
    h.http_filters.append(router)
    invalid(parse, listener(h), f"{HCM}.http_filters[0].typed_config.abort.http_status")


def _custom_filter(h: object, optional: bool) -> None:
    ts = typed_struct_pb2.TypedStruct(type_url="type.googleapis.com/acme.Filter")
    ts.value.update({"knob": 1})
    router = h.http_filters.pop()  # type: ignore[attr-defined]
    f = h.http_filters.add(name="acme", is_optional=optional)  # type: ignore[attr-defined]
    f.typed_config.Pack(ts)
    h.http_filters.append(router)  # type: ignore[attr-defined]


def test_unknown_required_filter_nacks() -> None:
    h = hcm()
    _custom_filter(h, optional=False)
    invalid(parse, listener(h), f"{HCM}.http_filters[0].typed_config", reason="is_optional")


def test_unknown_optional_filter_skipped() -> None:
    h = hcm()
    _custom_filter(h, optional=True)
    out = parse(listener(h))
    assert [f.type_name for f in out.http_filters] == [ROUTER_TYPE]
    assert out.unsupported == (f"{HCM}.http_filters[0].typed_config",)


def test_router_must_be_last_and_present() -> None:
    h = hcm()
    h.http_filters.add(name="fault").typed_config.Pack(fault(abort_status=503))
    invalid(parse, listener(h), f"{HCM}.http_filters[1]", reason="last")
    h = hcm()
    h.ClearField("http_filters")
    invalid(parse, listener(h), f"{HCM}.http_filters", reason="router")


def test_duplicate_filter_names_nack() -> None:
    h = hcm()
    h.http_filters.add(name="envoy.filters.http.router").typed_config.Pack(router_pb2.Router())
    invalid(parse, listener(h), f"{HCM}.http_filters[1].name", reason="duplicate")


def test_ecds_filter_nacks() -> None:
    h = hcm()
    router = h.http_filters.pop()
    f = h.http_filters.add(name="ecds")
    f.config_discovery.config_source.ads.SetInParent()
    h.http_filters.append(router)
    invalid(parse, listener(h), f"{HCM}.http_filters[0].config_discovery")


def test_max_stream_duration_and_unsupported_hcm_fields() -> None:
    h = hcm()
    h.common_http_protocol_options.max_stream_duration.FromMilliseconds(1500)
    h.stat_prefix = "benign"
    h.tracing.SetInParent()
    out = parse(listener(h))
    assert out.max_stream_duration == 1.5
    # max_stream_duration is parsed but applies to gRPC calls only (A31): warned.
    assert out.unsupported == (
        f"{HCM}.common_http_protocol_options.max_stream_duration",
        f"{HCM}.tracing",
    )


def test_empty_listener_name_nacks() -> None:
    invalid(parse, listener(hcm(), name=""), "name")
