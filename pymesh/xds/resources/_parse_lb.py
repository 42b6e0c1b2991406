"""Cluster load-balancing config (lb_policy enum or load_balancing_policy) → LbPolicy."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (
    client_side_weighted_round_robin_pb2 as cswrr_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.pick_first.v3 import pick_first_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct_pb2
from xds.type.v3 import typed_struct_pb2

from pymesh.xds.resources._common import (
    Ctx,
    duration,
    join,
    opt_duration,
    type_name,
    unpack,
    wrapped,
)
from pymesh.xds.resources.cluster import PEAK_EWMA_TYPE, LbPolicy, SlowStart, WrrConfig

MAX_RING_SIZE = 8 * 1024 * 1024
MAX_MAGLEV_TABLE = 5_000_011

_LB_ENUM = {0: "round_robin", 1: "least_request", 2: "ring_hash", 3: "random", 5: "maglev"}
HashFunction = Literal["XX_HASH", "MURMUR_HASH_2"]
_RING_HASH_ENUM: dict[int, HashFunction] = {0: "XX_HASH", 1: "MURMUR_HASH_2"}
# RingHash extension: DEFAULT_HASH (0) is xxHash.
_RING_HASH_EXT: dict[int, HashFunction] = {0: "XX_HASH", 1: "XX_HASH", 2: "MURMUR_HASH_2"}

_PFX = "envoy.extensions.load_balancing_policies."
_ROUND_ROBIN = _PFX + "round_robin.v3.RoundRobin"
_LEAST_REQUEST = _PFX + "least_request.v3.LeastRequest"
_RANDOM = _PFX + "random.v3.Random"
_RING_HASH = _PFX + "ring_hash.v3.RingHash"
_MAGLEV = _PFX + "maglev.v3.Maglev"
_PICK_FIRST = _PFX + "pick_first.v3.PickFirst"
_WRR_LOCALITY = _PFX + "wrr_locality.v3.WrrLocality"
_CSWRR = _PFX + "client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin"
#: gRFC A58: a weight_update_period below this is raised to it.
MIN_WEIGHT_UPDATE_PERIOD = 0.1
_TYPED_STRUCTS = {
    "xds.type.v3.TypedStruct": typed_struct_pb2.TypedStruct,
    "udpa.type.v1.TypedStruct": udpa_typed_struct_pb2.TypedStruct,
}


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    i = 3
    while i * i <= n:
        if n % i == 0:
            return False
        i += 2
    return True


def _ring_sizes(ctx: Ctx, msg: Any, path: str) -> tuple[int, int]:
    lo = int(wrapped(msg, "minimum_ring_size", 1024))
    hi = int(wrapped(msg, "maximum_ring_size", MAX_RING_SIZE))
    for name, v in (("minimum_ring_size", lo), ("maximum_ring_size", hi)):
        if v > MAX_RING_SIZE:
            ctx.fail(join(path, name), f"must be at most {MAX_RING_SIZE}, got {v}")
    if lo > hi:
        ctx.fail(
            join(path, "minimum_ring_size"),
            f"minimum_ring_size ({lo}) must not exceed maximum_ring_size ({hi})",
        )
    return lo, hi


def _table_size(ctx: Ctx, msg: Any, path: str) -> int:
    size = int(wrapped(msg, "table_size", 65537))
    if not _is_prime(size) or size > MAX_MAGLEV_TABLE:
        ctx.fail(
            join(path, "table_size"), f"must be a prime number <= {MAX_MAGLEV_TABLE}, got {size}"
        )
    return size


def _slow_start(ctx: Ctx, owner: Any, path: str) -> dict[str, Any]:
    """``owner.slow_start_config`` (the cluster's or the policy extension's) → the
    ``slow_start`` keyword of LbPolicy; nothing when unset or its window is 0 (Envoy:
    slow start is off)."""
    if not owner.HasField("slow_start_config"):
        return {}
    p = join(path, "slow_start_config")
    msg = owner.slow_start_config
    ctx.check(msg, p)
    window = duration(ctx, msg.slow_start_window, join(p, "slow_start_window"))
    aggression = 1.0
    if msg.HasField("aggression"):
        ctx.check(msg.aggression, join(p, "aggression"))
        aggression = float(msg.aggression.default_value)
        if not aggression > 0 or math.isnan(aggression):
            # Envoy accepts the value and uses 1.0 (logging an error): so do we, counted.
            ctx.unsupported_field(join(p, "aggression"), "must be > 0; 1.0 is used, as Envoy")
            aggression = 1.0
    min_percent = 10.0
    if msg.HasField("min_weight_percent"):
        min_percent = float(msg.min_weight_percent.value)
        if not 0.0 <= min_percent <= 100.0:
            ctx.fail(join(p, "min_weight_percent"), f"must be in 0..100, got {min_percent}")
    if window <= 0:
        return {}
    return {"slow_start": SlowStart(window, aggression, min_percent)}


def _least_request(ctx: Ctx, msg: Any, path: str) -> dict[str, Any]:
    choice = int(wrapped(msg, "choice_count", 2))
    if choice < 2:
        ctx.fail(join(path, "choice_count"), f"choice_count must be at least 2, got {choice}")
    bias = 1.0
    if msg.HasField("active_request_bias"):
        bias = float(msg.active_request_bias.default_value)
        if bias < 0:
            ctx.fail(join(path, "active_request_bias"), "active_request_bias must be >= 0")
        ctx.check(msg.active_request_bias, join(path, "active_request_bias"))
    return {"choice_count": choice, "active_request_bias": bias, **_slow_start(ctx, msg, path)}


def from_enum(ctx: Ctx, cluster: Any) -> LbPolicy:
    """The legacy ``lb_policy`` enum plus its ``*_lb_config`` oneof."""
    name = _LB_ENUM.get(int(cluster.lb_policy))
    if name is None:
        ctx.fail(
            "lb_policy",
            f"lb_policy {cluster.lb_policy} is not supported (use "
            "ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV)",
        )
    kw: dict[str, Any] = {"name": name}
    if name == "least_request" and cluster.HasField("least_request_lb_config"):
        p = "least_request_lb_config"
        kw.update(_least_request(ctx, cluster.least_request_lb_config, p))
        ctx.check(cluster.least_request_lb_config, p)
    elif name == "round_robin" and cluster.HasField("round_robin_lb_config"):
        p = "round_robin_lb_config"
        kw.update(_slow_start(ctx, cluster.round_robin_lb_config, p))
        ctx.check(cluster.round_robin_lb_config, p)
    elif name == "ring_hash" and cluster.HasField("ring_hash_lb_config"):
        p = "ring_hash_lb_config"
        rh = cluster.ring_hash_lb_config
        kw["min_ring_size"], kw["max_ring_size"] = _ring_sizes(ctx, rh, p)
        kw["hash_function"] = _RING_HASH_ENUM.get(int(rh.hash_function))
        if kw["hash_function"] is None:
            ctx.fail(join(p, "hash_function"), f"unknown hash_function {rh.hash_function}")
        ctx.check(rh, p)
    elif name == "maglev" and cluster.HasField("maglev_lb_config"):
        kw["table_size"] = _table_size(ctx, cluster.maglev_lb_config, "maglev_lb_config")
        ctx.check(cluster.maglev_lb_config, "maglev_lb_config")
    return LbPolicy(**kw)


def _struct_number(ctx: Ctx, value: Any, path: str) -> float:
    """A TypedStruct duration: a number of seconds or a string such as ``"2.5s"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out = float(value)
    elif isinstance(value, str) and value.endswith("s"):
        try:
            out = float(value[:-1])
        except ValueError:
            ctx.fail(path, f"{value!r} is not a duration such as '10s'")
    else:
        ctx.fail(path, f"{value!r} is not a number of seconds or a duration such as '10s'")
    if out <= 0:
        ctx.fail(path, "must be greater than 0")
    return out


def _value(v: Any) -> Any:
    """google.protobuf.Value → plain Python value."""
    kind = v.WhichOneof("kind")
    if kind == "struct_value":
        return _struct(v.struct_value)
    if kind == "list_value":
        return [_value(x) for x in v.list_value.values]
    if kind == "null_value" or kind is None:
        return None
    return getattr(v, kind)


def _struct(s: Any) -> dict[str, Any]:
    return {k: _value(s.fields[k]) for k in s.fields}


def _typed_struct(ctx: Ctx, any_msg: Any, path: str) -> LbPolicy | None:
    ts = unpack(ctx, any_msg, _TYPED_STRUCTS[type_name(any_msg.type_url)], path)
    if type_name(ts.type_url) != PEAK_EWMA_TYPE:
        return None
    ctx.check(ts, path)
    params = _struct(ts.value)
    decay = 10.0
    if "decay_time" in params:
        decay = _struct_number(ctx, params["decay_time"], join(path, "value.decay_time"))
    return LbPolicy(name="peak_ewma", decay_time=decay, params=params)


def _cswrr(ctx: Ctx, msg: Any, path: str) -> LbPolicy:
    """ClientSideWeightedRoundRobin with Envoy's / gRPC's defaults (gRFC A58)."""
    ctx.check(msg, path)

    def period(name: str, default: float) -> float:
        value = opt_duration(ctx, msg, name, path)
        return default if value is None else value

    penalty = float(wrapped(msg, "error_utilization_penalty", 1.0))
    if penalty < 0:
        ctx.fail(
            join(path, "error_utilization_penalty"),
            f"error_utilization_penalty must be >= 0, got {penalty}",
        )
    update = period("weight_update_period", 1.0)
    config = WrrConfig(
        enable_oob_load_report=bool(wrapped(msg, "enable_oob_load_report", False)),
        oob_reporting_period=period("oob_reporting_period", 10.0),
        blackout_period=period("blackout_period", 10.0),
        weight_expiration_period=period("weight_expiration_period", 180.0),
        weight_update_period=max(update, MIN_WEIGHT_UPDATE_PERIOD),
        error_utilization_penalty=penalty,
        metric_names_for_computing_utilization=tuple(msg.metric_names_for_computing_utilization),
    )
    return LbPolicy(name="client_side_weighted_round_robin", wrr=config)


def _one_policy(ctx: Ctx, ext: Any, path: str, nested: bool) -> LbPolicy | None:
    """One typed_extension_config; None when the type is not supported (try the next)."""
    any_msg = ext.typed_config
    tn = type_name(any_msg.type_url)
    if tn == _ROUND_ROBIN:
        rr = unpack(ctx, any_msg, round_robin_pb2.RoundRobin, path)
        ctx.check(rr, path)
        return LbPolicy(name="round_robin", **_slow_start(ctx, rr, path))
    if tn == _RANDOM:
        ctx.check(unpack(ctx, any_msg, random_pb2.Random, path), path)
        return LbPolicy(name="random")
    if tn == _PICK_FIRST:
        ctx.check(unpack(ctx, any_msg, pick_first_pb2.PickFirst, path), path)
        return LbPolicy(name="pick_first")
    if tn == _LEAST_REQUEST:
        lr = unpack(ctx, any_msg, least_request_pb2.LeastRequest, path)
        ctx.check(lr, path)
        return LbPolicy(name="least_request", **_least_request(ctx, lr, path))
    if tn == _RING_HASH:
        rh = unpack(ctx, any_msg, ring_hash_pb2.RingHash, path)
        lo, hi = _ring_sizes(ctx, rh, path)
        fn = _RING_HASH_EXT.get(int(rh.hash_function))
        if fn is None:
            ctx.fail(join(path, "hash_function"), f"unknown hash_function {rh.hash_function}")
        ctx.check(rh, path)
        return LbPolicy(name="ring_hash", min_ring_size=lo, max_ring_size=hi, hash_function=fn)
    if tn == _MAGLEV:
        mg = unpack(ctx, any_msg, maglev_pb2.Maglev, path)
        ctx.check(mg, path)
        return LbPolicy(name="maglev", table_size=_table_size(ctx, mg, path))
    if tn == _CSWRR:
        return _cswrr(ctx, unpack(ctx, any_msg, cswrr_pb2.ClientSideWeightedRoundRobin, path), path)
    if tn == _WRR_LOCALITY and not nested:
        wl = unpack(ctx, any_msg, wrr_locality_pb2.WrrLocality, path)
        ctx.check(wl, path)
        child = policy_list(
            ctx, wl.endpoint_picking_policy, join(path, "endpoint_picking_policy"), nested=True
        )
        return dataclasses.replace(child, locality_weighted=True)
    if tn in _TYPED_STRUCTS:
        return _typed_struct(ctx, any_msg, path)
    return None


def policy_list(ctx: Ctx, msg: Any, path: str, nested: bool = False) -> LbPolicy:
    """envoy.config.cluster.v3.LoadBalancingPolicy: the first supported policy wins."""
    skipped: list[tuple[int, str]] = []
    ctx.check(msg, path)
    for i, pol in enumerate(msg.policies):
        pp = join(path, f"policies[{i}]")
        ctx.check(pol, pp)
        ctx.check(
            pol.typed_extension_config,
            join(pp, "typed_extension_config"),
            "envoy.config.core.v3.TypedExtensionConfig@lb",
        )
        p = join(pp, "typed_extension_config.typed_config")
        found = _one_policy(ctx, pol.typed_extension_config, p, nested)
        if found is not None:
            # The spec skips what a client does not support; say so for what was skipped.
            for j, tn in skipped:
                ctx.unsupported_field(
                    join(path, f"policies[{j}].typed_extension_config.typed_config"),
                    f"load balancing policy {tn} is not supported; "
                    f"the first supported entry ({found.name}) is used",
                )
            return found
        skipped.append(
            (i, type_name(pol.typed_extension_config.typed_config.type_url) or "<empty>")
        )
    ctx.fail(
        join(path, "policies"),
        f"no supported load balancing policy in [{', '.join(tn for _, tn in skipped)}]; "
        "supported: round_robin, "
        "least_request, random, ring_hash, maglev, pick_first, wrr_locality, "
        "client_side_weighted_round_robin and "
        f"{PEAK_EWMA_TYPE} (in a TypedStruct)",
    )
