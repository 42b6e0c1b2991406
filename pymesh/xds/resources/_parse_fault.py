"""envoy.extensions.filters.http.fault.v3.HTTPFault → FaultConfig, and per-filter configs."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 - registers Router

from pymesh.xds.resources._common import (
    Ctx,
    duration,
    fractional_percent,
    join,
    note,
    type_name,
    unpack,
    wrapped,
)
from pymesh.xds.resources._parse_matchers import header_matcher
from pymesh.xds.resources._parse_rbac import rbac_per_route_from_any
from pymesh.xds.resources._parse_session import per_route_from_any
from pymesh.xds.resources.fault import FaultAbort, FaultConfig, FaultDelay
from pymesh.xds.resources.matchers import FractionalPercent
from pymesh.xds.resources.rbac import RBAC_PER_ROUTE_TYPE
from pymesh.xds.resources.session import STATEFUL_SESSION_PER_ROUTE_TYPE

FAULT_TYPE = "envoy.extensions.filters.http.fault.v3.HTTPFault"
FILTER_CONFIG_TYPE = "envoy.config.route.v3.FilterConfig"


def _percentage(ctx: Ctx, msg: Any, path: str) -> FractionalPercent:
    # Unset percentage is the proto default 0 (Envoy injects nothing).
    if not msg.HasField("percentage"):
        return FractionalPercent(0, 100)
    return fractional_percent(ctx, msg.percentage, join(path, "percentage"))  # type: ignore[no-any-return]


def fault_config(ctx: Ctx, msg: Any, path: str) -> FaultConfig:
    """Parse an HTTPFault message (filter config or per-route override)."""
    delay: FaultDelay | None = None
    if msg.HasField("delay"):
        p = join(path, "delay")
        d = msg.delay
        which = d.WhichOneof("fault_delay_secifier")
        pct = _percentage(ctx, d, p)
        if which == "fixed_delay":
            delay = FaultDelay(
                pct, fixed_delay=duration(ctx, d.fixed_delay, join(p, "fixed_delay"))
            )
        elif which == "header_delay":
            ctx.check(d.header_delay, join(p, "header_delay"))
            delay = FaultDelay(pct, header_delay=True)
        else:
            ctx.fail(p, "one of fixed_delay or header_delay is required")
        ctx.check(d, p)
    abort: FaultAbort | None = None
    if msg.HasField("abort"):
        p = join(path, "abort")
        a = msg.abort
        which = a.WhichOneof("error_type")
        pct = _percentage(ctx, a, p)
        if which == "http_status":
            if not 200 <= a.http_status < 600:
                ctx.fail(join(p, "http_status"), f"must be in [200, 600), got {a.http_status}")
            abort = FaultAbort(pct, http_status=int(a.http_status))
        elif which == "grpc_status":
            abort = FaultAbort(pct, grpc_status=int(a.grpc_status))
        elif which == "header_abort":
            ctx.check(a.header_abort, join(p, "header_abort"))
            abort = FaultAbort(pct, header_abort=True)
        else:
            ctx.fail(p, "one of http_status, grpc_status or header_abort is required")
        ctx.check(a, p)
    headers = tuple(
        header_matcher(ctx, h, join(path, f"headers[{i}]")) for i, h in enumerate(msg.headers)
    )
    ctx.check(msg, path)
    return FaultConfig(
        delay=delay,
        abort=abort,
        headers=headers,
        max_active_faults=wrapped(msg, "max_active_faults", None),
        upstream_cluster=msg.upstream_cluster or None,
    )


def fault_from_any(ctx: Ctx, any_msg: Any, path: str) -> FaultConfig:
    return fault_config(ctx, unpack(ctx, any_msg, fault_pb2.HTTPFault, path), path)


def typed_per_filter_config(ctx: Ctx, entries: Any, path: str) -> dict[str, Any]:
    """typed_per_filter_config → {filter name: FaultConfig, RbacConfig,
    StatefulSessionPerRoute or None}.

    HTTPFault, RBACPerRoute and StatefulSessionPerRoute overrides are parsed (also inside an
    ``envoy.config.route.v3.FilterConfig`` wrapper); other types are kept as None and
    recorded as unsupported.
    """
    out: dict[str, Any] = {}
    for name in sorted(entries):
        any_msg = entries[name]
        p = f'{path}["{name}"]'
        tn = type_name(any_msg.type_url)
        if tn == FILTER_CONFIG_TYPE:
            wrapper = unpack(ctx, any_msg, route_components_pb2.FilterConfig, p)
            if wrapper.disabled:
                ctx.unsupported_field(join(p, "disabled"), note(FILTER_CONFIG_TYPE, "disabled"))
                out[name] = None
                continue
            ctx.check(wrapper, p)
            any_msg = wrapper.config
            p = join(p, "config")
            tn = type_name(any_msg.type_url)
        if tn == FAULT_TYPE:
            out[name] = fault_from_any(ctx, any_msg, p)
        elif tn == RBAC_PER_ROUTE_TYPE:
            out[name] = rbac_per_route_from_any(ctx, any_msg, p)
        elif tn == STATEFUL_SESSION_PER_ROUTE_TYPE:
            out[name] = per_route_from_any(ctx, any_msg, p)
        else:
            ctx.unsupported_field(p, f"per-filter config type {tn} is not supported; kept as None")
            out[name] = None
    return out
