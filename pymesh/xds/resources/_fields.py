"""The one table that classifies every xDS field pymesh parses: honoured, warned or NACKed.

Each message pymesh parses has an entry mapping *every* field of its protobuf descriptor
to a :class:`Field`:

- ``HONOURED``: pymesh does what Envoy (or gRPC, where the note says so) does with it.
  Some honoured fields are *inert*: they mean nothing to a client (stat names, metadata,
  a server-side listener setting), so doing nothing is doing what Envoy does.
- ``WARNED``: set, it is accepted but not (fully) acted on; the note says what pymesh does
  instead. The resource is ACKed and a counted warning names the field
  (:mod:`pymesh.xds.resources._warnings`).
- ``NACKED``: set, the resource is rejected with the note as the reason.

The parsers consult this table: :meth:`~pymesh.xds.resources._common.Ctx.check` reports the
set fields of a parsed message by their class, so the table decides. Parsers add only
*value*-level rules (an enum value's class is in the table too; conditions such as
"only on HTTP/2 clusters" are written in the parser and named in the note).

``tests/xds/resources/test_res_fields.py`` walks the protobuf descriptors from
:data:`ROOTS` and fails when a reachable field (or enum value of an honoured enum field)
is missing from the table, or when the table names a field that no longer exists, so a
new xds-protos release cannot add a silently ignored field. ``docs/features.md`` is
generated from this table: ``python -m pymesh.xds.resources._fields --markdown``
(``--check`` compares it with the checked-in file).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Imported for their side effect: Any-typed fields decode (and descriptors resolve) only
# once the message's _pb2 module is loaded.
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as _aggregate_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.http.stateful_session.cookie.v3 import cookie_pb2  # noqa: F401
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (  # noqa: F401
    client_side_weighted_round_robin_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import (  # noqa: F401
    least_request_pb2,
)
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2  # noqa: F401
from envoy.extensions.load_balancing_policies.pick_first.v3 import pick_first_pb2  # noqa: F401
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2  # noqa: F401
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2  # noqa: F401
from envoy.extensions.load_balancing_policies.round_robin.v3 import (  # noqa: F401
    round_robin_pb2,
)
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import (  # noqa: F401
    wrr_locality_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import descriptor_pool  # type: ignore[import-untyped, unused-ignore]
from udpa.type.v1 import typed_struct_pb2 as _udpa_typed_struct_pb2  # noqa: F401
from xds.type.v3 import typed_struct_pb2  # noqa: F401

__all__ = [
    "ROOTS",
    "TABLE",
    "Field",
    "Status",
    "check_table",
    "entry",
    "markdown",
    "walk",
]


class Status(enum.Enum):
    """What pymesh does with a field that is set."""

    HONOURED = "Honoured"
    WARNED = "Warn"
    NACKED = "NACK"


Values = Mapping[str, tuple[Status, str]]


@dataclass(frozen=True)
class Field:
    """The class of one field, and a short note of what pymesh does with it.

    ``inert``: honoured because it has no effect on a client (never read).
    ``parsed``: warned, yet parsed into the dataclass (its sub-message is walked too).
    ``sub``: the table key of the field's message type when its meaning depends on where
    it appears (``envoy.config.core.v3.DataSource@tls``).
    ``any_types``: for an ``Any`` (or map of ``Any``) field, the message types pymesh parses.
    ``values``: for an honoured enum field, the class of every enum value.
    """

    status: Status
    note: str = ""
    inert: bool = False
    parsed: bool = False
    sub: str | None = None
    any_types: tuple[str, ...] = ()
    values: Values | None = None

    @property
    def walked(self) -> bool:
        """Whether pymesh reads the field's content (its message type is classified too)."""
        return (self.status is Status.HONOURED and not self.inert) or self.parsed


def H(
    note: str = "",
    *,
    sub: str | None = None,
    any_types: tuple[str, ...] = (),
    values: Values | None = None,
) -> Field:
    """Honoured."""
    return Field(Status.HONOURED, note, sub=sub, any_types=any_types, values=values)


def I(note: str = "") -> Field:  # noqa: E743 - table shorthand
    """Honoured and inert: the field has no effect on a client."""
    return Field(Status.HONOURED, note, inert=True)


def W(
    note: str,
    *,
    parsed: bool = False,
    sub: str | None = None,
    any_types: tuple[str, ...] = (),
    values: Values | None = None,
) -> Field:
    """Warned: accepted, not (fully) acted on."""
    return Field(Status.WARNED, note, parsed=parsed, sub=sub, any_types=any_types, values=values)


def N(note: str) -> Field:
    """NACKed: the resource is rejected."""
    return Field(Status.NACKED, note)


def ok(*names: str) -> dict[str, tuple[Status, str]]:
    """Enum values that are all honoured."""
    return {n: (Status.HONOURED, "") for n in names}


# Reused notes.
_SERVER_SIDE = "a server-side (downstream) setting; a client has no listener socket"
_STATS = "stats / observability naming only"
_METADATA = "metadata is not matched or used by pymesh"
_HEADER_OPS_NOTE = "see HeaderValueOption"
_NOT_ENVOY_CLIENT = "not implemented; pymesh behaves as if it were unset"
_WAITS_ENGINE = "waits for the call engine, issue 14"
_SLOW_START = (
    "Envoy's formula; endpoints added after the cluster's first assignment ramp up "
    "(weights refreshed about every window/50, at least every second)"
)

_PFX_LB = "envoy.extensions.load_balancing_policies."
_CSWRR = "client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin"
ROUTER = "envoy.extensions.filters.http.router.v3.Router"
FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
STATEFUL_SESSION = "envoy.extensions.filters.http.stateful_session.v3.StatefulSession"
STATEFUL_SESSION_PER_ROUTE = (
    "envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute"
)
COOKIE_SESSION_STATE = "envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState"
FILTER_CONFIG = "envoy.config.route.v3.FilterConfig"
RBAC = "envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_PER_ROUTE = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
LB_POLICY_TYPES = (
    _PFX_LB + "round_robin.v3.RoundRobin",
    _PFX_LB + "least_request.v3.LeastRequest",
    _PFX_LB + "random.v3.Random",
    _PFX_LB + "ring_hash.v3.RingHash",
    _PFX_LB + "maglev.v3.Maglev",
    _PFX_LB + "pick_first.v3.PickFirst",
    _PFX_LB + "wrr_locality.v3.WrrLocality",
    _PFX_LB + _CSWRR,
    "xds.type.v3.TypedStruct",
    "udpa.type.v1.TypedStruct",
)
PER_FILTER_TYPES = (FAULT, FILTER_CONFIG, STATEFUL_SESSION_PER_ROUTE, RBAC_PER_ROUTE)

_HEADER_OPS = {
    "request_headers_to_add": H(_HEADER_OPS_NOTE),
    "request_headers_to_remove": H("lower-cased; ':'-prefixed names and host → NACK"),
    "response_headers_to_add": H(_HEADER_OPS_NOTE),
    "response_headers_to_remove": H("lower-cased; ':'-prefixed names and host → NACK"),
}
_TYPED_PER_FILTER = H(
    "HTTPFault (also in a FilterConfig) overrides the fault filter; RBACPerRoute replaces "
    "the RBAC filter's config; StatefulSessionPerRoute overrides the session filter "
    "(disabled, or another cookie). Other types → Warn, kept as None",
    any_types=PER_FILTER_TYPES,
)

#: The messages pymesh parses from a DiscoveryResponse, in the order docs list them.
ROOTS: tuple[tuple[str, str], ...] = (
    ("Listener (LDS)", "envoy.config.listener.v3.Listener"),
    ("Server Listener (LDS, gRFC A36)", "envoy.config.listener.v3.Listener@server"),
    ("RouteConfiguration (RDS)", "envoy.config.route.v3.RouteConfiguration"),
    ("Cluster (CDS)", "envoy.config.cluster.v3.Cluster"),
    ("ClusterLoadAssignment (EDS)", "envoy.config.endpoint.v3.ClusterLoadAssignment"),
)

_RBAC_PEER = (
    "must be unset: RBAC's remote_ip is the connection's peer address, as direct_remote_ip "
    "(gRFC A41 NACKs the listener)"
)
_RBAC_METADATA = "envoy.type.matcher.v3.MetadataMatcher@rbac"
_RBAC_NEVER = "not evaluated: Envoy metadata is always empty on pymesh (gRFC A41)"
_RBAC_GRPC_GO = "not supported (grpc-go NACKs it too)"

_LISTENER_INERT = "an api listener has no socket (as in gRPC); " + _SERVER_SIDE

TABLE: dict[str, dict[str, Field]] = {
    # ---------------------------------------------------------------- Listener / HCM
    "envoy.config.listener.v3.Listener": {
        "name": H("must be non-empty"),
        "api_listener": H("required; pymesh uses api listeners only"),
        **{
            f: I(_LISTENER_INERT)
            for f in (
                "address",
                "additional_addresses",
                "filter_chains",
                "fcds_config",
                "filter_chain_matcher",
                "use_original_dst",
                "default_filter_chain",
                "per_connection_buffer_limit_bytes",
                "deprecated_v1",
                "drain_type",
                "listener_filters",
                "listener_filters_timeout",
                "continue_on_listener_filters_timeout",
                "transparent",
                "freebind",
                "socket_options",
                "tcp_fast_open_queue_length",
                "traffic_direction",
                "udp_listener_config",
                "connection_balance_config",
                "reuse_port",
                "enable_reuse_port",
                "access_log",
                "tcp_backlog_size",
                "max_connections_to_accept_per_socket_event",
                "bind_to_port",
                "internal_listener",
                "enable_mptcp",
                "ignore_global_conn_limit",
                "bypass_overload_manager",
            )
        },
        "stat_prefix": I(_STATS),
        "metadata": I(_METADATA),
    },
    "envoy.config.listener.v3.ApiListener": {
        "api_listener": H("must be an HttpConnectionManager, else NACK", any_types=(HCM,)),
    },
    HCM: {
        "rds": H("→ rds_name"),
        "route_config": H(
            "parsed inline; errors use the listener's name and the path "
            "api_listener.api_listener.route_config.…"
        ),
        "scoped_routes": N("scoped routes are not supported; use rds or route_config"),
        "http_filters": H(
            "order kept; duplicate names → NACK; the router must be last and only there"
        ),
        "common_http_protocol_options": H(sub="envoy.config.core.v3.HttpProtocolOptions@hcm"),
        "tracing": W("tracing config is not applied (use pymesh's OpenTelemetry integration)"),
        "add_user_agent": W(_NOT_ENVOY_CLIENT),
        "upgrade_configs": W("upgrades (WebSocket, CONNECT) are not configured by pymesh"),
        "local_reply_config": W("local replies are pymesh's own (see the request-path table)"),
        "request_id_extension": W(_NOT_ENVOY_CLIENT),
        "early_header_mutation_extensions": W(_NOT_ENVOY_CLIENT),
        "strip_matching_host_port": W("the Host header is matched as sent"),
        "strip_any_host_port": W("the Host header is matched as sent"),
        "strip_trailing_host_dot": W("the Host header is matched as sent"),
        "proxy_status_config": W(_NOT_ENVOY_CLIENT),
        "typed_header_validation_config": W(_NOT_ENVOY_CLIENT),
        "append_x_forwarded_port": W(_NOT_ENVOY_CLIENT),
        "append_local_overload": W(_NOT_ENVOY_CLIENT),
        "add_proxy_protocol_connection_state": W(_NOT_ENVOY_CLIENT),
        "scheme_header_transformation": W(_NOT_ENVOY_CLIENT),
        "forward_client_cert_matcher": I(_SERVER_SIDE),
        "original_ip_detection_extensions": N(_RBAC_PEER),
        "xff_num_trusted_hops": N(_RBAC_PEER),
        "proxy_100_continue": I(_SERVER_SIDE),
        "represent_ipv4_remote_address_as_ipv4_mapped_ipv6": I(_SERVER_SIDE),
        "stream_error_on_invalid_http_message": I(_SERVER_SIDE),
        "path_normalization_options": I(_SERVER_SIDE),
        "http1_safe_max_connection_duration": I(_SERVER_SIDE),
        "http3_protocol_options": I(_SERVER_SIDE),
        "stream_flush_timeout": I(_SERVER_SIDE),
        "access_log_flush_interval": I(_SERVER_SIDE),
        "flush_access_log_on_new_request": I(_SERVER_SIDE),
        "access_log_options": I(_SERVER_SIDE),
        **{
            f: I(_SERVER_SIDE)
            for f in (
                "codec_type",
                "access_log",
                "use_remote_address",
                "skip_xff_append",
                "via",
                "generate_request_id",
                "preserve_external_request_id",
                "always_set_request_id_in_response",
                "forward_client_cert_details",
                "set_current_client_cert_details",
                "server_name",
                "server_header_transformation",
                "normalize_path",
                "merge_slashes",
                "path_with_escaped_slashes_action",
                "http_protocol_options",
                "http2_protocol_options",
                "stream_idle_timeout",
                "drain_timeout",
                "delayed_close_timeout",
                "request_timeout",
                "request_headers_timeout",
                "max_request_headers_kb",
                "internal_address_config",
            )
        },
        "stat_prefix": I(_STATS),
    },
    "envoy.extensions.filters.network.http_connection_manager.v3.Rds": {
        "config_source": H("must be ads or self, else NACK (gRPC)"),
        "route_config_name": H("→ rds_name; empty → NACK"),
    },
    "envoy.config.core.v3.ConfigSource": {
        "ads": H("the resource comes over the ADS stream"),
        "self": H("same as ads (the stream that delivered the referring resource)"),
        "path": N("config_source must be ads or self (gRPC)"),
        "path_config_source": N("config_source must be ads or self (gRPC)"),
        "api_config_source": N("config_source must be ads or self (gRPC)"),
        "authorities": W("ignored; xdstp authorities come from the bootstrap (A47)"),
        "initial_fetch_timeout": W(
            "ignored; a resource that never arrives is reported does-not-exist after 15 s"
        ),
        "resource_api_version": H(
            "v3 is the only version",
            values={
                "AUTO": (Status.HONOURED, "v3"),
                "V2": (Status.NACKED, "xDS v2 is not supported"),
                "V3": (Status.HONOURED, ""),
            },
        ),
    },
    "envoy.config.core.v3.AggregatedConfigSource": {},
    "envoy.config.core.v3.SelfConfigSource": {
        "transport_api_version": H(
            "v3 is the only version",
            values={
                "AUTO": (Status.HONOURED, "v3"),
                "V2": (Status.NACKED, "xDS v2 is not supported"),
                "V3": (Status.HONOURED, ""),
            },
        ),
    },
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": {
        "name": H("must be non-empty and unique"),
        "typed_config": H(
            "Router, HTTPFault, StatefulSession (cookie) and RBAC (enforced by pymesh's "
            "servers) are honoured. "
            "Another type → NACK, unless is_optional (then skipped with a Warn). "
            "A TypedStruct custom filter → NACK",
            any_types=(ROUTER, FAULT, STATEFUL_SESSION, RBAC),
        ),
        "config_discovery": N("filter config discovery (ECDS); Warn and skip if is_optional"),
        "is_optional": H("an optional filter of an unknown type is skipped with a Warn"),
        "disabled": W("a disabled filter is skipped (per-route enabling is not supported)"),
    },
    ROUTER: {
        "dynamic_stats": I(_STATS),
        "start_child_span": W("pymesh's OpenTelemetry spans are configured in code"),
        "upstream_log": W(_NOT_ENVOY_CLIENT),
        "upstream_log_options": W(_NOT_ENVOY_CLIENT),
        "suppress_envoy_headers": I("pymesh adds no x-envoy-* headers"),
        "strict_check_headers": W(_NOT_ENVOY_CLIENT),
        "respect_expected_rq_timeout": W(_NOT_ENVOY_CLIENT),
        "suppress_grpc_request_failure_code_stats": I(_STATS),
        "upstream_http_filters": W("upstream filters are not run"),
    },
    "envoy.config.core.v3.HttpProtocolOptions@hcm": {
        "max_stream_duration": W(
            "parsed → max_stream_duration; applied to gRPC calls only (A31), HTTP requests "
            "through httpx ignore it",
            parsed=True,
        ),
        "idle_timeout": I(_SERVER_SIDE),
        "max_connection_duration": I(_SERVER_SIDE),
        "max_headers_count": I(_SERVER_SIDE),
        "max_response_headers_kb": I(_SERVER_SIDE),
        "headers_with_underscores_action": I(_SERVER_SIDE),
        "max_requests_per_connection": I(_SERVER_SIDE),
    },
    STATEFUL_SESSION: {
        "session_state": H(
            "→ StatefulSession (cookie name, path, ttl): the cookie's endpoint is picked "
            "when in the cluster and usable, else load balancing and a Set-Cookie (Envoy's "
            "cookie format; gRPC A55 in metadata)",
            sub="envoy.config.core.v3.TypedExtensionConfig@session_state",
        ),
        "strict": H("an unusable cookie endpoint → local 503 / UNAVAILABLE"),
        "stat_prefix": I(_STATS),
    },
    "envoy.config.core.v3.TypedExtensionConfig@session_state": {
        "name": I("the extension's name; its typed_config decides"),
        "typed_config": H(
            "only the cookie extension (CookieBasedSessionState); another type → NACK",
            any_types=(COOKIE_SESSION_STATE,),
        ),
    },
    COOKIE_SESSION_STATE: {
        "cookie": H("required"),
    },
    "envoy.type.http.v3.CookieAttribute": {
        "name": H("must be non-empty"),
        "value": H("empty: the attribute alone (e.g. Secure)"),
    },
    "envoy.type.http.v3.Cookie": {
        "name": H("→ cookie_name; empty → NACK"),
        "path": H("→ path (empty or / : every request path)"),
        "ttl": H("→ ttl seconds (None when unset)"),
        "attributes": H("appended to Set-Cookie (HTTP) after Path, as Envoy"),
    },
    STATEFUL_SESSION_PER_ROUTE: {
        "disabled": H("→ StatefulSessionPerRoute(disabled=True)"),
        "stateful_session": H("→ StatefulSessionPerRoute(stateful_session=…)"),
    },
    FILTER_CONFIG: {
        "config": H(
            "HTTPFault, RBACPerRoute or StatefulSessionPerRoute; another type → Warn, kept as None",
            any_types=(FAULT, STATEFUL_SESSION_PER_ROUTE, RBAC_PER_ROUTE),
        ),
        "is_optional": H("an unknown type is a Warn either way (never a NACK)"),
        "disabled": W("the override is dropped (None); per-route disabling is not supported"),
    },
    # ---------------------------------------------------------------- RBAC (A41)
    RBAC: {
        "rules": H("→ RbacConfig.rules; unset: nothing is enforced"),
        "rules_stat_prefix": I(_STATS),
        "matcher": N("the xDS matcher API is not supported; use rules (with rules → NACK too)"),
        "shadow_rules": W("shadow rules are not evaluated (gRFC A41)"),
        "shadow_matcher": W("shadow rules are not evaluated (gRFC A41)"),
        "shadow_rules_stat_prefix": I(_STATS),
        "track_per_rule_stats": I(_STATS),
    },
    RBAC_PER_ROUTE: {
        "rbac": H("replaces the filter's config on the route; unset: RBAC is off for it"),
    },
    "envoy.config.rbac.v3.RBAC": {
        "action": H(
            values={
                "ALLOW": (Status.HONOURED, "only requests matching a policy pass"),
                "DENY": (Status.HONOURED, "requests matching a policy are denied"),
                "LOG": (
                    Status.HONOURED,
                    "the rules are ignored, as if RBAC were not configured (gRFC A41)",
                ),
            }
        ),
        "policies": H("matched in name order (Envoy's ordered map); the first match is reported"),
        "audit_logging_options": H(),
    },
    "envoy.config.rbac.v3.RBAC.AuditLoggingOptions": {
        "audit_condition": W("pymesh has no audit loggers; denials are logged and counted"),
        "logger_configs": H(),
    },
    "envoy.config.rbac.v3.RBAC.AuditLoggingOptions.AuditLoggerConfig": {
        "audit_logger": I("no audit logger is supported: NACK unless is_optional (gRFC A59)"),
        "is_optional": H("an optional logger is skipped with a Warn"),
    },
    "envoy.config.rbac.v3.Policy": {
        "permissions": H("at least one; any matching permission"),
        "principals": H("at least one; any matching principal"),
        "condition": N("CEL conditions are not supported (gRFC A41)"),
        "checked_condition": N("CEL conditions are not supported (gRFC A41)"),
        "cel_config": I("used only with a CEL condition (which is NACKed)"),
    },
    "envoy.config.rbac.v3.Permission": {
        "and_rules": H("at least one rule"),
        "or_rules": H("at least one rule"),
        "any": H(),
        "header": H(
            "also :method, :path, :authority (host is :authority); :scheme and grpc-* → "
            "NACK (gRFC A41)"
        ),
        "url_path": H("the path without query (gRPC: the full method name)"),
        "destination_ip": H("the connection's local address"),
        "destination_port": H("the connection's local port"),
        "destination_port_range": H("[start, end) of the local port"),
        "metadata": H(_RBAC_NEVER + "; matches only when inverted", sub=_RBAC_METADATA),
        "not_rule": H(),
        "requested_server_name": H("matched against the empty string (gRFC A41)"),
        "matcher": N(_RBAC_GRPC_GO),
        "uri_template": N(_RBAC_GRPC_GO),
        "sourced_metadata": N(_RBAC_GRPC_GO),
    },
    "envoy.config.rbac.v3.Permission.Set": {"rules": H()},
    "envoy.config.rbac.v3.Principal": {
        "and_ids": H("at least one id"),
        "or_ids": H("at least one id"),
        "any": H(),
        "authenticated": H(),
        "source_ip": H("the connection's peer address (gRFC A41)"),
        "direct_remote_ip": H("the connection's peer address"),
        "remote_ip": H("the connection's peer address (no XFF trust, gRFC A41)"),
        "header": H("as Permission.header"),
        "url_path": H("as Permission.url_path"),
        "metadata": H(_RBAC_NEVER + "; matches only when inverted", sub=_RBAC_METADATA),
        "filter_state": N(_RBAC_GRPC_GO),
        "not_id": H(),
        "sourced_metadata": N(_RBAC_GRPC_GO),
        "custom": N(_RBAC_GRPC_GO),
    },
    "envoy.config.rbac.v3.Principal.Set": {"ids": H()},
    "envoy.config.rbac.v3.Principal.Authenticated": {
        "principal_name": H(
            "the peer certificate's URI SANs, else DNS SANs, else subject (RFC 2253), else "
            '"" (gRFC A41); unset: any TLS connection'
        ),
    },
    "envoy.config.core.v3.CidrRange": {
        "address_prefix": H("an IPv4 or IPv6 address, else NACK"),
        "prefix_len": H("unset = 0; above the address length → NACK"),
    },
    "envoy.type.matcher.v3.PathMatcher": {"path": H("required")},
    "envoy.type.v3.Int32Range": {"start": H(), "end": H()},
    _RBAC_METADATA: {
        "filter": I(_RBAC_NEVER),
        "path": I(_RBAC_NEVER),
        "value": I(_RBAC_NEVER),
        "invert": H("inverted, the matcher always matches"),
    },
    # ---------------------------------------------------------------- fault
    FAULT: {
        "delay": H(),
        "abort": H(),
        "headers": H("HeaderMatcher; all must match"),
        "max_active_faults": H("counted per process"),
        "upstream_cluster": H("the fault applies only to requests to this cluster"),
        "downstream_nodes": W("there is no downstream node on a client"),
        "response_rate_limit": W("response rate limiting is not implemented"),
        **{
            f: W("there is no runtime on a client")
            for f in (
                "delay_percent_runtime",
                "abort_percent_runtime",
                "delay_duration_runtime",
                "abort_http_status_runtime",
                "max_active_faults_runtime",
                "response_rate_limit_percent_runtime",
                "abort_grpc_status_runtime",
            )
        },
        "disable_downstream_cluster_stats": I(_STATS),
        "filter_metadata": I(_METADATA),
    },
    "envoy.extensions.filters.common.fault.v3.FaultDelay": {
        "fixed_delay": H("neither fixed_delay nor header_delay → NACK"),
        "header_delay": H("delay from the x-envoy-fault-delay-request header"),
        "percentage": H("unset = 0 % (the proto default, as Envoy)"),
    },
    "envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay": {},
    "envoy.extensions.filters.http.fault.v3.FaultAbort": {
        "http_status": H("must be in [200, 600), else NACK"),
        "grpc_status": H(),
        "header_abort": H("abort from the x-envoy-fault-abort-request header"),
        "percentage": H("unset = 0 %"),
    },
    "envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort": {},
    # ---------------------------------------------------------------- routes
    "envoy.config.route.v3.RouteConfiguration": {
        "name": H("must be non-empty"),
        "virtual_hosts": H("a domain used twice in one route config → NACK"),
        **_HEADER_OPS,
        "max_direct_response_body_size_bytes": H(
            "default 4096; a larger direct-response body → NACK"
        ),
        "validate_clusters": I("pymesh never rejects a route config for unknown clusters"),
        "metadata": I(_METADATA),
        "vhds": W("on-demand virtual hosts are not supported"),
        "internal_only_headers": W(_NOT_ENVOY_CLIENT),
        "most_specific_header_mutations_wins": W("header edits apply in Envoy's default order"),
        "cluster_specifier_plugins": W(_NOT_ENVOY_CLIENT),
        "request_mirror_policies": W("route-config mirrors are not applied (route-level are)"),
        "ignore_port_in_host_matching": W("the port is part of the Host match"),
        "vhost_header": W("virtual hosts are matched on :authority / Host"),
        "ignore_path_parameters_in_path_matching": W(_NOT_ENVOY_CLIENT),
        "typed_per_filter_config": W("route-config-level filter overrides are not applied"),
    },
    "envoy.config.route.v3.VirtualHost": {
        "name": H(),
        "domains": H(
            'lower-cased; an empty list → NACK. Odd entries ("", a.*.com) are kept, as '
            "Envoy keeps them; they never match as wildcards"
        ),
        "routes": H("first match wins"),
        **_HEADER_OPS,
        "retry_policy": H("used by routes without their own"),
        "hedge_policy": H("used by routes without their own"),
        "typed_per_filter_config": _TYPED_PER_FILTER,
        "matcher": N("the matcher tree is not supported; use routes"),
        "metadata": I(_METADATA),
        "per_request_buffer_limit_bytes": I("pymesh buffers whole bodies it replays"),
        "request_body_buffer_limit": I("pymesh buffers whole bodies it replays"),
        "require_tls": W("not enforced; use https:// URLs or TLS clusters"),
        "virtual_clusters": I(_STATS),
        "rate_limits": W("rate limiting is not implemented"),
        "cors": W("CORS is a server-side concern"),
        "include_request_attempt_count": W(_NOT_ENVOY_CLIENT),
        "include_attempt_count_in_response": W(_NOT_ENVOY_CLIENT),
        "retry_policy_typed_config": W("retry policy extensions are not supported"),
        "include_is_timeout_retry_header": W(_NOT_ENVOY_CLIENT),
        "request_mirror_policies": W("virtual-host mirrors are not applied (route-level are)"),
    },
    "envoy.config.route.v3.Route": {
        "name": H(),
        "match": H("required"),
        "route": H(),
        "redirect": H(),
        "direct_response": H(),
        "non_forwarding_action": H("matches and forwards nothing (gRPC servers' routes)"),
        "filter_action": N("filter actions are not supported"),
        "typed_per_filter_config": _TYPED_PER_FILTER,
        **_HEADER_OPS,
        "metadata": I(_METADATA),
        "stat_prefix": I(_STATS),
        "per_request_buffer_limit_bytes": I("pymesh buffers whole bodies it replays"),
        "request_body_buffer_limit": I("pymesh buffers whole bodies it replays"),
        "decorator": W("tracing decorators are not applied"),
        "tracing": W("per-route tracing is not applied"),
    },
    "envoy.config.route.v3.RouteMatch": {
        "prefix": H(),
        "path": H(),
        "safe_regex": H("compiled with RE2 at parse time; invalid → NACK"),
        "path_separated_prefix": H(
            "must start with '/', not end with '/', and contain no '?' or '#', else NACK"
        ),
        "connect_matcher": N("CONNECT matching is not supported"),
        "path_match_policy": N("path match extensions are not supported"),
        "case_sensitive": H("default true"),
        "runtime_fraction": H("default_value only (there is no runtime)"),
        "headers": H("repeated headers are matched value by value, as Envoy"),
        "query_parameters": H(),
        "grpc": H("→ grpc=True: matches gRPC requests only"),
        "tls_context": W("TLS context matching is not supported (the route still matches)"),
        "dynamic_metadata": W("dynamic metadata matching is not supported"),
        "filter_state": W("filter state matching is not supported"),
    },
    "envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions": {},
    "envoy.config.route.v3.NonForwardingAction": {},
    "envoy.config.route.v3.HeaderMatcher": {
        "name": H("lower-cased; empty → NACK. No match specifier: presence match (Envoy)"),
        "string_match": H(),
        "exact_match": H("folded into string_match"),
        "prefix_match": H("folded into string_match; empty → NACK"),
        "suffix_match": H("folded into string_match; empty → NACK"),
        "contains_match": H("folded into string_match; empty → NACK"),
        "safe_regex_match": H("folded into string_match"),
        "range_match": H("[start, end); start ≥ end matches nothing (Envoy)"),
        "present_match": H("false matches when the header is absent"),
        "invert_match": H(),
        "treat_missing_header_as_empty": H(),
    },
    "envoy.config.route.v3.QueryParameterMatcher": {
        "name": H("empty → NACK. Neither matcher set: presence match"),
        "string_match": H(),
        "present_match": H(),
    },
    "envoy.type.matcher.v3.StringMatcher": {
        "exact": H(),
        "prefix": H("empty → NACK"),
        "suffix": H("empty → NACK"),
        "contains": H("empty → NACK"),
        "safe_regex": H("RE2; invalid → NACK"),
        "custom": N("custom string matchers are not supported"),
        "ignore_case": H(),
    },
    "envoy.type.matcher.v3.RegexMatcher": {
        "regex": H("RE2 syntax (linear time); invalid or empty → NACK"),
        "google_re2": I("deprecated engine marker; RE2 is the only engine"),
    },
    "envoy.type.matcher.v3.RegexMatchAndSubstitute": {
        "pattern": H("required"),
        "substitution": H("\\1-style group references"),
    },
    "envoy.type.v3.Int64Range": {"start": H(), "end": H()},
    "envoy.config.core.v3.RuntimeFractionalPercent": {
        "default_value": H(),
        "runtime_key": I("there is no runtime on a client; default_value decides"),
    },
    "envoy.type.v3.FractionalPercent": {
        "numerator": H(),
        "denominator": H(values=ok("HUNDRED", "TEN_THOUSAND", "MILLION")),
    },
    "envoy.config.route.v3.RouteAction": {
        "cluster": H("empty → NACK"),
        "cluster_header": H(
            "lower-cased; a target the listener has not subscribed is subscribed on demand "
            "(kept; at most 256 per listener): the request waits for it as the first request "
            "to a listener waits (its timeout, else 15 s), then 503 NC if it is not there"
        ),
        "weighted_clusters": H(),
        "cluster_specifier_plugin": N("cluster specifier plugins are not supported"),
        "inline_cluster_specifier_plugin": N("cluster specifier plugins are not supported"),
        "cluster_not_found_response_code": H(
            values=ok("SERVICE_UNAVAILABLE", "NOT_FOUND", "INTERNAL_SERVER_ERROR")
        ),
        "metadata_match": W("subset load balancing is not supported"),
        "prefix_rewrite": H("with regex_rewrite → NACK"),
        "regex_rewrite": H("RE2; invalid → NACK"),
        "path_rewrite_policy": N("path rewrite extensions are not supported"),
        "path_rewrite": W("path_rewrite templates are not supported"),
        "host_rewrite_literal": H(),
        "auto_host_rewrite": H("from the endpoint's EDS hostname"),
        "host_rewrite_header": W(_NOT_ENVOY_CLIENT),
        "host_rewrite_path_regex": W(_NOT_ENVOY_CLIENT),
        "host_rewrite": W(_NOT_ENVOY_CLIENT),
        "append_x_forwarded_host": W(_NOT_ENVOY_CLIENT),
        "timeout": H("default 15 s; 0 → no timeout. Covers retries and back-off"),
        "idle_timeout": W("parsed → idle_timeout; not enforced yet", parsed=True),
        "flush_timeout": W(_NOT_ENVOY_CLIENT),
        "early_data_policy": W(_NOT_ENVOY_CLIENT),
        "retry_policy": H(),
        "retry_policy_typed_config": W("retry policy extensions are not supported"),
        "request_mirror_policies": H(),
        "priority": W("routing priorities are not implemented; DEFAULT thresholds apply"),
        "rate_limits": W("rate limiting is not implemented"),
        "include_vh_rate_limits": W("rate limiting is not implemented"),
        "hash_policy": H("for RING_HASH / MAGLEV clusters"),
        "cors": W("CORS is a server-side concern"),
        "max_grpc_timeout": W("deprecated; use max_stream_duration.grpc_timeout_header_max"),
        "grpc_timeout_offset": W("deprecated; not applied"),
        "upgrade_configs": W("upgrades (WebSocket, CONNECT) are not configured by pymesh"),
        "internal_redirect_policy": W("internal redirects are not followed"),
        "internal_redirect_action": W("internal redirects are not followed"),
        "max_internal_redirects": W("internal redirects are not followed"),
        "hedge_policy": H(),
        "max_stream_duration": H(),
    },
    "envoy.config.route.v3.WeightedCluster": {
        "clusters": H("weights summing to 0 or above 2^32-1 → NACK"),
        "total_weight": I(
            "deprecated; traffic is split by the sum of the weights, as Envoy 1.40 and gRPC do"
        ),
        "runtime_key_prefix": W("there is no runtime on a client"),
        "header_name": W("the split uses pymesh's own random value"),
        "use_hash_policy": W("the split uses pymesh's own random value"),
    },
    "envoy.config.route.v3.WeightedCluster.ClusterWeight": {
        "name": H("empty → NACK"),
        "cluster_header": N("cluster_header in weighted clusters is not supported"),
        "weight": H("unset = 0"),
        "metadata_match": W("subset load balancing is not supported"),
        **_HEADER_OPS,
        "typed_per_filter_config": _TYPED_PER_FILTER,
        "host_rewrite_literal": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.route.v3.RouteAction.HashPolicy": {
        "header": H(),
        "cookie": H(),
        "connection_properties": H("source_ip: false adds nothing (as Envoy)"),
        "query_parameter": H(),
        "filter_state": H("key io.grpc.channel_id: gRPC's channel id"),
        "terminal": H(),
    },
    "envoy.config.route.v3.RouteAction.HashPolicy.Header": {
        "header_name": H("lower-cased; empty → NACK"),
        "regex_rewrite": H("applied to the value before hashing"),
    },
    "envoy.config.route.v3.RouteAction.HashPolicy.Cookie": {
        "name": H("empty → NACK"),
        "ttl": W("a client cannot generate the cookie; only an existing cookie is hashed"),
        "path": W("a client cannot generate the cookie"),
        "attributes": W("a client cannot generate the cookie"),
    },
    "envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter": {
        "name": H("empty → NACK"),
    },
    "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties": {
        "source_ip": H("the client's own address is hashed"),
    },
    "envoy.config.route.v3.RouteAction.HashPolicy.FilterState": {"key": H("empty → NACK")},
    "envoy.config.route.v3.RouteAction.RequestMirrorPolicy": {
        "cluster": H("a mirror without cluster is skipped with a Warn at the mirror's path"),
        "cluster_header": W("a cluster_header mirror is skipped"),
        "runtime_fraction": H("default_value; unset → every request"),
        "trace_sampled": W(
            "parsed (default true); the mirror's trace sampling is not changed",
            parsed=True,
        ),
        "disable_shadow_host_suffix_append": W("-shadow is always appended"),
        "request_headers_mutations": W(_NOT_ENVOY_CLIENT),
        "host_rewrite_literal": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.route.v3.RouteAction.MaxStreamDuration": {
        "max_stream_duration": W(
            "parsed (0 → None); applied to gRPC calls only (A31), HTTP requests through "
            "httpx ignore it",
            parsed=True,
        ),
        "grpc_timeout_header_max": H("0 kept as 0.0: use grpc-timeout uncapped (Envoy)"),
        "grpc_timeout_header_offset": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.route.v3.RetryPolicy": {
        "retry_on": H(
            "comma list; unknown conditions (and http3-post-connect-failure) → Warn naming "
            "them, and are ignored as Envoy ignores them"
        ),
        "num_retries": H("default 1"),
        "per_try_timeout": H(
            "0 → None. Each attempt's deadline, for httpx and gRPC alike (the call engine)"
        ),
        "per_try_idle_timeout": H("httpx transports; gRPC channels ignore it"),
        "retry_priority": W("retry priority plugins are not supported"),
        "retry_host_predicate": H(
            'previous_hosts (by name or type) → "previous_hosts"; other predicates → Warn'
        ),
        "retry_options_predicates": W("retry option predicates are not supported"),
        "host_selection_retry_max_attempts": H("default 1"),
        "retriable_status_codes": H(),
        "retry_back_off": H("unset → 25 ms / 250 ms"),
        "rate_limited_retry_back_off": H(),
        "retriable_headers": H(),
        "retriable_request_headers": H(),
    },
    "envoy.config.route.v3.RetryPolicy.RetryBackOff": {
        "base_interval": H("required, > 0"),
        "max_interval": H("default 10 × base; < base → NACK"),
    },
    "envoy.config.route.v3.RetryPolicy.RateLimitedRetryBackOff": {
        "reset_headers": H("at least one, else NACK"),
        "max_interval": H("default 300 s"),
    },
    "envoy.config.route.v3.RetryPolicy.ResetHeader": {
        "name": H(
            "lower-cased; empty → NACK. A retry-after header in SECONDS format also takes "
            "RFC 9110's HTTP-date form (Envoy reads only integers and uses the normal "
            "back-off for a date)"
        ),
        "format": H(
            "integers as absl::SimpleAtoi; UNIX_TIMESTAMP counted from the current whole "
            "second, a past one unused (Envoy's ResetHeaderParserImpl)",
            values=ok("SECONDS", "UNIX_TIMESTAMP"),
        ),
    },
    "envoy.config.route.v3.RetryPolicy.RetryHostPredicate": {
        "name": H("envoy.retry_host_predicates.previous_hosts is honoured; others → Warn"),
        "typed_config": H(
            "PreviousHostsPredicate; other types → Warn",
            any_types=("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",),
        ),
    },
    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate": {},
    "envoy.config.route.v3.HedgePolicy": {
        "initial_requests": H("must be ≥ 1 (else NACK); above 1 → Warn (Envoy does not either)"),
        "additional_request_chance": W("not implemented (Envoy does not either)"),
        "hedge_on_per_try_timeout": H(
            "httpx and gRPC alike (the call engine): Envoy's router semantics"
        ),
    },
    "envoy.config.route.v3.DirectResponseAction": {
        "status": H("must be in [200, 600), else NACK"),
        "body": H(sub="envoy.config.core.v3.DataSource@body"),
        "body_format": W("the body is sent as configured, without formatting"),
    },
    "envoy.config.core.v3.DataSource@body": {
        "inline_string": H(),
        "inline_bytes": H(),
        "filename": N("a client does not read files named by the control plane"),
        "environment_variable": N("a client does not read environment variables for bodies"),
        "watched_directory": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.route.v3.RedirectAction": {
        "https_redirect": H(),
        "scheme_redirect": H(),
        "host_redirect": H(),
        "port_redirect": H(),
        "path_redirect": H(),
        "prefix_rewrite": H(),
        "regex_rewrite": H(),
        "response_code": H(
            values=ok(
                "MOVED_PERMANENTLY",
                "FOUND",
                "SEE_OTHER",
                "TEMPORARY_REDIRECT",
                "PERMANENT_REDIRECT",
            )
        ),
        "strip_query": H(),
    },
    "envoy.config.core.v3.HeaderValueOption": {
        "header": H(),
        "append": H(
            "legacy: true/false → APPEND_IF_EXISTS_OR_ADD / OVERWRITE_IF_EXISTS_OR_ADD; "
            "with a non-default append_action → NACK"
        ),
        "append_action": H(
            values=ok(
                "APPEND_IF_EXISTS_OR_ADD",
                "ADD_IF_ABSENT",
                "OVERWRITE_IF_EXISTS_OR_ADD",
                "OVERWRITE_IF_EXISTS",
            )
        ),
        "keep_empty_value": H(),
    },
    "envoy.config.core.v3.HeaderValue": {
        "key": H("lower-cased; empty, ':'-prefixed or host → NACK"),
        "value": H(),
        "raw_value": H("decoded as UTF-8; takes precedence over value"),
    },
    # ---------------------------------------------------------------- clusters
    "envoy.config.cluster.v3.Cluster": {
        "name": H("must be non-empty"),
        "type": H(
            values={
                **ok("STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS"),
                "ORIGINAL_DST": (Status.NACKED, "not supported (gRPC rule)"),
            }
        ),
        "cluster_type": H("only the aggregate cluster; other custom types → NACK"),
        "eds_cluster_config": H(),
        "connect_timeout": H(
            "default 5 s, must be > 0. Caps each attempt's connect (a timed-out connect is "
            "a connect failure, retried as Envoy does): httpx transports, and gRPC "
            "sub-channels through gRPC core's connect deadline (not grpcio's 20 s)"
        ),
        "per_connection_buffer_limit_bytes": I("no buffer limit on a client connection"),
        "lb_policy": H(
            "load_balancing_policy takes precedence",
            values={
                **ok("ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "RANDOM", "MAGLEV"),
                "CLUSTER_PROVIDED": (
                    Status.HONOURED,
                    "aggregate clusters only (their leaves balance); on another cluster → NACK",
                ),
                "LOAD_BALANCING_POLICY_CONFIG": (
                    Status.HONOURED,
                    "load_balancing_policy is required, else NACK",
                ),
            },
        ),
        "load_assignment": H(
            "for STATIC / DNS clusters (errors prefixed load_assignment.); not read for EDS "
            "clusters, as Envoy"
        ),
        "health_checks": W("active health checking is not implemented"),
        "max_requests_per_connection": H(
            "0 → None; enforced for HTTP/1.1 upstreams, Warn on an HTTP/2 cluster"
        ),
        "circuit_breakers": H(),
        "upstream_http_protocol_options": W(_NOT_ENVOY_CLIENT),
        "common_http_protocol_options": H(sub="envoy.config.core.v3.HttpProtocolOptions@cluster"),
        "http_protocol_options": H("HTTP/1.1, the default"),
        "http2_protocol_options": H("→ http2=True"),
        "typed_extension_protocol_options": H(
            "the HttpProtocolOptions key is parsed; other keys → Warn",
            any_types=("envoy.extensions.upstreams.http.v3.HttpProtocolOptions",),
        ),
        "dns_refresh_rate": H("default 5 s, ≥ 1 ms"),
        "dns_jitter": W(_NOT_ENVOY_CLIENT),
        "dns_failure_refresh_rate": H(),
        "respect_dns_ttl": H(),
        "dns_lookup_family": H(values=ok("AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL")),
        "dns_resolvers": W("the system resolver is used"),
        "use_tcp_for_dns_lookups": W("the system resolver is used"),
        "dns_resolution_config": W("the system resolver is used"),
        "typed_dns_resolver_config": W("the system resolver is used"),
        "wait_for_warm_on_init": I("clusters are used when their endpoints arrive"),
        "outlier_detection": H(),
        "cleanup_interval": I("no original-destination hosts to clean up"),
        "upstream_bind_config": W(_NOT_ENVOY_CLIENT),
        "lb_subset_config": W("subset load balancing is not supported"),
        "ring_hash_lb_config": H(),
        "maglev_lb_config": H(),
        "original_dst_lb_config": W("ORIGINAL_DST clusters are NACKed"),
        "least_request_lb_config": H(),
        "round_robin_lb_config": H(),
        "common_lb_config": H(),
        "transport_socket": H("UpstreamTlsContext or RawBuffer; another type → NACK"),
        "metadata": I(_METADATA),
        "protocol_selection": W("the configured protocol is always used"),
        "upstream_connection_options": W(_NOT_ENVOY_CLIENT),
        "close_connections_on_host_health_failure": W(_NOT_ENVOY_CLIENT),
        "ignore_health_on_host_removal": W(_NOT_ENVOY_CLIENT),
        "filters": W("upstream network filters are not run"),
        "load_balancing_policy": H("the first supported policy in the list wins"),
        "lrs_server": W("load reporting (LRS) is not implemented"),
        "lrs_report_endpoint_metrics": W("load reporting (LRS) is not implemented"),
        "track_timeout_budgets": I(_STATS),
        "upstream_config": W(_NOT_ENVOY_CLIENT),
        "track_cluster_stats": I(_STATS),
        "preconnect_policy": W(_NOT_ENVOY_CLIENT),
        "connection_pool_per_downstream_connection": W(_NOT_ENVOY_CLIENT),
        "alt_stat_name": I(_STATS),
        "transport_socket_matches": W("the cluster's transport_socket is used for every host"),
        "transport_socket_matcher": W("the cluster's transport_socket is used for every host"),
    },
    "envoy.config.cluster.v3.Cluster.EdsClusterConfig": {
        "eds_config": H("must be ads or self (gRPC); unset on an EDS cluster → NACK"),
        "service_name": H("→ eds_service_name (empty: the cluster's name)"),
    },
    "envoy.config.cluster.v3.Cluster.CustomClusterType": {
        "name": I("the typed_config's type decides"),
        "typed_config": H(
            "envoy.extensions.clusters.aggregate.v3.ClusterConfig; another type → NACK",
            any_types=("envoy.extensions.clusters.aggregate.v3.ClusterConfig",),
        ),
    },
    "envoy.extensions.clusters.aggregate.v3.ClusterConfig": {
        "clusters": H(
            "in order (empty list or name → NACK); nested aggregates flattened (A37); the "
            "leaves' priority levels form one merged priority set, as Envoy's aggregate "
            "cluster"
        ),
    },
    "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig": {
        "choice_count": H("default 2, must be ≥ 2"),
        "active_request_bias": H("default_value; default 1.0"),
        "slow_start_config": H(_SLOW_START),
    },
    "envoy.config.cluster.v3.Cluster.RoundRobinLbConfig": {
        "slow_start_config": H(_SLOW_START),
    },
    "envoy.config.cluster.v3.Cluster.SlowStartConfig": {
        "slow_start_window": H("0 or unset: slow start is off"),
        "aggression": H("default 1.0; ≤ 0 → Warn, 1.0 used (as Envoy)"),
        "min_weight_percent": H("default 10 %"),
    },
    _PFX_LB + "common.v3.SlowStartConfig": {
        "slow_start_window": H("0 or unset: slow start is off"),
        "aggression": H("default 1.0; ≤ 0 → Warn, 1.0 used (as Envoy)"),
        "min_weight_percent": H("default 10 %"),
    },
    "envoy.config.core.v3.RuntimeDouble": {
        "default_value": H("must be ≥ 0"),
        "runtime_key": I("there is no runtime on a client; default_value decides"),
    },
    "envoy.config.cluster.v3.Cluster.RingHashLbConfig": {
        "minimum_ring_size": H("default 1024, at most 8M, ≤ maximum"),
        "maximum_ring_size": H("default 8M, at most 8M"),
        "hash_function": H(
            values={
                "XX_HASH": (Status.HONOURED, "xxHash64, as Envoy"),
                "MURMUR_HASH_2": (
                    Status.NACKED,
                    "MURMUR_HASH_2 is not supported: pymesh's ring uses xxHash64; "
                    "set hash_function to XX_HASH (pymesh's rule; Envoy accepts it)",
                ),
            }
        ),
    },
    "envoy.config.cluster.v3.Cluster.MaglevLbConfig": {
        "table_size": H("default 65537; must be prime and at most 5000011"),
    },
    "envoy.config.cluster.v3.Cluster.CommonLbConfig": {
        "healthy_panic_threshold": H("default 50 %; 0..100, else NACK"),
        "locality_weighted_lb_config": H("→ locality_weighted=True"),
        "zone_aware_lb_config": W("zone-aware routing is not implemented"),
        "update_merge_window": I("updates are applied at once"),
        "ignore_new_hosts_until_first_hc": W("active health checking is not implemented"),
        "close_connections_on_host_set_change": W(_NOT_ENVOY_CLIENT),
        "consistent_hashing_lb_config": W(_NOT_ENVOY_CLIENT),
        "override_host_status": H(
            "statuses a stateful session's endpoint may have; unset: UNKNOWN, HEALTHY, "
            "DEGRADED on HTTP (Envoy), UNKNOWN, HEALTHY on gRPC (A55)"
        ),
    },
    "envoy.config.cluster.v3.Cluster.CommonLbConfig.LocalityWeightedLbConfig": {},
    "envoy.type.v3.Percent": {"value": H()},
    "envoy.config.core.v3.HealthStatusSet": {
        "statuses": H(
            "unknown values → NACK",
            values=ok("UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED"),
        )
    },
    "envoy.config.cluster.v3.CircuitBreakers": {
        "thresholds": H("the first DEFAULT-priority entry; HIGH and extra entries → Warn"),
        "per_host_thresholds": W("per-host limits are not enforced"),
    },
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds": {
        "priority": H(
            values={
                "DEFAULT": (Status.HONOURED, ""),
                "HIGH": (Status.WARNED, "HIGH-priority thresholds are not used"),
            }
        ),
        "max_connections": H(
            "default 1024; HTTP/1.1 connections over all endpoints of the cluster; at the "
            "limit a request waits for a connection of its endpoint (overflow counted, "
            "Envoy's upstream_cx_overflow), but an endpoint with none always gets one. "
            "HTTP/2 upstreams use one connection per endpoint; gRPC has no such limit (A32)"
        ),
        "max_pending_requests": H(
            "default 1024; HTTP/1.1 requests waiting for a connection (connecting included); "
            "beyond it a local 503 UO, never retried (upstream_rq_pending_overflow). Not "
            "applied to HTTP/2 (one multiplexed connection) nor gRPC (no such limit in A32)"
        ),
        "max_requests": H(
            "default 1024; local 503 UO. HTTP/1.1 (httpx): checked when the request gets a "
            "ready connection, as Envoy (a refusal counts as a pending overflow); HTTP/2, "
            "gRPC and hedged attempts: when the call is admitted"
        ),
        "max_retries": H("default 3"),
        "retry_budget": H(),
        "track_remaining": I(_STATS),
        "max_connection_pools": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget": {
        "budget_percent": H("default 20 %; 0..100"),
        "min_retry_concurrency": H("default 3"),
    },
    "envoy.config.cluster.v3.OutlierDetection": {
        **{
            f: H("Envoy's default; percentages ≤ 100")
            for f in (
                "consecutive_5xx",
                "max_ejection_percent",
                "enforcing_consecutive_5xx",
                "enforcing_success_rate",
                "success_rate_minimum_hosts",
                "success_rate_request_volume",
                "success_rate_stdev_factor",
                "consecutive_gateway_failure",
                "enforcing_consecutive_gateway_failure",
                "consecutive_local_origin_failure",
                "enforcing_consecutive_local_origin_failure",
                "enforcing_local_origin_success_rate",
                "failure_percentage_threshold",
                "enforcing_failure_percentage",
                "enforcing_failure_percentage_local_origin",
                "failure_percentage_minimum_hosts",
                "failure_percentage_request_volume",
            )
        },
        "interval": H("default 10 s; must be > 0"),
        "base_ejection_time": H("default 30 s; must be > 0"),
        "max_ejection_time": H("default max(300 s, base); below base → NACK"),
        "max_ejection_time_jitter": H(),
        "split_external_local_origin_errors": H(),
        "successful_active_health_check_uneject_host": W(
            "active health checking is not implemented"
        ),
        "monitors": W("outlier monitor extensions are not supported"),
        "always_eject_one_host": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.core.v3.TransportSocket": {
        "name": H("raw_buffer / envoy.transport_sockets.raw_buffer without typed_config: plain"),
        "typed_config": H(
            "UpstreamTlsContext or RawBuffer; another type → NACK",
            any_types=(
                "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
            ),
        ),
    },
    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer": {},
    "envoy.config.core.v3.HttpProtocolOptions@cluster": {
        "idle_timeout": H("Envoy's default 1 h; 0 → none. Idle upstream connections close"),
        "max_requests_per_connection": H("enforced for HTTP/1.1; Warn on an HTTP/2 cluster"),
        "max_connection_duration": W(_NOT_ENVOY_CLIENT),
        "max_headers_count": W(_NOT_ENVOY_CLIENT),
        "max_response_headers_kb": W(_NOT_ENVOY_CLIENT),
        "max_stream_duration": W("use the route's max_stream_duration"),
        "headers_with_underscores_action": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.core.v3.Http2ProtocolOptions": {
        "hpack_table_size": W("the HTTP/2 stack's default is used"),
        "max_concurrent_streams": W("the HTTP/2 stack's default is used"),
        "initial_stream_window_size": W("the HTTP/2 stack's default is used"),
        "initial_connection_window_size": W("the HTTP/2 stack's default is used"),
        "allow_connect": W(_NOT_ENVOY_CLIENT),
        "allow_metadata": W(_NOT_ENVOY_CLIENT),
        "max_outbound_frames": W("the HTTP/2 stack's default is used"),
        "max_outbound_control_frames": W("the HTTP/2 stack's default is used"),
        "max_consecutive_inbound_frames_with_empty_payload": W(
            "the HTTP/2 stack's default is used"
        ),
        "max_inbound_priority_frames_per_stream": W("the HTTP/2 stack's default is used"),
        "max_inbound_window_update_frames_per_data_frame_sent": W(
            "the HTTP/2 stack's default is used"
        ),
        "stream_error_on_invalid_http_messaging": W(_NOT_ENVOY_CLIENT),
        "override_stream_error_on_invalid_http_message": W(_NOT_ENVOY_CLIENT),
        "custom_settings_parameters": W(_NOT_ENVOY_CLIENT),
        "connection_keepalive": W("HTTP/2 PING keepalive is not sent"),
        "use_oghttp2_codec": I("Envoy codec choice"),
        "max_metadata_size": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "common_http_protocol_options": H(sub="envoy.config.core.v3.HttpProtocolOptions@cluster"),
        "explicit_http_config": H(),
        "upstream_http_protocol_options": W(_NOT_ENVOY_CLIENT),
        "use_downstream_protocol_config": W("there is no downstream protocol; HTTP/1.1 is used"),
        "auto_config": W("protocol auto-selection (ALPN) is not supported; HTTP/1.1 is used"),
        "http_filters": W("upstream filters are not run"),
        "header_validation_config": W(_NOT_ENVOY_CLIENT),
        "outlier_detection": W("use the cluster's outlier_detection"),
        "request_mirror_policies": W("use the route's request_mirror_policies"),
        "hash_policy": W("use the route's hash_policy"),
        "retry_policy": W("use the route's retry_policy"),
    },
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": {
        "http_protocol_options": H("HTTP/1.1, the default"),
        "http2_protocol_options": H("→ http2=True"),
        "http3_protocol_options": W("HTTP/3 is not supported; HTTP/1.1 is used"),
    },
    "envoy.config.core.v3.Http1ProtocolOptions": {
        "allow_absolute_url": I("a request-parsing (downstream) setting"),
        "accept_http_10": I("a request-parsing (downstream) setting"),
        "default_host_for_http_10": I("a request-parsing (downstream) setting"),
        "header_key_format": W("header names are sent as httpx/httpcore sends them"),
        "enable_trailers": W("the HTTP/1.1 stack's default is used"),
        "allow_chunked_length": W("the HTTP/1.1 stack's default is used"),
        "override_stream_error_on_invalid_http_message": W(_NOT_ENVOY_CLIENT),
        "send_fully_qualified_url": W("origin-form request targets are sent"),
        "use_balsa_parser": I("Envoy codec choice"),
        "allow_custom_methods": W("the HTTP/1.1 stack's default is used"),
        "ignore_http_11_upgrade": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.cluster.v3.Cluster.RefreshRate": {
        "base_interval": H("required, ≥ 1 ms"),
        "max_interval": W("the failure refresh does not back off; base_interval is used"),
    },
    "envoy.config.cluster.v3.LoadBalancingPolicy": {
        "policies": H(
            "the first supported entry wins; unsupported entries before it "
            "→ Warn naming their type; none supported → NACK"
        ),
    },
    "envoy.config.cluster.v3.LoadBalancingPolicy.Policy": {
        "typed_extension_config": H(sub="envoy.config.core.v3.TypedExtensionConfig@lb"),
    },
    "envoy.config.core.v3.TypedExtensionConfig@lb": {
        "name": I("the typed_config's type decides"),
        "typed_config": H(
            "round_robin, least_request, random, ring_hash, maglev, pick_first, wrr_locality "
            "(not nested), client_side_weighted_round_robin and pymesh.lb.v1.PeakEwma in a "
            "TypedStruct; other types are skipped",
            any_types=LB_POLICY_TYPES,
        ),
    },
    _PFX_LB + "round_robin.v3.RoundRobin": {
        "slow_start_config": H(_SLOW_START),
        "locality_lb_config": W("use wrr_locality or locality_weighted_lb_config"),
    },
    _PFX_LB + "least_request.v3.LeastRequest": {
        "choice_count": H("default 2, must be ≥ 2"),
        "active_request_bias": H("default 1.0"),
        "slow_start_config": H(_SLOW_START),
        "locality_lb_config": W("use wrr_locality or locality_weighted_lb_config"),
        "enable_full_scan": W("N choices are sampled"),
        "selection_method": W("N choices are sampled"),
    },
    _PFX_LB + "random.v3.Random": {
        "locality_lb_config": W("use wrr_locality or locality_weighted_lb_config"),
    },
    _PFX_LB + "ring_hash.v3.RingHash": {
        "hash_function": H(
            values={
                "DEFAULT_HASH": (Status.HONOURED, "xxHash64"),
                "XX_HASH": (Status.HONOURED, ""),
                "MURMUR_HASH_2": (
                    Status.NACKED,
                    "MURMUR_HASH_2 is not supported: pymesh's ring uses xxHash64; "
                    "set hash_function to XX_HASH (pymesh's rule; Envoy accepts it)",
                ),
            }
        ),
        "minimum_ring_size": H("default 1024, at most 8M, ≤ maximum"),
        "maximum_ring_size": H("default 8M, at most 8M"),
        "use_hostname_for_hashing": W("endpoints are hashed by address"),
        "hash_balance_factor": W("bounded-load hashing is not implemented"),
        "consistent_hashing_lb_config": W(_NOT_ENVOY_CLIENT),
        "locality_weighted_lb_config": W("use wrr_locality"),
    },
    _PFX_LB + "maglev.v3.Maglev": {
        "table_size": H("default 65537; must be prime and at most 5000011"),
        "consistent_hashing_lb_config": W(_NOT_ENVOY_CLIENT),
        "locality_weighted_lb_config": W("use wrr_locality"),
    },
    _PFX_LB + "pick_first.v3.PickFirst": {
        "shuffle_address_list": W("the address list is used in EDS order"),
    },
    _PFX_LB + "wrr_locality.v3.WrrLocality": {
        "endpoint_picking_policy": H("its policy is used, with locality_weighted=True"),
    },
    _PFX_LB + _CSWRR: {
        "enable_oob_load_report": H(
            "default false: weights from per-call reports (gRPC trailer "
            "endpoint-load-metrics-bin, HTTP header endpoint-load-metrics); true: one "
            "OpenRcaService stream per endpoint (plaintext gRPC to the endpoint's address)"
        ),
        "oob_reporting_period": H("default 10 s"),
        "blackout_period": H("default 10 s (gRFC A58)"),
        "weight_expiration_period": H("default 3 min"),
        "weight_update_period": H("default 1 s; below 100 ms → 100 ms (gRFC A58)"),
        "error_utilization_penalty": H("default 1.0; negative → NACK"),
        "metric_names_for_computing_utilization": H(
            "used when application_utilization is unset: the largest of these metrics "
            "(named_metrics.<n>, utilization.<n>, <map>.* ...), else cpu_utilization"
        ),
        "slow_start_config": W("slow start is not implemented for this policy"),
    },
    "xds.type.v3.TypedStruct": {
        "type_url": H("pymesh.lb.v1.PeakEwma; another type is skipped"),
        "value": H('decay_time (seconds or "2.5s", default 10 s); the struct → params'),
    },
    "udpa.type.v1.TypedStruct": {
        "type_url": H("pymesh.lb.v1.PeakEwma; another type is skipped"),
        "value": H('decay_time (seconds or "2.5s", default 10 s); the struct → params'),
    },
    # ---------------------------------------------------------------- server Listener (A36)
    "envoy.config.listener.v3.Listener@server": {
        "name": H("must be non-empty; the server's template name for its address"),
        "address": H(
            "required; the server serves only when it equals its listening address",
            sub="envoy.config.core.v3.Address@listener",
        ),
        "filter_chains": H("matched per connection, most specific first; overlaps → NACK"),
        "default_filter_chain": H("used when no chain matches; none → the call is refused"),
        "listener_filters": N("listener filters are not supported (gRFC A36)"),
        "use_original_dst": H("true → NACK (gRFC A36)"),
        "api_listener": I("its absence makes this a server Listener"),
        "filter_chain_matcher": N(
            "the matcher API is not supported; use filter_chain_match (ignoring it would "
            "pick other chains)"
        ),
        "fcds_config": N("filter chain discovery is not supported"),
        "additional_addresses": W("only address is compared with the listening address"),
        "stat_prefix": I(_STATS),
        "metadata": I(_METADATA),
        "traffic_direction": I("informational"),
        "access_log": W("access logs are not written by pymesh servers"),
        **{
            f: W("a socket or Envoy listener option grpcio does not expose")
            for f in (
                "per_connection_buffer_limit_bytes",
                "deprecated_v1",
                "drain_type",
                "listener_filters_timeout",
                "continue_on_listener_filters_timeout",
                "transparent",
                "freebind",
                "socket_options",
                "tcp_fast_open_queue_length",
                "udp_listener_config",
                "connection_balance_config",
                "reuse_port",
                "enable_reuse_port",
                "tcp_backlog_size",
                "max_connections_to_accept_per_socket_event",
                "bind_to_port",
                "internal_listener",
                "enable_mptcp",
                "ignore_global_conn_limit",
                "bypass_overload_manager",
            )
        },
    },
    "envoy.config.core.v3.Address@listener": {
        "socket_address": H(sub="envoy.config.core.v3.SocketAddress@listener"),
        "pipe": N("a gRPC server listens on TCP"),
        "envoy_internal_address": N("a gRPC server listens on TCP"),
    },
    "envoy.config.core.v3.SocketAddress@listener": {
        "protocol": H(
            values={
                "TCP": (Status.HONOURED, ""),
                "UDP": (Status.NACKED, "a gRPC server listens on TCP"),
            }
        ),
        "address": H("compared with the listening IP"),
        "port_value": H("compared with the listening port"),
        "named_port": N("port_value is required"),
        "resolver_name": I("the address is an IP literal"),
        "ipv4_compat": W("a listening-socket option grpcio does not expose"),
        "network_namespace_filepath": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.listener.v3.FilterChain": {
        "filter_chain_match": H(),
        "filters": H("unique names, exactly one HttpConnectionManager, last (A36)"),
        "transport_socket": H(
            "absent: plaintext", sub="envoy.config.core.v3.TransportSocket@server"
        ),
        "name": H("shown in logs"),
        "use_proxy_proto": N("the PROXY protocol is not supported"),
        "metadata": I(_METADATA),
        "transport_socket_connect_timeout": W("grpcio's handshake timeout applies"),
    },
    "envoy.config.listener.v3.FilterChainMatch": {
        "destination_port": H("set: the chain never matches (A36: needs use_original_dst)"),
        "prefix_ranges": H(
            "the destination IP: the longest prefix wins",
            sub="envoy.config.core.v3.CidrRange@filter_chain_match",
        ),
        "address_suffix": W("not a gRPC matcher; ignored"),
        "suffix_len": W("not a gRPC matcher; ignored"),
        "direct_source_prefix_ranges": W("not a gRPC matcher; ignored"),
        "source_type": H(values=ok("ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL")),
        "source_prefix_ranges": H(
            "the peer IP: the longest prefix wins",
            sub="envoy.config.core.v3.CidrRange@filter_chain_match",
        ),
        "source_ports": H("an exact peer port beats none"),
        "server_names": H("set: the chain never matches (A36: needs listener filters)"),
        "transport_protocol": H("raw_buffer or empty match; another value never matches"),
        "application_protocols": H("set: the chain never matches (A36)"),
    },
    "envoy.config.core.v3.CidrRange@filter_chain_match": {
        "address_prefix": H("an IP literal; low bits beyond prefix_len are ignored"),
        "prefix_len": H("clamped to 32 / 128; absent = 0 (A36)"),
    },
    "envoy.config.listener.v3.Filter": {
        "name": H("unique in the chain"),
        "typed_config": H("an HttpConnectionManager, else NACK", any_types=(HCM,)),
        "config_discovery": N("filter config discovery (ECDS) is not supported"),
    },
    "envoy.config.core.v3.TransportSocket@server": {
        "name": H("raw_buffer without typed_config: plaintext"),
        "typed_config": H(
            "DownstreamTlsContext or RawBuffer; another type → NACK",
            any_types=(
                "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
            ),
        ),
    },
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": {
        "common_tls_context": H(
            "the certificate from tls_certificate_provider_instance (required; "
            "tls_certificates → NACK), client roots from a provider instance"
        ),
        "require_client_certificate": H("true: mutual TLS (needs a validation context, else NACK)"),
        "require_sni": H("true → NACK (gRFC A29)"),
        "ocsp_staple_policy": H(
            values={
                "LENIENT_STAPLING": (Status.HONOURED, ""),
                "STRICT_STAPLING": (Status.NACKED, "only LENIENT_STAPLING (gRFC A29)"),
                "MUST_STAPLE": (Status.NACKED, "only LENIENT_STAPLING (gRFC A29)"),
            }
        ),
        "session_ticket_keys": W("grpcio manages TLS sessions"),
        "session_ticket_keys_sds_secret_config": W("grpcio manages TLS sessions"),
        "disable_stateless_session_resumption": W("grpcio manages TLS sessions"),
        "disable_stateful_session_resumption": W("grpcio manages TLS sessions"),
        "session_timeout": W("grpcio manages TLS sessions"),
        "full_scan_certs_on_sni_mismatch": I("one certificate per chain"),
        "prefer_client_ciphers": W("grpcio's cipher preference applies"),
    },
    # ---------------------------------------------------------------- TLS
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": {
        "common_tls_context": H(),
        "sni": H(),
        "auto_host_sni": W("the SNI is sni or the request's host"),
        "auto_sni_san_validation": W(_NOT_ENVOY_CLIENT),
        "allow_renegotiation": W("renegotiation is never allowed"),
        "max_session_keys": W(_NOT_ENVOY_CLIENT),
        "enforce_rsa_key_usage": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": {
        "tls_params": H(),
        "tls_certificates": H("the first one, files only; further certificates → Warn"),
        "tls_certificate_sds_secret_configs": N("SDS is not supported (gRPC A29)"),
        "tls_certificate_provider_instance": H("→ identity"),
        "custom_tls_certificate_selector": W(_NOT_ENVOY_CLIENT),
        "tls_certificate_certificate_provider": W("use tls_certificate_provider_instance"),
        "tls_certificate_certificate_provider_instance": H("deprecated; → identity"),
        "validation_context": H(),
        "validation_context_sds_secret_config": N("SDS is not supported (gRPC A29)"),
        "combined_validation_context": H(),
        "validation_context_certificate_provider": N(
            "use validation_context_certificate_provider_instance (ignoring it would weaken "
            "verification)"
        ),
        "validation_context_certificate_provider_instance": H("→ validation"),
        "alpn_protocols": H(),
        "custom_handshaker": W(_NOT_ENVOY_CLIENT),
        "key_log": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CertificateProviderInstance": {
        "instance_name": H("a bootstrap certificate_providers entry"),
        "certificate_name": H(),
    },
    "envoy.extensions.transport_sockets.tls.v3.CertificateProviderPluginInstance": {
        "instance_name": H("a bootstrap certificate_providers entry"),
        "certificate_name": H(),
    },
    "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": {
        "trusted_ca": H(sub="envoy.config.core.v3.DataSource@tls"),
        "ca_certificate_provider_instance": H("→ validation"),
        "match_subject_alt_names": H("→ SanMatcher(ANY, …); checked before any request byte"),
        "match_typed_subject_alt_names": H(),
        "verify_certificate_spki": N("ignoring it would weaken verification"),
        "verify_certificate_hash": N("ignoring it would weaken verification"),
        "require_signed_certificate_timestamp": N("ignoring it would weaken verification"),
        "crl": N("ignoring it would weaken verification"),
        "custom_validator_config": N("ignoring it would weaken verification"),
        "watched_directory": N("ignoring it would weaken verification"),
        "system_root_certs": W("only the configured CA is trusted"),
        "allow_expired_certificate": W("expired certificates are always refused"),
        "trust_chain_verification": W("the chain is always verified"),
        "only_verify_leaf_cert_crl": W("CRLs are NACKed"),
        "max_verify_depth": W("the chain depth is not limited"),
    },
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext": {  # noqa: E501
        "default_validation_context": H(),
        "validation_context_sds_secret_config": N("SDS is not supported (gRPC A29)"),
        "validation_context_certificate_provider": N(
            "use validation_context_certificate_provider_instance (ignoring it would weaken "
            "verification)"
        ),
        "validation_context_certificate_provider_instance": H("→ validation"),
    },
    "envoy.extensions.transport_sockets.tls.v3.TlsParameters": {
        "tls_minimum_protocol_version": H(
            values=ok("TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3")
        ),
        "tls_maximum_protocol_version": H(
            values=ok("TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3")
        ),
        "cipher_suites": H(),
        "ecdh_curves": W("the TLS stack's default curves are used"),
        "signature_algorithms": W("the TLS stack's default algorithms are used"),
        "compliance_policies": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.extensions.transport_sockets.tls.v3.TlsCertificate": {
        "certificate_chain": H(sub="envoy.config.core.v3.DataSource@tls"),
        "private_key": H(sub="envoy.config.core.v3.DataSource@tls"),
        "pkcs12": N("use certificate_chain and private_key files"),
        "private_key_provider": N("private key providers are not supported"),
        "password": N("encrypted private keys are not supported"),
        "watched_directory": W("the files are read when the context is built"),
        "ocsp_staple": I("a server-side setting"),
        "signed_certificate_timestamp": I("a server-side setting"),
    },
    "envoy.config.core.v3.DataSource@tls": {
        "filename": H(),
        "inline_bytes": N("inline certificates are not supported; use files or providers"),
        "inline_string": N("inline certificates are not supported; use files or providers"),
        "environment_variable": N("use files or certificate providers"),
        "watched_directory": W("the files are read when the context is built"),
    },
    "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher": {
        "san_type": H(
            values={
                **ok("EMAIL", "DNS", "URI", "IP_ADDRESS"),
                "SAN_TYPE_UNSPECIFIED": (Status.NACKED, "san_type is required"),
                "OTHER_NAME": (Status.NACKED, "OTHER_NAME SANs are not supported"),
            }
        ),
        "matcher": H(),
        "oid": W("OTHER_NAME SANs are NACKed"),
    },
    # ---------------------------------------------------------------- endpoints
    "envoy.config.endpoint.v3.ClusterLoadAssignment": {
        "cluster_name": H("must be non-empty (inline: defaults to the cluster's name)"),
        "endpoints": H("priorities must be contiguous from 0 (gRPC rule)"),
        "named_endpoints": W("named endpoints are not supported"),
        "policy": H(),
    },
    "envoy.config.endpoint.v3.LocalityLbEndpoints": {
        "locality": H("the same locality twice in one priority → NACK (gRPC rule)"),
        "metadata": I(_METADATA),
        "lb_endpoints": H("sum of weights above 2^32-1 → NACK (gRPC rule)"),
        "load_balancer_endpoints": W("use lb_endpoints"),
        "leds_cluster_locality_config": W("LEDS is not supported"),
        "load_balancing_weight": H("None when unset; 0 → NACK"),
        "priority": H("≤ 128"),
        "proximity": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.core.v3.Locality": {"region": H(), "zone": H(), "sub_zone": H()},
    "envoy.config.endpoint.v3.LbEndpoint": {
        "endpoint": H("required"),
        "endpoint_name": N("named endpoints are not supported"),
        "health_status": H(
            values={
                "UNKNOWN": (Status.HONOURED, "usable"),
                "HEALTHY": (Status.HONOURED, "usable"),
                "UNHEALTHY": (Status.HONOURED, "not used"),
                "DRAINING": (Status.HONOURED, "not used"),
                "TIMEOUT": (Status.HONOURED, "not used"),
                "DEGRADED": (
                    Status.HONOURED,
                    "HTTP: Envoy's degraded tier (used for the load healthy hosts cannot "
                    "take); gRPC: not used (A27)",
                ),
            }
        ),
        "metadata": I(_METADATA),
        "load_balancing_weight": H("default 1; 0 → NACK"),
    },
    "envoy.config.endpoint.v3.Endpoint": {
        "address": H(),
        "health_check_config": I("used by active health checks only (not implemented)"),
        "hostname": H("used by auto_host_rewrite"),
        "additional_addresses": W("only the first address is used"),
    },
    "envoy.config.core.v3.Address": {
        "socket_address": H(),
        "pipe": N("only socket addresses are supported"),
        "envoy_internal_address": N("only socket addresses are supported"),
    },
    "envoy.config.core.v3.SocketAddress": {
        "protocol": H(
            values={
                "TCP": (Status.HONOURED, ""),
                "UDP": (Status.NACKED, "only TCP endpoints are supported"),
            }
        ),
        "address": H(
            "non-empty; an IP literal for EDS and STATIC clusters, host names only for DNS"
        ),
        "port_value": H("1..65535"),
        "named_port": N("port_value is required"),
        "resolver_name": I("the system resolver is used"),
        "ipv4_compat": I("a listening-socket option"),
        "network_namespace_filepath": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.endpoint.v3.ClusterLoadAssignment.Policy": {
        "drop_overloads": H(),
        "overprovisioning_factor": H("default 140; must be > 0"),
        "endpoint_stale_after": W(_NOT_ENVOY_CLIENT),
        "weighted_priority_health": W(_NOT_ENVOY_CLIENT),
    },
    "envoy.config.endpoint.v3.ClusterLoadAssignment.Policy.DropOverload": {
        "category": H("non-empty"),
        "drop_percentage": H("→ parts per million, capped at 1,000,000"),
    },
}

#: Message types whose content is a plain value (never walked).
LEAF_TYPES = frozenset(
    {
        "google.protobuf.Duration",
        "google.protobuf.BoolValue",
        "google.protobuf.UInt32Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.StringValue",
        "google.protobuf.Struct",
    }
)
_ANY = "google.protobuf.Any"


def entry(key: str, field_name: str, table: Mapping[str, Mapping[str, Field]] = TABLE) -> Field:
    """The class of ``field_name`` in table entry ``key`` (KeyError if unclassified)."""
    return table[key][field_name]


def _descriptor(key: str) -> Any:
    return descriptor_pool.Default().FindMessageTypeByName(key.split("@", 1)[0])


@dataclass
class Walk:
    """The result of walking the descriptors from :data:`ROOTS` through a table."""

    order: list[tuple[str, str]] = field(default_factory=list)  # (section, key)
    problems: list[str] = field(default_factory=list)


def _children(key: str, fd: Any, f: Field) -> Iterator[str]:
    """Table keys of what pymesh reads inside field ``fd`` (classified as ``f``)."""
    mt = fd.message_type
    if mt is None or not f.walked:
        return
    if mt.GetOptions().map_entry:
        mt = mt.fields_by_name["value"].message_type
        if mt is None:
            return
    if mt.full_name == _ANY:
        yield from f.any_types
        return
    if mt.full_name in LEAF_TYPES:
        return
    yield f.sub or mt.full_name


def walk(table: Mapping[str, Mapping[str, Field]] = TABLE) -> Walk:
    """Walk every message reachable from :data:`ROOTS` through the fields pymesh reads.

    Problems: a field of a reachable message missing from the table, a table field the
    descriptor no longer has, an honoured enum field whose values are not all classified,
    an honoured ``Any`` without ``any_types``, and table entries nothing reaches.
    """
    out = Walk()
    roots = {key for _, key in ROOTS}
    seen: set[str] = set()

    def visit(section: str, key: str) -> None:
        # Depth first, in field order: a message's parts follow it in the docs.
        if key in seen:
            return
        seen.add(key)
        out.order.append((section, key))
        try:
            desc = _descriptor(key)
        except KeyError:
            out.problems.append(f"{key}: no such message in xds-protos")
            return
        fields = table.get(key)
        if fields is None:
            out.problems.append(f"{key}: message is parsed but has no table entry")
            return
        children: list[str] = []
        for fd in desc.fields:
            f = fields.get(fd.name)
            if f is None:
                out.problems.append(f"{key}.{fd.name}: field is not classified")
                continue
            _check_field(key, fd, f, out.problems)
            children.extend(c for c in _children(key, fd, f) if c not in roots)
        for name in fields:
            if name not in desc.fields_by_name:
                out.problems.append(f"{key}.{name}: classified but no longer exists")
        for child in children:
            visit(section, child)

    for section, root in ROOTS:
        visit(section, root)
    for key in table:
        if key not in seen:
            out.problems.append(f"{key}: table entry is not reachable from the roots")
    return out


def _check_field(key: str, fd: Any, f: Field, problems: list[str]) -> None:
    where = f"{key}.{fd.name}"
    mt = fd.message_type
    if mt is not None and mt.GetOptions().map_entry:
        mt = mt.fields_by_name["value"].message_type
    if f.walked and mt is not None and mt.full_name == _ANY and not f.any_types:
        problems.append(f"{where}: an Any field pymesh reads needs any_types")
    if fd.enum_type is not None and f.status is Status.HONOURED and not f.inert:
        names = {v.name for v in fd.enum_type.values}
        classified = set(f.values or {})
        for missing in sorted(names - classified):
            problems.append(f"{where}: enum value {missing} is not classified")
        for stale in sorted(classified - names):
            problems.append(f"{where}: enum value {stale} is classified but no longer exists")


def check_table(table: Mapping[str, Mapping[str, Field]] = TABLE) -> list[str]:
    """Every problem of ``table`` (empty when every reachable field is classified)."""
    return walk(table).problems


def counts(table: Mapping[str, Mapping[str, Field]] = TABLE) -> dict[str, int]:
    """Number of classified fields per class (inert fields are counted as honoured)."""
    out = {s.value: 0 for s in Status}
    for fields in table.values():
        for f in fields.values():
            out[f.status.value] += 1
    return out


def inert_count(table: Mapping[str, Mapping[str, Field]] = TABLE) -> int:
    """Number of honoured fields that have no effect on a client."""
    return sum(f.inert for fields in table.values() for f in fields.values())


# ---------------------------------------------------------------- docs/features.md

BEGIN = "<!-- BEGIN GENERATED: python -m pymesh.xds.resources._fields --markdown -->"
END = "<!-- END GENERATED -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _note(f: Field) -> str:
    parts = []
    if f.inert:
        parts.append("no effect on a client: " + f.note if f.note else "no effect on a client")
    elif f.note:
        parts.append(f.note)
    if f.values:
        vals = []
        for name, (status, note) in f.values.items():
            label = "" if status is Status.HONOURED else f" **{status.value}**"
            vals.append(f"`{name}`{label}" + (f" ({note})" if note else ""))
        parts.append("values: " + ", ".join(vals))
    if f.any_types:
        parts.append("types: " + ", ".join(f"`{t.rsplit('.', 1)[-1]}`" for t in f.any_types))
    return _cell(". ".join(parts))


def markdown(table: Mapping[str, Mapping[str, Field]] = TABLE) -> str:
    """The generated field matrix (the part of docs/features.md between the markers)."""
    w = walk(table)
    lines = [BEGIN, ""]
    c = counts(table)
    lines.append(
        f"{len(w.order)} messages, {sum(c.values())} fields: {c['Honoured']} Honoured (of "
        f"which {inert_count(table)} have no effect on a client), {c['Warn']} Warn, "
        f"{c['NACK']} NACK. Generated from `pymesh/xds/resources/_fields.py`; do not edit "
        "by hand."
    )
    section = None
    for sec, key in w.order:
        if sec != section:
            section = sec
            lines += ["", f"## {sec}"]
        name, _, where = key.partition("@")
        title = f"`{name}`" + (f" (in {where})" if where else "")
        lines += ["", f"### {title}", ""]
        fields = table.get(key, {})
        if not fields:
            lines.append("No fields: setting the message is what counts.")
            continue
        lines += ["| Field | Status | Notes |", "|---|---|---|"]
        for fname, f in fields.items():
            lines.append(f"| `{fname}` | {f.status.value} | {_note(f)} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def render_features(current: str, table: Mapping[str, Mapping[str, Field]] = TABLE) -> str:
    """``current`` features.md with the generated section replaced (appended if absent)."""
    generated = markdown(table)
    if BEGIN in current and END in current:
        head, _, rest = current.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + generated.rstrip("\n") + tail
    return current.rstrip("\n") + "\n\n" + generated


def features_path() -> Path:
    """docs/features.md of the source checkout this module lives in."""
    return Path(__file__).resolve().parents[3] / "docs" / "features.md"


def is_current(path: Path) -> bool:
    """Whether the features file at ``path`` holds exactly the generated field matrix."""
    current = path.read_text(encoding="utf-8")
    return current == render_features(current)


def main(argv: list[str]) -> int:
    """No option: print the table's problems (exit 1 if any). ``--markdown``: print the
    generated section. ``--write``: update docs/features.md. ``--check``: exit 1 when
    docs/features.md differs from what would be generated."""
    path = features_path()
    if "--markdown" in argv:
        sys.stdout.write(markdown())
        return 0
    if "--write" in argv:
        current = path.read_text(encoding="utf-8")
        path.write_text(render_features(current), encoding="utf-8")
        return 0
    if "--check" in argv:
        if is_current(path):
            return 0
        sys.stderr.write(
            f"{path} is out of date; run: python -m pymesh.xds.resources._fields --write\n"
        )
        return 1
    problems = check_table()
    for p in problems:
        sys.stderr.write(p + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
