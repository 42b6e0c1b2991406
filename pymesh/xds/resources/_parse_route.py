"""envoy.config.route.v3.RouteConfiguration → route.RouteConfiguration."""

from __future__ import annotations

from typing import Any

from envoy.extensions.retry.host.previous_hosts.v3 import (
    previous_hosts_pb2,
)

from pymesh.xds.resources import _parse_matchers as m
from pymesh.xds.resources._common import (
    UINT32_MAX,
    Ctx,
    duration,
    fractional_percent,
    header_ops,
    join,
    opt_duration,
    type_name,
    unpack,
    wrapped,
)
from pymesh.xds.resources._parse_fault import typed_per_filter_config
from pymesh.xds.resources.matchers import FractionalPercent
from pymesh.xds.resources.route import (
    DEFAULT_NUM_RETRIES,
    DEFAULT_ROUTE_TIMEOUT,
    RETRY_ON_GRPC,
    RETRY_ON_HTTP,
    RETRY_ON_NOT_IMPLEMENTED,
    ClusterWeight,
    DirectResponseAction,
    HashPolicy,
    HedgePolicy,
    MirrorPolicy,
    NonForwardingAction,
    RateLimitedRetryBackOff,
    RedirectAction,
    RetryBackOff,
    RetryPolicy,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)

#: Envoy's default max_direct_response_body_size_bytes.
DEFAULT_MAX_DIRECT_RESPONSE_BODY = 4096

_PREVIOUS_HOSTS_NAME = "envoy.retry_host_predicates.previous_hosts"
_PREVIOUS_HOSTS_TYPE = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"

_NOT_FOUND_CODES = {0: 503, 1: 404, 2: 500}
_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}
_RESET_FORMATS = {0: "SECONDS", 1: "UNIX_TIMESTAMP"}


def _runtime_fraction(ctx: Ctx, msg: Any, path: str) -> FractionalPercent:
    """RuntimeFractionalPercent: only default_value (there is no runtime here)."""
    ctx.check(msg, path)
    return fractional_percent(ctx, msg.default_value, join(path, "default_value"))  # type: ignore[no-any-return]


# ---- retry / hedge ---------------------------------------------------------------------


def retry_policy(ctx: Ctx, msg: Any, path: str) -> RetryPolicy:
    """envoy.config.route.v3.RetryPolicy with Envoy's defaults."""
    retry_on = frozenset(s.strip() for s in msg.retry_on.split(",") if s.strip())
    ignored = retry_on - RETRY_ON_HTTP - RETRY_ON_GRPC
    if ignored:
        unknown = sorted(ignored - RETRY_ON_NOT_IMPLEMENTED)
        missing = sorted(ignored & RETRY_ON_NOT_IMPLEMENTED)
        parts = []
        if unknown:
            parts.append(f"unknown condition(s) {', '.join(unknown)} (Envoy ignores them too)")
        if missing:
            parts.append(f"condition(s) {', '.join(missing)} not implemented by pymesh")
        ctx.unsupported_field(join(path, "retry_on"), "; ".join(parts) + "; ignored")
        retry_on -= ignored
    back_off = RetryBackOff()
    if msg.HasField("retry_back_off"):
        p = join(path, "retry_back_off")
        bo = msg.retry_back_off
        if not bo.HasField("base_interval"):
            ctx.fail(join(p, "base_interval"), "base_interval is required")
        base = duration(ctx, bo.base_interval, join(p, "base_interval"))
        if base <= 0:
            ctx.fail(join(p, "base_interval"), "base_interval must be greater than 0")
        mx = opt_duration(ctx, bo, "max_interval", p)
        if mx is None:
            mx = base * 10
        elif mx <= 0:
            ctx.fail(join(p, "max_interval"), "max_interval must be greater than 0")
        elif mx < base:
            ctx.fail(
                join(p, "max_interval"),
                f"max_interval ({mx}s) must be greater than or equal to base_interval ({base}s)",
            )
        ctx.check(bo, p)
        back_off = RetryBackOff(base, mx)
    rate_limited: RateLimitedRetryBackOff | None = None
    if msg.HasField("rate_limited_retry_back_off"):
        p = join(path, "rate_limited_retry_back_off")
        rl = msg.rate_limited_retry_back_off
        if not rl.reset_headers:
            ctx.fail(join(p, "reset_headers"), "at least one reset header is required")
        headers = []
        for i, h in enumerate(rl.reset_headers):
            if not h.name:
                ctx.fail(join(p, f"reset_headers[{i}].name"), "header name must not be empty")
            fmt = _RESET_FORMATS.get(int(h.format))
            if fmt is None:
                ctx.fail(join(p, f"reset_headers[{i}].format"), f"unknown format {h.format}")
            hp = join(p, f"reset_headers[{i}]")
            ctx.check(h, hp)
            headers.append((h.name.lower(), fmt))
        mx_rl = opt_duration(ctx, rl, "max_interval", p)
        ctx.check(rl, p)
        rate_limited = RateLimitedRetryBackOff(tuple(headers), 300.0 if mx_rl is None else mx_rl)
    predicates: list[str] = []
    for i, pred in enumerate(msg.retry_host_predicate):
        tn = type_name(pred.typed_config.type_url) if pred.HasField("typed_config") else ""
        pp = join(path, f"retry_host_predicate[{i}]")
        if pred.name == _PREVIOUS_HOSTS_NAME or tn == _PREVIOUS_HOSTS_TYPE:
            predicates.append("previous_hosts")
            ctx.check(pred, pp)
            if tn == _PREVIOUS_HOSTS_TYPE:
                tp = join(pp, "typed_config")
                predicate = unpack(
                    ctx, pred.typed_config, previous_hosts_pb2.PreviousHostsPredicate, tp
                )
                ctx.check(predicate, tp)
        else:
            ctx.unsupported_field(
                pp,
                f"retry host predicate {pred.name or tn!r} is not supported; only previous_hosts",
            )
    max_attempts = int(msg.host_selection_retry_max_attempts)
    ctx.check(msg, path)
    return RetryPolicy(
        retry_on=retry_on,
        num_retries=wrapped(msg, "num_retries", DEFAULT_NUM_RETRIES),
        per_try_timeout=opt_duration(ctx, msg, "per_try_timeout", path) or None,
        per_try_idle_timeout=opt_duration(ctx, msg, "per_try_idle_timeout", path) or None,
        retriable_status_codes=frozenset(int(c) for c in msg.retriable_status_codes),
        retriable_headers=tuple(
            m.header_matcher(ctx, h, join(path, f"retriable_headers[{i}]"))
            for i, h in enumerate(msg.retriable_headers)
        ),
        retriable_request_headers=tuple(
            m.header_matcher(ctx, h, join(path, f"retriable_request_headers[{i}]"))
            for i, h in enumerate(msg.retriable_request_headers)
        ),
        back_off=back_off,
        rate_limited_back_off=rate_limited,
        retry_host_predicates=tuple(predicates),
        host_selection_retry_max_attempts=max_attempts if max_attempts > 0 else 1,
    )


def hedge_policy(ctx: Ctx, msg: Any, path: str) -> HedgePolicy:
    initial = wrapped(msg, "initial_requests", 1)
    if initial < 1:
        ctx.fail(join(path, "initial_requests"), "initial_requests must be at least 1")
    # additional_request_chance is warned by the table: like initial_requests > 1, Envoy
    # itself does not implement it (hidden in its API); the httpx transports hedge on
    # per-try timeouts (gRPC channels do not, and say so per route).
    ctx.check(msg, path)
    if initial > 1:
        ctx.unsupported_field(
            join(path, "initial_requests"), "one request is sent first (Envoy does not either)"
        )
    return HedgePolicy(int(initial), bool(msg.hedge_on_per_try_timeout))


# ---- match -----------------------------------------------------------------------------


def route_match(ctx: Ctx, msg: Any, path: str) -> RouteMatch:
    which = msg.WhichOneof("path_specifier")
    compiled: Any = None
    if which in ("prefix", "path"):
        text = getattr(msg, which)
    elif which == "safe_regex":
        text, compiled = m.regex_matcher(ctx, msg.safe_regex, join(path, "safe_regex"))
    elif which == "path_separated_prefix":
        text = msg.path_separated_prefix
        if not text.startswith("/") or text.endswith("/") or "?" in text or "#" in text:
            ctx.fail(
                join(path, "path_separated_prefix"),
                f"{text!r} must start with '/', not end with '/', and contain no '?' or '#'",
            )
    elif which is None:
        ctx.fail(path, "one of prefix, path, safe_regex or path_separated_prefix is required")
    else:
        ctx.fail(join(path, which), f"path specifier {which} is not supported")
    runtime = None
    if msg.HasField("runtime_fraction"):
        runtime = _runtime_fraction(ctx, msg.runtime_fraction, join(path, "runtime_fraction"))
    grpc = msg.HasField("grpc")
    if grpc:
        ctx.check(msg.grpc, join(path, "grpc"))
    ctx.check(msg, path)
    return RouteMatch(
        path_kind=which,
        path=text,
        case_sensitive=wrapped(msg, "case_sensitive", True),
        regex=compiled,
        headers=tuple(
            m.header_matcher(ctx, h, join(path, f"headers[{i}]")) for i, h in enumerate(msg.headers)
        ),
        query_parameters=tuple(
            m.query_parameter_matcher(ctx, q, join(path, f"query_parameters[{i}]"))
            for i, q in enumerate(msg.query_parameters)
        ),
        runtime_fraction=runtime,
        grpc=grpc,
    )


# ---- actions ---------------------------------------------------------------------------


def _weighted_clusters(ctx: Ctx, msg: Any, path: str) -> tuple[tuple[ClusterWeight, ...], int]:
    if not msg.clusters:
        ctx.fail(join(path, "clusters"), "at least one cluster is required")
    out = []
    total = 0
    for i, cw in enumerate(msg.clusters):
        p = join(path, f"clusters[{i}]")
        if cw.cluster_header:
            ctx.fail(
                join(p, "cluster_header"), "cluster_header in weighted clusters is not supported"
            )
        if not cw.name:
            ctx.fail(join(p, "name"), "cluster name must not be empty")
        weight = int(wrapped(cw, "weight", 0))
        total += weight
        ctx.check(cw, p)
        out.append(
            ClusterWeight(
                name=cw.name,
                weight=weight,
                header_ops=header_ops(ctx, cw, p),
                typed_per_filter_config=typed_per_filter_config(
                    ctx, cw.typed_per_filter_config, join(p, "typed_per_filter_config")
                ),
            )
        )
    if total == 0:
        ctx.fail(join(path, "clusters"), "the sum of cluster weights must be greater than 0")
    if total > UINT32_MAX:
        ctx.fail(join(path, "clusters"), f"the sum of cluster weights ({total}) exceeds 2^32-1")
    # The deprecated total_weight is not checked against the sum: Envoy 1.40 and gRPC both
    # ignore it and split by the sum of the weights (verified against the real Envoy).
    ctx.check(msg, path)
    return tuple(out), total


def _hash_policy(ctx: Ctx, msg: Any, path: str) -> HashPolicy | None:
    """One hash policy; None for connection_properties without source_ip (hashes nothing)."""
    which = msg.WhichOneof("policy_specifier")
    terminal = bool(msg.terminal)
    ctx.check(msg, path)
    if which is not None:
        ctx.check(getattr(msg, which), join(path, which))
    if which == "header":
        h = msg.header
        if not h.header_name:
            ctx.fail(join(path, "header.header_name"), "header_name must not be empty")
        rw = None
        if h.HasField("regex_rewrite"):
            rw = m.regex_rewrite(ctx, h.regex_rewrite, join(path, "header.regex_rewrite"))
        return HashPolicy("header", h.header_name.lower(), terminal, rw)
    if which == "cookie":
        c = msg.cookie
        if not c.name:
            ctx.fail(join(path, "cookie.name"), "cookie name must not be empty")
        # A ttl asks Envoy to generate the cookie; a client cannot (the table warns).
        return HashPolicy("cookie", c.name, terminal)
    if which == "query_parameter":
        q = msg.query_parameter
        if not q.name:
            ctx.fail(join(path, "query_parameter.name"), "name must not be empty")
        return HashPolicy("query_parameter", q.name, terminal)
    if which == "connection_properties":
        # Envoy adds no hash method unless source_ip is true.
        return (
            HashPolicy("source_ip", "", terminal) if msg.connection_properties.source_ip else None
        )
    if which == "filter_state":
        if not msg.filter_state.key:
            ctx.fail(join(path, "filter_state.key"), "key must not be empty")
        return HashPolicy("filter_state", msg.filter_state.key, terminal)
    ctx.fail(
        path,
        "one of header, cookie, query_parameter, connection_properties or filter_state is required",
    )


def route_action(ctx: Ctx, msg: Any, path: str) -> RouteAction:
    which = msg.WhichOneof("cluster_specifier")
    cluster = cluster_header = None
    weighted: tuple[ClusterWeight, ...] = ()
    total = 0
    if which == "cluster":
        if not msg.cluster:
            ctx.fail(join(path, "cluster"), "cluster name must not be empty")
        cluster = msg.cluster
    elif which == "cluster_header":
        if not msg.cluster_header:
            ctx.fail(join(path, "cluster_header"), "header name must not be empty")
        cluster_header = msg.cluster_header.lower()
    elif which == "weighted_clusters":
        weighted, total = _weighted_clusters(ctx, msg.weighted_clusters, join(path, which))
    elif which is None:
        ctx.fail(path, "one of cluster, weighted_clusters or cluster_header is required")
    else:
        ctx.fail(
            join(path, which),
            f"{which} is not supported; use cluster, weighted_clusters or cluster_header",
        )
    not_found = _NOT_FOUND_CODES.get(int(msg.cluster_not_found_response_code))
    if not_found is None:
        ctx.fail(join(path, "cluster_not_found_response_code"), "unknown response code enum")
    if msg.prefix_rewrite and msg.HasField("regex_rewrite"):
        ctx.fail(join(path, "regex_rewrite"), "cannot set both prefix_rewrite and regex_rewrite")
    if msg.HasField("path_rewrite_policy"):
        ctx.fail(join(path, "path_rewrite_policy"), "path_rewrite_policy is not supported")
    timeout = opt_duration(ctx, msg, "timeout", path)
    if timeout is None:
        timeout = DEFAULT_ROUTE_TIMEOUT
    msd = grpc_max = None
    if msg.HasField("max_stream_duration"):
        p = join(path, "max_stream_duration")
        sd = msg.max_stream_duration
        msd = opt_duration(ctx, sd, "max_stream_duration", p) or None
        # Envoy: 0 here means "use grpc-timeout uncapped", so 0.0 is kept (not None).
        grpc_max = opt_duration(ctx, sd, "grpc_timeout_header_max", p)
        ctx.check(sd, p)
    mirrors = []
    for i, mp in enumerate(msg.request_mirror_policies):
        p = join(path, f"request_mirror_policies[{i}]")
        if not mp.cluster:
            # cluster_header mirrors cannot be resolved here; skip the mirror.
            ctx.unsupported_field(p, "a mirror without cluster (cluster_header) is skipped")
            continue
        frac = None
        if mp.HasField("runtime_fraction"):
            frac = _runtime_fraction(ctx, mp.runtime_fraction, join(p, "runtime_fraction"))
        ctx.check(mp, p)
        mirrors.append(MirrorPolicy(mp.cluster, frac, wrapped(mp, "trace_sampled", True)))
    ctx.check(msg, path)
    return RouteAction(
        cluster=cluster,
        weighted_clusters=weighted,
        total_weight=total,
        cluster_header=cluster_header,
        cluster_not_found_response_code=not_found,
        timeout=timeout or None,
        idle_timeout=opt_duration(ctx, msg, "idle_timeout", path) or None,
        prefix_rewrite=msg.prefix_rewrite or None,
        regex_rewrite=(
            m.regex_rewrite(ctx, msg.regex_rewrite, join(path, "regex_rewrite"))
            if msg.HasField("regex_rewrite")
            else None
        ),
        host_rewrite_literal=msg.host_rewrite_literal or None,
        auto_host_rewrite=bool(wrapped(msg, "auto_host_rewrite", False)),
        hash_policies=tuple(
            hp
            for i, h in enumerate(msg.hash_policy)
            if (hp := _hash_policy(ctx, h, join(path, f"hash_policy[{i}]"))) is not None
        ),
        retry_policy=(
            retry_policy(ctx, msg.retry_policy, join(path, "retry_policy"))
            if msg.HasField("retry_policy")
            else None
        ),
        hedge_policy=(
            hedge_policy(ctx, msg.hedge_policy, join(path, "hedge_policy"))
            if msg.HasField("hedge_policy")
            else None
        ),
        request_mirror_policies=tuple(mirrors),
        max_stream_duration=msd,
        grpc_timeout_header_max=grpc_max,
    )


def _direct_response(ctx: Ctx, msg: Any, path: str, max_body: int) -> DirectResponseAction:
    if not 200 <= msg.status < 600:
        ctx.fail(join(path, "status"), f"status must be in [200, 600), got {msg.status}")
    body = b""
    if msg.HasField("body"):
        p = join(path, "body")
        which = msg.body.WhichOneof("specifier")
        if which == "inline_string":
            body = msg.body.inline_string.encode()
        elif which == "inline_bytes":
            body = bytes(msg.body.inline_bytes)
        elif which is not None:
            ctx.fail(join(p, which), f"body {which} is not supported; use inline_string")
        ctx.check(msg.body, p, "envoy.config.core.v3.DataSource@body")
        if len(body) > max_body:
            ctx.fail(
                p,
                f"body is {len(body)} bytes, over max_direct_response_body_size_bytes ({max_body})",
            )
    ctx.check(msg, path)
    return DirectResponseAction(int(msg.status), body)


def _redirect(ctx: Ctx, msg: Any, path: str) -> RedirectAction:
    code = _REDIRECT_CODES.get(int(msg.response_code))
    if code is None:
        ctx.fail(join(path, "response_code"), f"unknown response_code {msg.response_code}")
    ctx.check(msg, path)
    scheme = "https" if msg.https_redirect else (msg.scheme_redirect or None)
    return RedirectAction(
        scheme_redirect=scheme,
        host_redirect=msg.host_redirect or None,
        port_redirect=int(msg.port_redirect) or None,
        path_redirect=msg.path_redirect or None,
        prefix_rewrite=msg.prefix_rewrite or None,
        regex_rewrite=(
            m.regex_rewrite(ctx, msg.regex_rewrite, join(path, "regex_rewrite"))
            if msg.HasField("regex_rewrite")
            else None
        ),
        response_code=code,
        strip_query=bool(msg.strip_query),
    )


def route(ctx: Ctx, msg: Any, path: str, max_body: int) -> Route:
    if not msg.HasField("match"):
        ctx.fail(join(path, "match"), "match is required")
    match = route_match(ctx, msg.match, join(path, "match"))
    which = msg.WhichOneof("action")
    action: Any
    if which == "route":
        action = route_action(ctx, msg.route, join(path, "route"))
    elif which == "direct_response":
        action = _direct_response(ctx, msg.direct_response, join(path, which), max_body)
    elif which == "redirect":
        action = _redirect(ctx, msg.redirect, join(path, "redirect"))
    elif which == "non_forwarding_action":
        ctx.check(msg.non_forwarding_action, join(path, which))
        action = NonForwardingAction()
    elif which is None:
        ctx.fail(
            path,
            "the route has no action; set route, redirect, direct_response "
            "or non_forwarding_action",
        )
    else:
        ctx.fail(join(path, which), f"route action {which} is not supported")
    ctx.check(msg, path)
    return Route(
        match=match,
        action=action,
        name=msg.name,
        header_ops=header_ops(ctx, msg, path),
        typed_per_filter_config=typed_per_filter_config(
            ctx, msg.typed_per_filter_config, join(path, "typed_per_filter_config")
        ),
    )


def _check_domains(ctx: Ctx, domains: Any, path: str) -> tuple[str, ...]:
    if not domains:
        ctx.fail(path, "at least one domain is required")
    # Like Envoy, other odd domains ("", "a.*.com") are accepted: they just never match
    # as wildcards (a '*' counts only as the whole domain, or at its start or end).
    return tuple(d.lower() for d in domains)


def virtual_host(ctx: Ctx, msg: Any, path: str, max_body: int) -> VirtualHost:
    domains = _check_domains(ctx, msg.domains, join(path, "domains"))
    if msg.HasField("matcher"):
        ctx.fail(join(path, "matcher"), "the matcher tree is not supported; use routes")
    routes = tuple(
        route(ctx, r, join(path, f"routes[{i}]"), max_body) for i, r in enumerate(msg.routes)
    )
    ctx.check(msg, path)
    return VirtualHost(
        name=msg.name,
        domains=domains,
        routes=routes,
        header_ops=header_ops(ctx, msg, path),
        retry_policy=(
            retry_policy(ctx, msg.retry_policy, join(path, "retry_policy"))
            if msg.HasField("retry_policy")
            else None
        ),
        hedge_policy=(
            hedge_policy(ctx, msg.hedge_policy, join(path, "hedge_policy"))
            if msg.HasField("hedge_policy")
            else None
        ),
        typed_per_filter_config=typed_per_filter_config(
            ctx, msg.typed_per_filter_config, join(path, "typed_per_filter_config")
        ),
    )


def route_configuration(ctx: Ctx, msg: Any) -> RouteConfiguration:
    """Parse a RouteConfiguration; ``ctx`` carries the name and the path prefix."""
    max_body = int(wrapped(msg, "max_direct_response_body_size_bytes", 0)) or (
        DEFAULT_MAX_DIRECT_RESPONSE_BODY
    )
    vhosts = []
    seen: dict[str, int] = {}
    for i, vh in enumerate(msg.virtual_hosts):
        p = f"virtual_hosts[{i}]"
        parsed = virtual_host(ctx, vh, p, max_body)
        for j, d in enumerate(parsed.domains):
            if d in seen:
                ctx.fail(
                    join(p, f"domains[{j}]"),
                    f"domain {d!r} is already used by virtual_hosts[{seen[d]}]; "
                    "domains must be unique within a route configuration",
                )
            seen[d] = i
        vhosts.append(parsed)
    ctx.check(msg, "")
    return RouteConfiguration(
        name=msg.name,
        virtual_hosts=tuple(vhosts),
        header_ops=header_ops(ctx, msg, ""),
        unsupported=tuple(ctx.unsupported),
    )


def parse(msg: Any) -> RouteConfiguration:
    if not msg.name:
        Ctx("RouteConfiguration", "").fail("name", "resource name must not be empty")
    return route_configuration(Ctx("RouteConfiguration", msg.name), msg)
