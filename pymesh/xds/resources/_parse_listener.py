"""envoy.config.listener.v3.Listener (api_listener + HttpConnectionManager) → Listener."""

from __future__ import annotations

from typing import Any

from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pymesh.xds.resources import _parse_route
from pymesh.xds.resources._common import (
    Ctx,
    check_config_source,
    config_source_is_ads_or_self,
    join,
    note,
    opt_duration,
    type_name,
    unpack,
)
from pymesh.xds.resources._parse_fault import fault_from_any
from pymesh.xds.resources._parse_rbac import rbac_from_any
from pymesh.xds.resources._parse_session import stateful_session_from_any
from pymesh.xds.resources.listener import FAULT_TYPE, ROUTER_TYPE, HttpFilter, Listener
from pymesh.xds.resources.rbac import RBAC_TYPE
from pymesh.xds.resources.route import RouteConfiguration
from pymesh.xds.resources.session import STATEFUL_SESSION_TYPE

HCM_TYPE = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_TYPED_STRUCT_TYPES = ("xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct")

_HCM_PATH = "api_listener.api_listener"
_FILTER = "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter"


def _http_filter(ctx: Ctx, msg: Any, path: str) -> HttpFilter | None:
    """One http filter; None for an optional filter we do not know (skipped)."""
    optional = bool(msg.is_optional)
    if msg.HasField("config_discovery"):
        if optional:
            ctx.unsupported_field(join(path, "config_discovery"), "the optional filter is skipped")
            return None
        ctx.fail(join(path, "config_discovery"), "filter config discovery (ECDS) is not supported")
    if not msg.HasField("typed_config"):
        ctx.fail(join(path, "typed_config"), "typed_config is required")
    if msg.disabled:
        # Disabled filters are enabled per route only; that is not supported here.
        ctx.unsupported_field(join(path, "disabled"), note(_FILTER, "disabled"))
        return None
    tp = join(path, "typed_config")
    tn = type_name(msg.typed_config.type_url)
    if tn == ROUTER_TYPE:
        router = unpack(ctx, msg.typed_config, router_pb2.Router, tp)
        ctx.check(router, tp)
        ctx.check(msg, path)
        return HttpFilter(msg.name, tn, None, optional)
    if tn == FAULT_TYPE:
        fault = fault_from_any(ctx, msg.typed_config, tp)
        ctx.check(msg, path)
        return HttpFilter(msg.name, tn, fault, optional)
    if tn == RBAC_TYPE:
        # gRFC A41: enforced by pymesh's servers (pymesh.security._rbac); a client ignores it.
        rbac = rbac_from_any(ctx, msg.typed_config, tp)
        ctx.check(msg, path)
        return HttpFilter(msg.name, tn, rbac, optional)
    if tn == STATEFUL_SESSION_TYPE:
        # Parsed (Envoy and gRPC A55 support it); the field table warns that the
        # override-host routing is not applied yet.
        session = stateful_session_from_any(ctx, msg.typed_config, tp)
        ctx.check(msg, path)
        return HttpFilter(msg.name, tn, session, optional)
    if optional:
        ctx.unsupported_field(
            tp, f"filter type {tn} is not supported; the optional filter is skipped"
        )
        return None
    if tn in _TYPED_STRUCT_TYPES:
        tn = f"{tn} (custom filter)"
    ctx.fail(
        tp,
        f"http filter {msg.name!r} has unsupported type {tn}; remove it or set is_optional: true",
    )


def _http_filters(ctx: Ctx, filters: Any, path: str) -> tuple[HttpFilter, ...]:
    out: list[HttpFilter] = []
    seen: set[str] = set()
    for i, f in enumerate(filters):
        p = f"{path}[{i}]"
        if not f.name:
            ctx.fail(join(p, "name"), "filter name must not be empty")
        if f.name in seen:
            ctx.fail(join(p, "name"), f"duplicate http filter name {f.name!r}")
        seen.add(f.name)
        parsed = _http_filter(ctx, f, p)
        if parsed is None:
            continue
        if out and out[-1].type_name == ROUTER_TYPE:
            ctx.fail(p, "the router filter must be the last http filter")
        out.append(parsed)
    if not out or out[-1].type_name != ROUTER_TYPE:
        ctx.fail(path, f"the last http filter must be the router ({ROUTER_TYPE})")
    return tuple(out)


def route_specifier(ctx: Ctx, hcm: Any, p: str) -> tuple[str | None, RouteConfiguration | None]:
    """An HttpConnectionManager's routes (at ``p``), for clients and servers: the RDS
    resource name, or the inline RouteConfiguration."""
    which = hcm.WhichOneof("route_specifier")
    if which == "rds":
        rds = hcm.rds
        if not rds.route_config_name:
            ctx.fail(join(p, "rds.route_config_name"), "route_config_name must not be empty")
        if not config_source_is_ads_or_self(rds.config_source):
            ctx.fail(
                join(p, "rds.config_source"),
                "config_source must be ads or self (the route config comes over the same stream)",
            )
        ctx.check(rds, join(p, "rds"))
        check_config_source(ctx, rds.config_source, join(p, "rds.config_source"))
        return str(rds.route_config_name), None
    if which == "route_config":
        sub = ctx.child(join(p, "route_config"), "RouteConfiguration")
        return None, _parse_route.route_configuration(sub, hcm.route_config)
    if which is None:
        ctx.fail(p, "HttpConnectionManager needs rds or route_config")
    ctx.fail(join(p, which), f"{which} is not supported; use rds or route_config")


def _hcm(ctx: Ctx, hcm: Any) -> Listener:
    p = _HCM_PATH
    rds_name, route_config = route_specifier(ctx, hcm, p)
    filters = _http_filters(ctx, hcm.http_filters, join(p, "http_filters"))
    max_stream_duration = None
    if hcm.HasField("common_http_protocol_options"):
        cp = join(p, "common_http_protocol_options")
        opts = hcm.common_http_protocol_options
        # gRPC A31: unset or 0 means no limit.
        max_stream_duration = opt_duration(ctx, opts, "max_stream_duration", cp) or None
        ctx.check(opts, cp, "envoy.config.core.v3.HttpProtocolOptions@hcm")
    ctx.check(hcm, p)
    return Listener(
        name=ctx.name,
        rds_name=rds_name,
        route_config=route_config,
        http_filters=filters,
        max_stream_duration=max_stream_duration,
        unsupported=tuple(ctx.unsupported),
    )


def parse(msg: Any) -> Listener:
    ctx = Ctx("Listener", msg.name)
    if not msg.name:
        ctx.fail("name", "resource name must not be empty")
    if not msg.HasField("api_listener") or not msg.api_listener.HasField("api_listener"):
        ctx.fail(
            "api_listener",
            "pymesh uses api_listeners only: set api_listener.api_listener to an "
            "HttpConnectionManager",
        )
    any_msg = msg.api_listener.api_listener
    tn = type_name(any_msg.type_url)
    if tn != HCM_TYPE:
        ctx.fail(_HCM_PATH, f"expected an {HCM_TYPE}, got {tn}")
    hcm = unpack(ctx, any_msg, hcm_pb2.HttpConnectionManager, _HCM_PATH)
    ctx.check(msg, "")
    ctx.check(msg.api_listener, "api_listener")
    return _hcm(ctx, hcm)
