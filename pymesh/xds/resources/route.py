"""RouteConfiguration → frozen dataclasses (Envoy's defaults applied once, here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pymesh.xds.resources.matchers import (
    FractionalPercent,
    HeaderMatcher,
    QueryParameterMatcher,
)

AppendAction = Literal[
    "APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS_OR_ADD", "OVERWRITE_IF_EXISTS"
]

#: Envoy's route timeout default (RouteAction.timeout unset).
DEFAULT_ROUTE_TIMEOUT = 15.0
#: Envoy's RetryPolicy.num_retries default.
DEFAULT_NUM_RETRIES = 1
#: Envoy's retry_back_off defaults: base 25 ms, max 10 x base.
DEFAULT_RETRY_BASE_INTERVAL = 0.025

#: The ``retry_on`` conditions pymesh implements (x-envoy-retry-on and
#: x-envoy-retry-grpc-on); pymesh.resilience.retry decides them. Other names are warned
#: about at parse time and ignored, as Envoy ignores names it does not know.
RETRY_ON_HTTP = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "refused-stream",
        "retriable-4xx",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
    }
)
RETRY_ON_GRPC = frozenset(
    {"cancelled", "deadline-exceeded", "resource-exhausted", "internal", "unavailable"}
)
#: Envoy conditions pymesh does not implement (warned, like unknown names).
RETRY_ON_NOT_IMPLEMENTED = frozenset({"http3-post-connect-failure"})


@dataclass(frozen=True, slots=True)
class HeaderValueOption:
    """envoy.config.core.v3.HeaderValueOption (``append`` folded into ``append_action``)."""

    key: str
    value: str
    append_action: AppendAction = "APPEND_IF_EXISTS_OR_ADD"
    keep_empty_value: bool = False


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """Header additions/removals at one level (route config, virtual host, route, cluster)."""

    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_remove: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.request_headers_to_add
            or self.request_headers_to_remove
            or self.response_headers_to_add
            or self.response_headers_to_remove
        )


NO_HEADER_OPS = HeaderOps()


@dataclass(frozen=True, slots=True)
class RetryBackOff:
    base_interval: float = DEFAULT_RETRY_BASE_INTERVAL
    max_interval: float = DEFAULT_RETRY_BASE_INTERVAL * 10


@dataclass(frozen=True, slots=True)
class RateLimitedRetryBackOff:
    """reset_headers: (header name, "SECONDS" | "UNIX_TIMESTAMP")."""

    reset_headers: tuple[tuple[str, str], ...]
    max_interval: float = 300.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """envoy.config.route.v3.RetryPolicy, defaults applied.

    ``retry_on`` holds Envoy's condition names (``5xx``, ``gateway-error``, ``reset``,
    ``connect-failure``, ``retriable-4xx``, ``refused-stream``, ``retriable-status-codes``,
    ``retriable-headers``, and the gRPC ones ``cancelled``, ``deadline-exceeded``,
    ``internal``, ``resource-exhausted``, ``unavailable``).
    """

    retry_on: frozenset[str] = frozenset()
    num_retries: int = DEFAULT_NUM_RETRIES
    per_try_timeout: float | None = None
    per_try_idle_timeout: float | None = None
    retriable_status_codes: frozenset[int] = frozenset()
    retriable_headers: tuple[HeaderMatcher, ...] = ()
    retriable_request_headers: tuple[HeaderMatcher, ...] = ()
    back_off: RetryBackOff = RetryBackOff()
    rate_limited_back_off: RateLimitedRetryBackOff | None = None
    retry_host_predicates: tuple[str, ...] = ()  # e.g. "previous_hosts"
    host_selection_retry_max_attempts: int = 1


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    initial_requests: int = 1
    hedge_on_per_try_timeout: bool = False


HashPolicyKind = Literal["header", "cookie", "query_parameter", "source_ip", "filter_state"]


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """envoy.config.route.v3.RouteAction.HashPolicy.

    ``name`` is the header/cookie/query parameter name (or filter state key,
    ``io.grpc.channel_id`` for gRPC's channel id).
    """

    kind: HashPolicyKind
    name: str = ""
    terminal: bool = False
    regex_rewrite: RegexRewrite | None = None


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    """envoy.type.matcher.v3.RegexMatchAndSubstitute (RE2 pattern, ``\\1`` substitutions)."""

    pattern: str
    substitution: str
    regex: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    cluster: str
    runtime_fraction: FractionalPercent | None = None  # None: mirror every request
    trace_sampled: bool = True


@dataclass(frozen=True, slots=True)
class ClusterWeight:
    name: str
    weight: int
    header_ops: HeaderOps = NO_HEADER_OPS
    typed_per_filter_config: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class RouteAction:
    """envoy.config.route.v3.RouteAction with Envoy's defaults.

    Exactly one of ``cluster``, ``weighted_clusters`` or ``cluster_header`` is set.
    ``timeout`` is seconds; ``None`` means no timeout (Envoy's explicit 0).
    """

    cluster: str | None = None
    weighted_clusters: tuple[ClusterWeight, ...] = ()
    total_weight: int = 0  # sum of weights (or the legacy explicit total_weight)
    cluster_header: str | None = None
    cluster_not_found_response_code: int = 503
    timeout: float | None = DEFAULT_ROUTE_TIMEOUT
    idle_timeout: float | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: RegexRewrite | None = None
    host_rewrite_literal: str | None = None
    auto_host_rewrite: bool = False
    hash_policies: tuple[HashPolicy, ...] = ()
    retry_policy: RetryPolicy | None = None
    hedge_policy: HedgePolicy | None = None
    request_mirror_policies: tuple[MirrorPolicy, ...] = ()
    max_stream_duration: float | None = None
    grpc_timeout_header_max: float | None = None


@dataclass(frozen=True, slots=True)
class DirectResponseAction:
    status: int
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class RedirectAction:
    """envoy.config.route.v3.RedirectAction (response_code default 301)."""

    scheme_redirect: str | None = None
    host_redirect: str | None = None
    port_redirect: int | None = None
    path_redirect: str | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: RegexRewrite | None = None
    response_code: int = 301
    strip_query: bool = False


@dataclass(frozen=True, slots=True)
class NonForwardingAction:
    """Route.non_forwarding_action (server-side only; a client treats it as no route)."""


PathMatchKind = Literal["prefix", "path", "safe_regex", "path_separated_prefix"]


@dataclass(frozen=True, slots=True)
class RouteMatch:
    path_kind: PathMatchKind
    path: str  # the prefix/path/regex text
    case_sensitive: bool = True
    regex: Any = field(default=None, compare=False, repr=False)
    headers: tuple[HeaderMatcher, ...] = ()
    query_parameters: tuple[QueryParameterMatcher, ...] = ()
    runtime_fraction: FractionalPercent | None = None  # default_value only
    grpc: bool = False  # match only gRPC requests (content-type application/grpc*)


@dataclass(frozen=True, slots=True)
class Route:
    match: RouteMatch
    action: RouteAction | DirectResponseAction | RedirectAction | NonForwardingAction
    name: str = ""
    header_ops: HeaderOps = NO_HEADER_OPS
    typed_per_filter_config: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    header_ops: HeaderOps = NO_HEADER_OPS
    retry_policy: RetryPolicy | None = None
    hedge_policy: HedgePolicy | None = None
    typed_per_filter_config: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class RouteConfiguration:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]
    header_ops: HeaderOps = NO_HEADER_OPS
    #: names of fields that were set but are not supported (warned and counted).
    unsupported: tuple[str, ...] = ()


def parse_route_configuration(msg: Any) -> RouteConfiguration:
    """Parse an RDS resource or an inline ``route_config``.

    ``msg`` is a ``route_pb2.RouteConfiguration`` message. Raises
    :class:`pymesh.errors.ResourceInvalid` (field path and a reason) when the resource
    must be NACKed; set-but-unsupported fields are listed in ``unsupported`` and logged.
    """
    # Imported here: the parser modules import this module's dataclasses.
    from pymesh.xds.resources._parse_route import parse

    return parse(msg)
