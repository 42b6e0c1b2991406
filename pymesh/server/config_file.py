"""The mesh file: a small YAML description of services, compiled to an xDS :class:`Snapshot`.

Names follow Istio's proxyless conventions, so clients written for istiod work unchanged:

- listener and route config ``HOST:PORT`` (e.g. ``reviews:9080``), one virtual host with
  domains ``[HOST, HOST:PORT]``;
- clusters ``outbound|PORT|SUBSET|HOST`` (``outbound|9080||reviews`` holds every endpoint
  of the service, ``outbound|9080|v1|reviews`` those of version v1); EDS service name =
  cluster name;
- the listener is an ``api_listener`` whose HttpConnectionManager uses RDS over ADS, with
  http_filters ``[fault (only when a route injects faults), router]``.

Schema (every key is optional unless marked; unknown keys are errors)::

    services:
      reviews:                      # the host name clients use
        port: 9080                  # required
        protocol: http              # http | http2 | grpc (http2/grpc: HTTP/2 upstreams)
        endpoints: ["127.0.0.1:8001", {address: "127.0.0.1:8002", weight: 2}]
        versions:                   # subsets, each its own cluster
          v1: {endpoints: ["127.0.0.1:8001"]}
          v2: {endpoints: [{address: "127.0.0.1:8003", locality: us/east-1a, priority: 0,
                            health: HEALTHY, weight: 1}]}
        routes:                     # first match wins; default: everything to the service
          - name: jason
            match: {prefix: /, headers: {end-user: {exact: jason}}, query: {debug: present}}
            split: {v2: 100}        # version -> weight; also other services: {ratings: 1}
            timeout: 2s
            retries: {attempts: 3, on: "5xx,reset", per_try_timeout: 500ms,
                      backoff: {base: 25ms, max: 250ms}}
            fault: {abort: {status: 503, percent: 10}, delay: {fixed: 100ms, percent: 5}}
          - split: {v1: 90, v2: 10}
        traffic_policy:
          lb: ROUND_ROBIN           # LEAST_REQUEST | RANDOM | RING_HASH | MAGLEV
                                    # | CLIENT_SIDE_WEIGHTED_ROUND_ROBIN (ORCA, gRFC A58)
          weighted_round_robin: {blackout_period: 10s, weight_update_period: 1s,
                                 weight_expiration_period: 3m, error_utilization_penalty: 1,
                                 enable_oob_load_report: false, oob_reporting_period: 10s,
                                 metric_names_for_computing_utilization: []}
                                    # (see docs/mesh-file.md for what gRPC gets)
          hash_on: {header: x-user} # or {cookie: name} | {query: name} | {source_ip: true}
          outlier_detection: {consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s,
                              max_ejection_percent: 50}   # any OutlierDetection field
          circuit_breakers: {max_connections: 100, max_requests: 100,
                             max_pending_requests: 100, max_retries: 3}
          tls: {mode: ISTIO_MUTUAL} # or DISABLE; optional subject_alt_names: [...], sni
        inbound:                    # the server side: gRFC A36 Listeners (see _inbound.py)
          mtls: STRICT              # or DISABLE
          authorization: [{action: ALLOW, rules: [{from: [{source: {principals: [...]}}],
                                                   to: [{operation: {paths: [...]}}]}]}]
    raw:                            # Envoy resources in proto-JSON form, appended as-is
      listeners: []
      routes: []
      clusters: []
      endpoints: []

Match: exactly one of ``prefix`` (default ``/``), ``path`` and ``regex`` (RE2); header
and query matchers take a string (exact) or one of ``exact``, ``prefix``, ``suffix``,
``contains``, ``regex``, ``present`` plus ``invert`` (headers only). Endpoint addresses
are IP literals, ``IP:PORT`` or just ``IP`` (the service port). Durations are ``250ms``,
``2s``, ``1m``, ``1h`` or a number of seconds. Fault ``percent`` may be fractional.

Errors raise :class:`pymesh.errors.ConfigFileError` with a dotted path such as
``services.reviews.routes[0].split`` and, when loaded from a file, the line number.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import re2
import yaml
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    health_check_pb2,
)
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (
    client_side_weighted_round_robin_pb2 as cswrr_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2 as tls_common_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, json_format  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]

from pymesh._durations import json_duration_seconds
from pymesh.errors import ConfigFileError
from pymesh.server._inbound import compile_inbound
from pymesh.server.snapshot import Snapshot, SnapshotInconsistent

__all__ = [
    "FAULT_FILTER",
    "ROUTER_FILTER",
    "cluster_name",
    "compile_mesh",
    "http_connection_manager",
    "load_config_file",
    "parse_duration",
]

ROUTER_FILTER = "envoy.filters.http.router"
FAULT_FILTER = "envoy.filters.http.fault"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS_SOCKET = "envoy.transport_sockets.tls"

_T = TypeVar("_T")
# protobuf's JSON Duration ("2s", "-1.5s"): handed to protobuf, which also checks range.
_SECONDS = re.compile(r"^\s*-?\d+(?:\.\d+)?s\s*$")
# Istio's other units, and a bare number of seconds.
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|m|h)?\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "m": 60.0, "h": 3600.0, None: 1.0}
_HOST = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_CSWRR = "CLIENT_SIDE_WEIGHTED_ROUND_ROBIN"
_LB = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV", _CSWRR)
_WRR_DURATIONS = (
    "blackout_period",
    "weight_expiration_period",
    "weight_update_period",
    "oob_reporting_period",
)
_WRR_KEYS = (
    *_WRR_DURATIONS,
    "enable_oob_load_report",
    "error_utilization_penalty",
    "metric_names_for_computing_utilization",
)
# Policies gRPC accepts in the lb_policy enum; the others go in load_balancing_policy as a
# list whose first entry Envoy (and pymesh) use, followed by a close match for clients
# without it (gRPC takes the first policy it supports).
_LB_ENUM = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "RING_HASH": cluster_pb2.Cluster.RING_HASH,
}
_LB_LIST: dict[str, tuple[tuple[str, Callable[[], Message]], ...]] = {
    "LEAST_REQUEST": (
        ("envoy.load_balancing_policies.least_request", least_request_pb2.LeastRequest),
        ("envoy.load_balancing_policies.round_robin", round_robin_pb2.RoundRobin),
    ),
    "RANDOM": (
        ("envoy.load_balancing_policies.random", random_pb2.Random),
        ("envoy.load_balancing_policies.round_robin", round_robin_pb2.RoundRobin),
    ),
    "MAGLEV": (
        ("envoy.load_balancing_policies.maglev", maglev_pb2.Maglev),
        ("envoy.load_balancing_policies.ring_hash", ring_hash_pb2.RingHash),
    ),
}
_RETRY_ON = frozenset(
    {
        # Envoy's HTTP conditions
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        # gRPC status conditions
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
#: Istio's default retry_on, minus retriable-status-codes (meaningless without codes).
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled"
_PROTOCOLS = ("http", "http2", "grpc")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_HEALTH = tuple(health_check_pb2.HealthStatus.keys())
_STRING_MATCH = ("exact", "prefix", "suffix", "contains", "regex")


PREVIOUS_HOSTS_PREDICATE = "envoy.retry_host_predicates.previous_hosts"


def parse_duration(value: object) -> float:
    """``"250ms"``, ``"2s"``, ``"1m"``, ``"1h"``, ``"100us"`` or a number → seconds.

    Seconds (``"2s"``, ``"0.5s"``) are protobuf's JSON Duration form and protobuf parses
    them; the other units are Istio's (Go's) spellings. Raises ValueError with the
    accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 250ms, 2s, 1m; got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _SECONDS.match(value):
        try:
            seconds = json_duration_seconds(value.strip())
        except ValueError as e:
            raise ValueError(f"expected a duration like 250ms, 2s, 1m; got {value!r}: {e}") from e
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration like 250ms, 2s, 1m; got {value!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative; got {value!r}")
    return seconds


def cluster_name(host: str, port: int, subset: str = "") -> str:
    """Istio's cluster name: ``outbound|PORT|SUBSET|HOST``."""
    return f"outbound|{port}|{subset}|{host}"


def _pack(msg: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg, deterministic=True)
    return a


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def http_connection_manager(
    route_config_name: str, *, fault: bool = False, stat_prefix: str = ""
) -> hcm_pb2.HttpConnectionManager:
    """An HCM fetching ``route_config_name`` by RDS over ADS; filters [fault?, router]."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix or route_config_name,
        rds=hcm_pb2.Rds(
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.V3,
            ),
            route_config_name=route_config_name,
        ),
    )
    if fault:
        hcm.http_filters.add(name=FAULT_FILTER, typed_config=_pack(fault_pb2.HTTPFault()))
    hcm.http_filters.add(name=ROUTER_FILTER, typed_config=_pack(router_pb2.Router()))
    return hcm


# ---------------------------------------------------------------------------- context


@dataclass
class _Ctx:
    """The source name and YAML line of every dotted path, for error messages."""

    source: str
    lines: Mapping[str, int] = field(default_factory=dict)

    def fail(self, where: str, reason: str) -> NoReturn:
        path = where  # the closest enclosing path with a known line
        while path and path not in self.lines:
            shorter = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path)
            if shorter == path:
                break
            path = shorter
        raise ConfigFileError(self.source, where, reason, line=self.lines.get(path))

    def mapping(self, value: object, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping with keys {', '.join(allowed)}")
        for k in value:
            if k not in allowed:
                self.fail(
                    f"{where}.{k}" if where != _TOP else str(k),
                    f"unknown key {k!r}; allowed: {', '.join(allowed)}",
                )
        return value

    def typed(self, value: object, kind: type[_T], where: str, what: str) -> _T:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(where, f"expected {what}; got {value!r}")
        return value

    def uint(self, value: object, where: str, lo: int = 0, hi: int = 2**32 - 1) -> int:
        v = self.typed(value, int, where, f"an integer in [{lo}, {hi}]")
        if not lo <= v <= hi:
            self.fail(where, f"expected an integer in [{lo}, {hi}]; got {v}")
        return v

    def duration(self, value: object, where: str) -> duration_pb2.Duration:
        try:
            return _duration(parse_duration(value))
        except ValueError as e:
            self.fail(where, str(e))

    def percent(self, value: object, where: str) -> percent_pb2.FractionalPercent:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            self.fail(where, f"expected a percentage between 0 and 100; got {value!r}")
        if float(value).is_integer():
            return percent_pb2.FractionalPercent(
                numerator=int(value), denominator=percent_pb2.FractionalPercent.HUNDRED
            )
        return percent_pb2.FractionalPercent(
            numerator=round(value * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
        )


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so ``on: 5xx`` stays a key."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _line_map(
    node: yaml.Node, prefix: str, out: dict[str, int], source: str, seen: set[int]
) -> None:
    """Record the line of every dotted path; reject duplicate keys.

    An aliased node is walked once only: a "billion laughs" file stays linear here.
    """
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            line = key.start_mark.line + 1
            if key.value in first and key.value != "<<":
                raise ConfigFileError(
                    source,
                    path,
                    f"duplicate key {key.value!r} (first on line {first[key.value]}); keep one",
                    line=line,
                )
            first[key.value] = line
            out[path] = line
            _line_map(value, path, out, source, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            out[path] = item.start_mark.line + 1
            _line_map(item, path, out, source, seen)


# ---------------------------------------------------------------------------- public entry


def load_config_file(path: str | Path) -> Snapshot:
    """Read and compile a mesh file. Raises ConfigFileError (with line numbers)."""
    source = str(path)
    return compile_text(read_text(path), source)


def read_text(path: str | Path) -> str:
    """The file's text (UTF-8), or ConfigFileError naming why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigFileError(
            str(path),
            "<file>",
            f"cannot read the file: {e.strerror}; fix: name an existing mesh file (relative "
            "paths are from the current directory), e.g. examples/mesh.yaml",
        ) from e
    except UnicodeDecodeError as e:
        raise ConfigFileError(
            str(path), "<file>", f"not UTF-8 text (byte {e.start}); save it as UTF-8"
        ) from e


def compile_text(text: str, source: str = "<string>") -> Snapshot:
    """Compile mesh-file YAML text; errors name ``source`` and the line."""
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigFileError(
            source,
            "<yaml>",
            f"not valid YAML: {problem}; fix: correct the YAML at that line (indentation, "
            "an unclosed bracket or quote is the usual cause; docs/mesh-file.md has the schema)",
            line=line,
        ) from e
    lines: dict[str, int] = {}
    if node is not None:
        _line_map(node, "", lines, source, set())
    return _compile(data, _Ctx(source, lines))


def compile_mesh(data: Mapping[str, Any], source: str = "<dict>") -> Snapshot:
    """Compile an already-parsed mesh file (a dict) to a consistent Snapshot.

    The snapshot version is a short hash of the compiled resources.
    """
    return _compile(data, _Ctx(source))


# ---------------------------------------------------------------------------- compiler


@dataclass
class _Resources:
    listeners: list[listener_pb2.Listener] = field(default_factory=list)
    routes: list[route_pb2.RouteConfiguration] = field(default_factory=list)
    clusters: list[cluster_pb2.Cluster] = field(default_factory=list)
    endpoints: list[endpoint_pb2.ClusterLoadAssignment] = field(default_factory=list)


@dataclass(frozen=True)
class _ServiceInfo:
    name: str
    port: int
    versions: tuple[str, ...]


def _compile(data: object, ctx: _Ctx) -> Snapshot:
    top = ctx.mapping(data, _TOP, ("services", "raw"))
    services = ctx.typed(
        top.get("services") or {}, dict, "services", "a mapping of service name to service"
    )
    infos: dict[str, _ServiceInfo] = {}
    for name, spec in services.items():
        where = f"services.{name}"
        if not isinstance(name, str) or not _HOST.match(name):
            ctx.fail(where, "service names are lower-case DNS names, e.g. reviews or a.b.svc")
        s = ctx.mapping(spec, where, _SERVICE_KEYS)
        if "port" not in s:
            ctx.fail(where, "missing required key 'port' (e.g. port: 9080)")
        port = ctx.uint(s["port"], f"{where}.port", 1, 65535)
        versions = ctx.typed(
            s.get("versions") or {},
            dict,
            f"{where}.versions",
            "a mapping of version name to {endpoints: [...]}",
        )
        for v in versions:
            if not isinstance(v, str) or not _HOST.match(v) or "|" in v:
                ctx.fail(f"{where}.versions.{v}", "version names are lower-case, e.g. v1")
        infos[name] = _ServiceInfo(name, port, tuple(versions))
    out = _Resources()
    for name, spec in services.items():
        _compile_service(ctx, infos, infos[name], spec, out)
    _compile_raw(ctx, top.get("raw"), out)
    try:
        snap = Snapshot.of(
            listeners=out.listeners,
            routes=out.routes,
            clusters=out.clusters,
            endpoints=out.endpoints,
        )
    except ValueError as e:
        ctx.fail("raw", str(e))
    try:
        snap.consistent()
    except SnapshotInconsistent as e:
        ctx.fail("raw", str(e))
    return snap


_TOP = "<top>"
_SERVICE_KEYS = (
    "port",
    "protocol",
    "endpoints",
    "versions",
    "routes",
    "traffic_policy",
    "inbound",
)


def _compile_service(
    ctx: _Ctx, infos: Mapping[str, _ServiceInfo], info: _ServiceInfo, spec: Any, out: _Resources
) -> None:
    where = f"services.{info.name}"
    s: dict[str, Any] = spec
    authority = f"{info.name}:{info.port}"
    protocol = s.get("protocol", "http")
    if protocol not in _PROTOCOLS:
        ctx.fail(
            f"{where}.protocol", f"unknown protocol {protocol!r}; use one of http, http2, grpc"
        )
    policy = _traffic_policy(ctx, info, s.get("traffic_policy"), f"{where}.traffic_policy")

    # Endpoints: the base cluster gets every endpoint (service-level and all versions).
    base_eps = _endpoints(ctx, s.get("endpoints"), info.port, f"{where}.endpoints")
    subsets: dict[str, list[_Endpoint]] = {}
    versions: dict[str, Any] = s.get("versions") or {}
    for v, vspec in versions.items():
        vw = f"{where}.versions.{v}"
        vs = ctx.mapping(vspec, vw, ("endpoints",))
        subsets[v] = _endpoints(ctx, vs.get("endpoints"), info.port, f"{vw}.endpoints")
    # One address in several versions is one endpoint of the service (first spec wins).
    unique: dict[tuple[str, int], _Endpoint] = {}
    for e in base_eps + [e for eps in subsets.values() for e in eps]:
        unique.setdefault((e.ip, e.port), e)
    all_eps = list(unique.values())
    for subset, eps in [("", all_eps), *subsets.items()]:
        name = cluster_name(info.name, info.port, subset)
        out.clusters.append(_cluster(name, protocol, policy))
        out.endpoints.append(_load_assignment(name, eps))

    routes, any_fault = _routes(ctx, infos, info, s.get("routes"), policy, f"{where}.routes")
    out.routes.append(
        route_pb2.RouteConfiguration(
            name=authority,
            virtual_hosts=[
                route_components_pb2.VirtualHost(
                    name=authority, domains=[info.name, authority], routes=routes
                )
            ],
        )
    )
    hcm = http_connection_manager(authority, fault=any_fault)
    out.listeners.append(
        listener_pb2.Listener(
            name=authority, api_listener=api_listener_pb2.ApiListener(api_listener=_pack(hcm))
        )
    )
    if "inbound" in s:  # the server side (gRFC A36 Listeners): pymesh/server/_inbound.py
        out.listeners.extend(
            compile_inbound(
                ctx,
                info.name,
                s["inbound"],
                f"{where}.inbound",
                [(e.ip, e.port) for e in all_eps],
                lambda v, w: _address(ctx, v, info.port, w),
            )
        )


# ---------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class _Endpoint:
    ip: str
    port: int
    weight: int
    region: str
    zone: str
    sub_zone: str
    priority: int
    health: int


_ENDPOINT_KEYS = ("address", "weight", "locality", "priority", "health")


def _endpoints(ctx: _Ctx, value: object, default_port: int, where: str) -> list[_Endpoint]:
    if value is None:
        return []
    items = ctx.typed(value, list, where, "a list of endpoints like 127.0.0.1:8001")
    out = []
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        spec = ctx.mapping({"address": item} if isinstance(item, str) else item, w, _ENDPOINT_KEYS)
        if "address" not in spec:
            ctx.fail(w, "missing required key 'address' (e.g. address: 127.0.0.1:8001)")
        ip, port = _address(ctx, spec["address"], default_port, w)
        loc = spec.get("locality", "")
        if isinstance(loc, dict):
            loc_spec = ctx.mapping(loc, f"{w}.locality", ("region", "zone", "sub_zone"))
            parts = [str(loc_spec.get(k, "")) for k in ("region", "zone", "sub_zone")]
        else:
            loc = ctx.typed(loc, str, f"{w}.locality", "region/zone/sub_zone or a mapping")
            parts = ([*loc.split("/"), "", "", ""])[:3] if loc else ["", "", ""]
            if loc.count("/") > 2:
                ctx.fail(f"{w}.locality", f"expected region/zone/sub_zone; got {loc!r}")
        health = spec.get("health", "HEALTHY")
        if health not in _HEALTH:
            known = ", ".join(_HEALTH)
            ctx.fail(f"{w}.health", f"unknown health {health!r}; known: {known}")
        out.append(
            _Endpoint(
                ip=ip,
                port=port,
                weight=ctx.uint(spec.get("weight", 1), f"{w}.weight", 1, 128 * 1024),
                region=parts[0],
                zone=parts[1],
                sub_zone=parts[2],
                priority=ctx.uint(spec.get("priority", 0), f"{w}.priority", 0, 128),
                health=health_check_pb2.HealthStatus.Value(health),
            )
        )
        if any((e.ip, e.port) == (out[-1].ip, out[-1].port) for e in out[:-1]):
            ctx.fail(w, f"duplicate endpoint {out[-1].ip}:{out[-1].port} (gRPC rejects those)")
    # Envoy and gRPC want priorities 0..N without gaps.
    used = sorted({e.priority for e in out})
    if used and used != list(range(len(used))):
        missing = min(set(range(used[-1] + 1)) - set(used))
        ctx.fail(where, f"priorities must run from 0 without gaps; nothing has priority {missing}")
    return out


def _address(ctx: _Ctx, value: object, default_port: int, where: str) -> tuple[str, int]:
    addr = ctx.typed(value, str, f"{where}.address", "an address like 127.0.0.1:8001")
    host, port_s = addr, ""
    if addr.startswith("["):  # [v6]:port
        host, _, rest = addr[1:].partition("]")
        port_s = rest.removeprefix(":")
    elif addr.count(":") == 1:
        host, _, port_s = addr.partition(":")
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        ctx.fail(where, f"endpoint address must be an IP literal like 127.0.0.1:8001; got {addr!r}")
    if not port_s:
        return ip, default_port
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        ctx.fail(where, f"bad port in {addr!r}; expected 1..65535")
    return ip, int(port_s)


def _load_assignment(name: str, eps: list[_Endpoint]) -> endpoint_pb2.ClusterLoadAssignment:
    groups: dict[tuple[str, str, str, int], list[_Endpoint]] = {}
    for e in eps:
        groups.setdefault((e.region, e.zone, e.sub_zone, e.priority), []).append(e)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for (region, zone, sub_zone, priority), group in sorted(groups.items()):
        # gRPC ignores localities without a weight; Envoy ignores the weight unless
        # locality-weighted LB is on. The sum of endpoint weights suits both.
        lle = cla.endpoints.add(
            locality=base_pb2.Locality(region=region, zone=zone, sub_zone=sub_zone),
            priority=priority,
        )
        lle.load_balancing_weight.value = sum(e.weight for e in group)
        for e in group:
            lb = lle.lb_endpoints.add(health_status=e.health)
            lb.load_balancing_weight.value = e.weight
            lb.endpoint.address.socket_address.CopyFrom(
                address_pb2.SocketAddress(address=e.ip, port_value=e.port)
            )
    return cla


# ---------------------------------------------------------------------------- clusters


@dataclass
class _Policy:
    lb: str = "ROUND_ROBIN"
    hash_policy: list[route_components_pb2.RouteAction.HashPolicy] = field(default_factory=list)
    outlier: outlier_detection_pb2.OutlierDetection | None = None
    breakers: circuit_breaker_pb2.CircuitBreakers | None = None
    tls: tls_pb2.UpstreamTlsContext | None = None
    wrr: cswrr_pb2.ClientSideWeightedRoundRobin | None = None


_POLICY_KEYS = (
    "lb",
    "hash_on",
    "outlier_detection",
    "circuit_breakers",
    "tls",
    "weighted_round_robin",
)
_BREAKER_KEYS = ("max_connections", "max_requests", "max_pending_requests", "max_retries")


def _wrr(ctx: _Ctx, value: object, where: str) -> cswrr_pb2.ClientSideWeightedRoundRobin:
    spec = ctx.mapping(value, where, _WRR_KEYS)
    msg = cswrr_pb2.ClientSideWeightedRoundRobin()
    for key in _WRR_DURATIONS:
        if key in spec:
            getattr(msg, key).CopyFrom(ctx.duration(spec[key], f"{where}.{key}"))
    if "enable_oob_load_report" in spec:
        flag = ctx.typed(
            spec["enable_oob_load_report"], bool, f"{where}.enable_oob_load_report", "true or false"
        )
        msg.enable_oob_load_report.value = flag
    if "error_utilization_penalty" in spec:
        v = spec["error_utilization_penalty"]
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            ctx.fail(f"{where}.error_utilization_penalty", f"expected a number >= 0; got {v!r}")
        msg.error_utilization_penalty.value = float(v)
    if "metric_names_for_computing_utilization" in spec:
        w = f"{where}.metric_names_for_computing_utilization"
        names = ctx.typed(
            spec["metric_names_for_computing_utilization"], list, w, "a list of names"
        )
        msg.metric_names_for_computing_utilization.extend(str(n) for n in names)
    return msg


def _traffic_policy(ctx: _Ctx, info: _ServiceInfo, value: object, where: str) -> _Policy:
    tp = ctx.mapping(value, where, _POLICY_KEYS)
    pol = _Policy()
    if "lb" in tp:
        if tp["lb"] not in _LB:
            ctx.fail(f"{where}.lb", f"unknown lb {tp['lb']!r}; use one of {', '.join(_LB)}")
        pol.lb = tp["lb"]
    if pol.lb == _CSWRR:
        pol.wrr = _wrr(ctx, tp.get("weighted_round_robin"), f"{where}.weighted_round_robin")
    elif "weighted_round_robin" in tp:
        ctx.fail(f"{where}.weighted_round_robin", f"weighted_round_robin needs lb: {_CSWRR}")
    if "hash_on" in tp:
        if tp.get("lb") not in ("RING_HASH", "MAGLEV"):
            ctx.fail(f"{where}.hash_on", "hash_on needs lb: RING_HASH or MAGLEV")
        pol.hash_policy.append(_hash_policy(ctx, tp["hash_on"], f"{where}.hash_on"))
    if "outlier_detection" in tp:
        pol.outlier = _outlier(ctx, tp["outlier_detection"], f"{where}.outlier_detection")
    if "circuit_breakers" in tp:
        w = f"{where}.circuit_breakers"
        cb = ctx.mapping(tp["circuit_breakers"], w, _BREAKER_KEYS)
        th = circuit_breaker_pb2.CircuitBreakers.Thresholds()
        for k, v in cb.items():
            getattr(th, k).value = ctx.uint(v, f"{w}.{k}")
        pol.breakers = circuit_breaker_pb2.CircuitBreakers(thresholds=[th])
    if "tls" in tp:
        pol.tls = _tls(ctx, info, tp["tls"], f"{where}.tls")
    return pol


def _hash_policy(
    ctx: _Ctx, value: object, where: str
) -> route_components_pb2.RouteAction.HashPolicy:
    spec = ctx.mapping(value, where, ("header", "cookie", "query", "source_ip"))
    if len(spec) != 1:
        ctx.fail(where, "give exactly one of header, cookie, query, source_ip")
    ((kind, arg),) = spec.items()
    hp = route_components_pb2.RouteAction.HashPolicy
    if kind == "source_ip":
        return hp(connection_properties=hp.ConnectionProperties(source_ip=bool(arg)))
    name = ctx.typed(arg, str, f"{where}.{kind}", "a header, cookie or parameter name")
    if kind == "header":
        return hp(header=hp.Header(header_name=name))
    if kind == "cookie":
        return hp(cookie=hp.Cookie(name=name))
    return hp(query_parameter=hp.QueryParameter(name=name))


def _outlier(ctx: _Ctx, value: object, where: str) -> outlier_detection_pb2.OutlierDetection:
    fields = outlier_detection_pb2.OutlierDetection.DESCRIPTOR.fields_by_name
    allowed = tuple(
        n
        for n, f in fields.items()
        if f.message_type and f.message_type.name != "TypedExtensionConfig"
    )
    spec = ctx.mapping(value, where, allowed)
    od = outlier_detection_pb2.OutlierDetection()
    for k, v in spec.items():
        kind = fields[k].message_type.name
        if kind == "Duration":
            getattr(od, k).CopyFrom(ctx.duration(v, f"{where}.{k}"))
        elif kind == "BoolValue":
            getattr(od, k).value = ctx.typed(v, bool, f"{where}.{k}", "true or false")
        else:
            hi = 100 if "percent" in k or k.startswith("enforcing") else 2**32 - 1
            getattr(od, k).value = ctx.uint(v, f"{where}.{k}", 0, hi)
    return od


def _tls(
    ctx: _Ctx, info: _ServiceInfo, value: object, where: str
) -> tls_pb2.UpstreamTlsContext | None:
    spec = ctx.mapping(value, where, ("mode", "subject_alt_names", "sni"))
    mode = spec.get("mode", "ISTIO_MUTUAL")
    if mode == "DISABLE":
        return None
    if mode != "ISTIO_MUTUAL":
        ctx.fail(f"{where}.mode", f"unknown tls mode {mode!r}; use ISTIO_MUTUAL or DISABLE")
    sans = spec.get("subject_alt_names", [f"spiffe://cluster.local/ns/default/sa/{info.name}"])
    sans = ctx.typed(sans, list, f"{where}.subject_alt_names", "a list of URI SANs")
    provider = tls_common_pb2.CertificateProviderPluginInstance
    validation = tls_common_pb2.CertificateValidationContext(
        ca_certificate_provider_instance=provider(
            instance_name="default", certificate_name="ROOTCA"
        ),
        # The deprecated untyped field on purpose: gRPC ignores match_typed_subject_alt_names
        # (it would then accept any peer), and Envoy refuses both fields at once.
        match_subject_alt_names=[string_pb2.StringMatcher(exact=str(s)) for s in sans],
    )
    return tls_pb2.UpstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificate_provider_instance=provider(
                instance_name="default", certificate_name="default"
            ),
            validation_context=validation,
        ),
        sni=str(spec.get("sni", "")),
    )


def _cluster(name: str, protocol: str, pol: _Policy) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        lb_policy=_LB_ENUM.get(pol.lb, cluster_pb2.Cluster.ROUND_ROBIN),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.V3,
            ),
            service_name=name,
        ),
    )
    if pol.wrr is not None:
        # grpcio's xDS client maps this to its weighted_round_robin (A58); round robin
        # after it for clients without the policy.
        ext = c.load_balancing_policy.policies.add().typed_extension_config
        ext.name = "envoy.load_balancing_policies.client_side_weighted_round_robin"
        ext.typed_config.CopyFrom(_pack(pol.wrr))
        ext = c.load_balancing_policy.policies.add().typed_extension_config
        ext.name = "envoy.load_balancing_policies.round_robin"
        ext.typed_config.CopyFrom(_pack(round_robin_pb2.RoundRobin()))
    for name_, factory in _LB_LIST.get(pol.lb, ()):
        ext = c.load_balancing_policy.policies.add().typed_extension_config
        ext.name = name_
        ext.typed_config.CopyFrom(_pack(factory()))
    if protocol in ("http2", "grpc"):
        opts = http_protocol_options_pb2.HttpProtocolOptions()
        opts.explicit_http_config.http2_protocol_options.SetInParent()
        c.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(_pack(opts))
    if pol.outlier is not None:
        c.outlier_detection.CopyFrom(pol.outlier)
    if pol.breakers is not None:
        c.circuit_breakers.CopyFrom(pol.breakers)
    if pol.tls is not None:
        c.transport_socket.name = _TLS_SOCKET
        c.transport_socket.typed_config.CopyFrom(_pack(pol.tls))
    return c


# ---------------------------------------------------------------------------- routes

_ROUTE_KEYS = ("name", "match", "split", "timeout", "retries", "fault")


def _routes(
    ctx: _Ctx,
    infos: Mapping[str, _ServiceInfo],
    info: _ServiceInfo,
    value: object,
    pol: _Policy,
    where: str,
) -> tuple[list[route_components_pb2.Route], bool]:
    if value is None:
        value = [{}]
    items = ctx.typed(value, list, where, "a list of routes")
    routes, any_fault = [], False
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        spec = ctx.mapping(item, w, _ROUTE_KEYS)
        r = route_components_pb2.Route(
            name=str(spec.get("name", "")), match=_match(ctx, spec.get("match"), f"{w}.match")
        )
        action = r.route
        _destination(ctx, infos, info, spec.get("split"), action, f"{w}.split")
        action.hash_policy.extend(pol.hash_policy)
        if "timeout" in spec:
            action.timeout.CopyFrom(ctx.duration(spec["timeout"], f"{w}.timeout"))
        if "retries" in spec:
            action.retry_policy.CopyFrom(_retries(ctx, spec["retries"], f"{w}.retries"))
        if "fault" in spec:
            any_fault = True
            r.typed_per_filter_config[FAULT_FILTER].CopyFrom(
                _pack(_fault(ctx, spec["fault"], f"{w}.fault"))
            )
        routes.append(r)
    return routes, any_fault


def _destination(
    ctx: _Ctx,
    infos: Mapping[str, _ServiceInfo],
    info: _ServiceInfo,
    value: object,
    action: route_components_pb2.RouteAction,
    where: str,
) -> None:
    if value is None:
        action.cluster = cluster_name(info.name, info.port)
        return
    if isinstance(value, str):  # shorthand: split: v1
        value = {value: 100}
    split = ctx.typed(value, dict, where, "a mapping of version (or service) to weight")
    weighted = []
    for key, weight in split.items():
        w = f"{where}.{key}"
        cluster = _resolve(ctx, infos, info, key, w)
        wt = ctx.uint(weight, w, 0, 2**32 - 1)
        if wt:
            weighted.append(route_components_pb2.WeightedCluster.ClusterWeight(name=cluster))
            weighted[-1].weight.value = wt
    if not weighted:
        ctx.fail(where, "the weights must add up to more than 0")
    if len(weighted) == 1:
        action.cluster = weighted[0].name
    else:
        action.weighted_clusters.clusters.extend(weighted)


def _resolve(
    ctx: _Ctx, infos: Mapping[str, _ServiceInfo], info: _ServiceInfo, key: object, where: str
) -> str:
    """``v1`` (this service's version), ``ratings`` (a service) or ``ratings/v1``."""
    key = str(key)
    if key in info.versions:
        return cluster_name(info.name, info.port, key)
    svc, _, version = key.partition("/")
    other = infos.get(svc)
    if other is not None and (not version or version in other.versions):
        return cluster_name(other.name, other.port, version)
    if other is not None:
        known = ", ".join(other.versions) or "none"
        ctx.fail(where, f"unknown version {version!r} of service {svc!r}; known: {known}")
    known = ", ".join(info.versions) or "none"
    ctx.fail(
        where,
        f"unknown version {key!r}; known: {known} (or name a service, or service/version)",
    )


def _string_matcher(ctx: _Ctx, kind: str, arg: object, where: str) -> string_pb2.StringMatcher:
    s = ctx.typed(arg, str, f"{where}.{kind}", "a string")
    if kind == "regex":
        return string_pb2.StringMatcher(safe_regex=_regex(ctx, s, f"{where}.regex"))
    return string_pb2.StringMatcher(**{kind: s})


def _regex(ctx: _Ctx, pattern: str, where: str) -> regex_pb2.RegexMatcher:
    try:
        re2.compile(pattern, _RE2_OPTIONS)  # clients use RE2 too: reject what they would
    except re2.error as e:
        msg = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        ctx.fail(where, f"invalid RE2 regex: {msg}")
    return regex_pb2.RegexMatcher(regex=pattern)


def _match(ctx: _Ctx, value: object, where: str) -> route_components_pb2.RouteMatch:
    spec = ctx.mapping(value, where, ("prefix", "path", "regex", "headers", "query"))
    paths = [k for k in ("prefix", "path", "regex") if k in spec]
    if len(paths) > 1:
        ctx.fail(where, f"give only one of prefix, path, regex; got {', '.join(paths)}")
    m = route_components_pb2.RouteMatch()
    kind = paths[0] if paths else "prefix"
    arg = ctx.typed(spec.get(kind, "/"), str, f"{where}.{kind}", "a path string")
    if kind == "regex":
        m.safe_regex.CopyFrom(_regex(ctx, arg, f"{where}.regex"))
    else:
        if not arg.startswith("/"):
            ctx.fail(f"{where}.{kind}", f"{kind} must start with '/'; got {arg!r}")
        setattr(m, kind, arg)
    headers = ctx.typed(spec.get("headers") or {}, dict, f"{where}.headers", "a mapping")
    query = ctx.typed(spec.get("query") or {}, dict, f"{where}.query", "a mapping")
    for name, hv in headers.items():
        hw = f"{where}.headers.{name}"
        hm = m.headers.add(name=str(name))
        hspec = {"exact": hv} if isinstance(hv, str) else hv
        hspec = ctx.mapping(hspec, hw, (*_STRING_MATCH, "present", "invert"))
        kinds = [k for k in hspec if k != "invert"]
        if len(kinds) != 1:
            ctx.fail(hw, f"give exactly one of {', '.join(_STRING_MATCH)}, present")
        hm.invert_match = ctx.typed(hspec.get("invert", False), bool, f"{hw}.invert", "a bool")
        if kinds[0] == "present":
            hm.present_match = ctx.typed(hspec["present"], bool, f"{hw}.present", "a bool")
        else:
            hm.string_match.CopyFrom(_string_matcher(ctx, kinds[0], hspec[kinds[0]], hw))
    for name, qv in query.items():
        qw = f"{where}.query.{name}"
        qm = m.query_parameters.add(name=str(name))
        if qv == "present":
            qv = {"present": True}
        qspec = ctx.mapping(
            {"exact": qv} if isinstance(qv, str) else qv, qw, (*_STRING_MATCH, "present")
        )
        if len(qspec) != 1:
            ctx.fail(qw, f"give exactly one of {', '.join(_STRING_MATCH)}, present")
        ((qkind, qarg),) = qspec.items()
        if qkind == "present":
            qm.present_match = ctx.typed(qarg, bool, f"{qw}.present", "a bool")
        else:
            qm.string_match.CopyFrom(_string_matcher(ctx, qkind, qarg, qw))
    return m


def _retries(ctx: _Ctx, value: object, where: str) -> route_components_pb2.RetryPolicy:
    spec = ctx.mapping(value, where, ("attempts", "on", "per_try_timeout", "backoff"))
    on = ctx.typed(spec.get("on", DEFAULT_RETRY_ON), str, f"{where}.on", "a comma-separated list")
    tokens = [t.strip() for t in on.split(",") if t.strip()]
    for t in tokens:
        if t not in _RETRY_ON:
            ctx.fail(
                f"{where}.on",
                f"unknown retry condition {t!r}; known: {', '.join(sorted(_RETRY_ON))}",
            )
    rp = route_components_pb2.RetryPolicy(retry_on=",".join(tokens))
    rp.num_retries.value = ctx.uint(spec.get("attempts", 1), f"{where}.attempts", 0, 1000)
    # As Istio does for every retry policy: a retry goes to another host when one is
    # available (Envoy's previous_hosts predicate, up to 5 re-picks).
    predicate = rp.retry_host_predicate.add(name=PREVIOUS_HOSTS_PREDICATE)
    predicate.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    rp.host_selection_retry_max_attempts = 5
    if "per_try_timeout" in spec:
        rp.per_try_timeout.CopyFrom(
            ctx.duration(spec["per_try_timeout"], f"{where}.per_try_timeout")
        )
    if "backoff" in spec:
        bw = f"{where}.backoff"
        b = ctx.mapping(spec["backoff"], bw, ("base", "max"))
        if "base" not in b:
            ctx.fail(bw, "missing required key 'base' (e.g. base: 25ms)")
        rp.retry_back_off.base_interval.CopyFrom(ctx.duration(b["base"], f"{bw}.base"))
        if "max" in b:
            rp.retry_back_off.max_interval.CopyFrom(ctx.duration(b["max"], f"{bw}.max"))
    return rp


def _fault(ctx: _Ctx, value: object, where: str) -> fault_pb2.HTTPFault:
    spec = ctx.mapping(value, where, ("abort", "delay"))
    if not spec:
        ctx.fail(where, "give abort and/or delay")
    f = fault_pb2.HTTPFault()
    if "abort" in spec:
        aw = f"{where}.abort"
        a = ctx.mapping(spec["abort"], aw, ("status", "grpc_status", "percent"))
        if ("status" in a) == ("grpc_status" in a):
            ctx.fail(aw, "give exactly one of status (HTTP) or grpc_status")
        if "status" in a:
            f.abort.http_status = ctx.uint(a["status"], f"{aw}.status", 200, 599)
        else:
            f.abort.grpc_status = ctx.uint(a["grpc_status"], f"{aw}.grpc_status", 0, 16)
        f.abort.percentage.CopyFrom(ctx.percent(a.get("percent", 100), f"{aw}.percent"))
    if "delay" in spec:
        dw = f"{where}.delay"
        d = ctx.mapping(spec["delay"], dw, ("fixed", "percent"))
        if "fixed" not in d:
            ctx.fail(dw, "missing required key 'fixed' (e.g. fixed: 100ms)")
        f.delay.fixed_delay.CopyFrom(ctx.duration(d["fixed"], f"{dw}.fixed"))
        f.delay.percentage.CopyFrom(ctx.percent(d.get("percent", 100), f"{dw}.percent"))
    return f


# ---------------------------------------------------------------------------- raw

_RAW: dict[str, Callable[[], Message]] = {
    "listeners": listener_pb2.Listener,
    "routes": route_pb2.RouteConfiguration,
    "clusters": cluster_pb2.Cluster,
    "endpoints": endpoint_pb2.ClusterLoadAssignment,
}


def _compile_raw(ctx: _Ctx, value: object, out: _Resources) -> None:
    raw = ctx.mapping(value, "raw", tuple(_RAW))
    for kind, items in raw.items():
        where = f"raw.{kind}"
        for i, item in enumerate(ctx.typed(items or [], list, where, "a list of resources")):
            w = f"{where}[{i}]"
            msg = _RAW[kind]()
            try:
                json_format.ParseDict(ctx.typed(item, dict, w, "a resource mapping"), msg)
            except json_format.ParseError as e:
                ctx.fail(w, f"not a valid {msg.DESCRIPTOR.name}: {e}")
            getattr(out, kind).append(msg)
