"""envoy.config.listener.v3.Listener without api_listener (gRFC A36) → ServerListener.

Rules from gRFC A36 (and A29 for the DownstreamTlsContext):

- the address is a TCP socket address (the server compares it with its own);
- ``listener_filters`` set, or ``use_original_dst`` true → NACK;
- every chain's network filters are known, uniquely named, and end in exactly one
  HttpConnectionManager; its http filters follow A39 (the client-side rules);
- the most specific chain must be unique: matchers are normalised (the Cartesian product
  of their fields, CIDRs masked) and a duplicate across chains → NACK;
- ``destination_port``, ``server_names``, ``application_protocols`` and a
  ``transport_protocol`` other than ``raw_buffer`` are accepted but never match;
- TLS credentials come from certificate provider instances; ``require_sni``, OCSP
  stapling other than lenient, and client certificates required without roots → NACK.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2  # noqa: F401  (Any types)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pymesh.xds.resources._common import (
    Ctx,
    is_set,
    join,
    type_name,
    unpack,
)
from pymesh.xds.resources._parse_listener import HCM_TYPE, _http_filters, route_specifier
from pymesh.xds.resources._parse_tls import identity_provider, validation_context_type
from pymesh.xds.resources.server_listener import (
    DownstreamTls,
    FilterChain,
    FilterChainMatch,
    HttpConnectionManager,
    IpNetwork,
    ServerListener,
    SourceType,
)

DOWNSTREAM_TLS_TYPE = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_TYPED_STRUCT_TYPES = ("xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct")
_RAW_BUFFER_NAMES = ("raw_buffer", "envoy.transport_sockets.raw_buffer")
_SOURCE_TYPES: dict[int, SourceType] = {0: "ANY", 1: "SAME_IP_OR_LOOPBACK", 2: "EXTERNAL"}


def _cidr(ctx: Ctx, msg: Any, path: str) -> IpNetwork:
    ctx.check(msg, path, "envoy.config.core.v3.CidrRange@filter_chain_match")
    try:
        ip = ipaddress.ip_address(msg.address_prefix)
    except ValueError:
        ctx.fail(join(path, "address_prefix"), f"{msg.address_prefix!r} is not an IP address")
    # A36: prefix_len clamped to the family's range, absent = 0, low bits ignored.
    length = min(int(msg.prefix_len.value) if msg.HasField("prefix_len") else 0, ip.max_prefixlen)
    return ipaddress.ip_network(f"{ip}/{length}", strict=False)


def _match(ctx: Ctx, msg: Any, path: str) -> FilterChainMatch:
    ctx.check(msg, path)
    source_type = _SOURCE_TYPES.get(int(msg.source_type))
    if source_type is None:
        ctx.fail(join(path, "source_type"), f"unknown source_type {msg.source_type}")
    for i, port in enumerate(msg.source_ports):
        if not 0 < port <= 65535:
            ctx.fail(join(path, f"source_ports[{i}]"), f"{port} is not a port (1..65535)")
    return FilterChainMatch(
        destination_port=msg.destination_port.value if msg.HasField("destination_port") else None,
        prefix_ranges=tuple(
            _cidr(ctx, c, join(path, f"prefix_ranges[{i}]"))
            for i, c in enumerate(msg.prefix_ranges)
        ),
        source_type=source_type,
        source_prefix_ranges=tuple(
            _cidr(ctx, c, join(path, f"source_prefix_ranges[{i}]"))
            for i, c in enumerate(msg.source_prefix_ranges)
        ),
        source_ports=tuple(int(p) for p in msg.source_ports),
        server_names=tuple(msg.server_names),
        transport_protocol=msg.transport_protocol,
        application_protocols=tuple(msg.application_protocols),
    )


def _normalised(m: FilterChainMatch) -> set[tuple[object, ...]]:
    """A36's disjunctive normal form of a matcher, for the uniqueness check."""

    def opt(values: tuple[Any, ...]) -> tuple[Any, ...]:
        return values or (None,)

    return set(
        itertools.product(
            (m.destination_port,),
            opt(m.prefix_ranges),
            (m.source_type,),
            opt(m.source_prefix_ranges),
            opt(m.source_ports),
            opt(m.server_names),
            (m.transport_protocol,),
            opt(m.application_protocols),
        )
    )


def _hcm(ctx: Ctx, hcm: Any, p: str) -> HttpConnectionManager:
    rds_name, route_config = route_specifier(ctx, hcm, p)
    filters = _http_filters(ctx, hcm.http_filters, join(p, "http_filters"))
    ctx.check(hcm, p)
    return HttpConnectionManager(rds_name, route_config, filters)


def _filters(ctx: Ctx, filters: Any, path: str) -> HttpConnectionManager:
    seen: set[str] = set()
    out: HttpConnectionManager | None = None
    for i, f in enumerate(filters):
        p = f"{path}[{i}]"
        ctx.check(f, p)
        if f.name in seen:
            ctx.fail(join(p, "name"), f"duplicate network filter name {f.name!r}")
        seen.add(f.name)
        if not f.HasField("typed_config"):
            ctx.fail(join(p, "typed_config"), "typed_config is required")
        tn = type_name(f.typed_config.type_url)
        if tn != HCM_TYPE:
            ctx.fail(
                join(p, "typed_config"),
                f"network filter {f.name!r} has unsupported type {tn}; a gRPC server "
                "supports only the HttpConnectionManager",
            )
        if out is not None:
            ctx.fail(p, "exactly one HttpConnectionManager is allowed per filter chain")
        tp = join(p, "typed_config")
        out = _hcm(ctx, unpack(ctx, f.typed_config, hcm_pb2.HttpConnectionManager, tp), tp)
    if out is None:
        ctx.fail(path, "a filter chain needs an HttpConnectionManager as its last filter")
    return out


def downstream_tls(ctx: Ctx, any_msg: Any, path: str) -> DownstreamTls:
    """Parse a DownstreamTlsContext (a filter chain's transport socket)."""
    dtc = unpack(ctx, any_msg, tls_pb2.DownstreamTlsContext, path)
    ctx.check(dtc, path)
    if dtc.require_sni.value:
        ctx.fail(join(path, "require_sni"), "require_sni is not supported (gRFC A29)")
    if dtc.ocsp_staple_policy != tls_pb2.DownstreamTlsContext.LENIENT_STAPLING:
        ctx.fail(join(path, "ocsp_staple_policy"), "only LENIENT_STAPLING is supported (A29)")
    cp = join(path, "common_tls_context")
    c = dtc.common_tls_context
    for sds in ("tls_certificate_sds_secret_configs", "validation_context_sds_secret_config"):
        if is_set(c, sds):
            ctx.fail(join(cp, sds), "SDS is not supported; use certificate provider instances")
    if c.tls_certificates:
        ctx.fail(
            join(cp, "tls_certificates"),
            "a server takes its certificate from tls_certificate_provider_instance (A29)",
        )
    identity = identity_provider(ctx, c, cp)
    if identity is None:
        ctx.fail(
            join(cp, "tls_certificate_provider_instance"),
            "a server needs its certificate: set tls_certificate_provider_instance",
        )
    validation, sans, trusted = validation_context_type(ctx, c, cp)
    if trusted is not None and c.WhichOneof("validation_context_type") == "validation_context":
        ctx.fail(
            join(cp, "validation_context.trusted_ca"),
            "use ca_certificate_provider_instance for the client roots (A29)",
        )
    require = bool(dtc.require_client_certificate.value)
    if require and validation is None:
        ctx.fail(
            join(path, "require_client_certificate"),
            "client certificates are required but no validation context names their roots",
        )
    if c.HasField("tls_params"):
        ctx.check(c.tls_params, join(cp, "tls_params"))
    ctx.check(c, cp)
    return DownstreamTls(
        identity=identity,
        validation=validation,
        require_client_certificate=require,
        san_matchers=sans,
        alpn_protocols=tuple(c.alpn_protocols),
    )


def _transport_socket(ctx: Ctx, ts: Any, path: str) -> DownstreamTls | None:
    ctx.check(ts, path, "envoy.config.core.v3.TransportSocket@server")
    if not ts.HasField("typed_config"):
        if ts.name in _RAW_BUFFER_NAMES or not ts.name:
            return None
        ctx.fail(join(path, "typed_config"), f"transport socket {ts.name!r} needs typed_config")
    tn = type_name(ts.typed_config.type_url)
    if tn == DOWNSTREAM_TLS_TYPE:
        return downstream_tls(ctx, ts.typed_config, join(path, "typed_config"))
    if tn == "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer":
        return None
    ctx.fail(join(path, "typed_config"), f"transport socket type {tn} is not supported")


def _chain(ctx: Ctx, msg: Any, path: str) -> FilterChain:
    ctx.check(msg, path)
    match = _match(ctx, msg.filter_chain_match, join(path, "filter_chain_match"))
    tls = None
    if msg.HasField("transport_socket"):
        tls = _transport_socket(ctx, msg.transport_socket, join(path, "transport_socket"))
    hcm = _filters(ctx, msg.filters, join(path, "filters"))
    return FilterChain(msg.name, match, tls, hcm)


def parse(msg: Any) -> ServerListener:
    """Parse a Listener that has no api_listener (a server's listening socket)."""
    ctx = Ctx("Listener", msg.name)
    if not msg.name:
        ctx.fail("name", "resource name must not be empty")
    ctx.check(msg, "", "envoy.config.listener.v3.Listener@server")
    if msg.listener_filters:
        ctx.fail("listener_filters", "listener filters are not supported (gRFC A36)")
    if msg.use_original_dst.value:
        ctx.fail("use_original_dst", "use_original_dst is not supported (gRFC A36)")
    if not msg.HasField("address"):
        ctx.fail("address", "a server Listener needs the address it listens on")
    ctx.check(msg.address, "address", "envoy.config.core.v3.Address@listener")
    if not msg.address.HasField("socket_address"):
        ctx.fail("address.socket_address", "the address must be a TCP socket address")
    sa = msg.address.socket_address
    ctx.check(sa, "address.socket_address", "envoy.config.core.v3.SocketAddress@listener")
    if sa.protocol != 0:
        ctx.fail("address.socket_address.protocol", "only TCP is supported")
    if sa.WhichOneof("port_specifier") != "port_value":
        ctx.fail("address.socket_address.port_value", "port_value is required")
    chains: list[FilterChain] = []
    owner: dict[tuple[object, ...], int] = {}
    for i, fc in enumerate(msg.filter_chains):
        p = f"filter_chains[{i}]"
        chain = _chain(ctx, fc, p)
        for key in _normalised(chain.match):
            j = owner.setdefault(key, i)
            if j != i:
                ctx.fail(
                    join(p, "filter_chain_match"),
                    f"overlaps filter_chains[{j}]: the most specific chain would not be "
                    "unique (gRFC A36)",
                )
        chains.append(chain)
    default = None
    if msg.HasField("default_filter_chain"):
        default = _chain(ctx, msg.default_filter_chain, "default_filter_chain")
    return ServerListener(
        name=msg.name,
        address=sa.address,
        port=int(sa.port_value),
        filter_chains=tuple(chains),
        default_filter_chain=default,
        unsupported=tuple(ctx.unsupported),
    )
