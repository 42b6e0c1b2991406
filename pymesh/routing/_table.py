"""The compiled, immutable route table and its per-request decision."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from pymesh.errors import ResourceInvalid
from pymesh.resilience.fault import FaultInjector
from pymesh.resilience.retry import RetryDecider
from pymesh.routing._domains import DomainIndex, DomainKind
from pymesh.routing._headers import HeaderMutation
from pymesh.routing._match import PATH, PREFIX, CompiledMatch
from pymesh.routing._request import RequestInfo
from pymesh.xds.resources.fault import FaultConfig
from pymesh.xds.resources.route import (
    ClusterWeight,
    DirectResponseAction,
    HeaderOps,
    HedgePolicy,
    NonForwardingAction,
    RedirectAction,
    RetryPolicy,
    Route,
    RouteAction,
    RouteConfiguration,
    VirtualHost,
)

Action = RouteAction | DirectResponseAction | RedirectAction
#: Fault injectors of one table, one per FaultConfig object (a virtual host's override is
#: shared by its routes, and so is its max_active_faults count). Compile-time only.
Injectors = dict[int, tuple[FaultConfig, FaultInjector]]


def _injector(injectors: Injectors, config: FaultConfig) -> FaultInjector:
    hit = injectors.get(id(config))
    if hit is None:
        hit = injectors[id(config)] = (config, FaultInjector(config))
    return hit[1]


def _fault_overrides(
    injectors: Injectors, levels: list[dict[str, object] | None]
) -> dict[str, FaultInjector]:
    """Filter name -> the injector of the most specific FaultConfig override among
    ``levels`` (weighted cluster, route, virtual host: Envoy's order)."""
    out: dict[str, FaultInjector] = {}
    for per_filter in reversed(levels):  # least specific first; more specific overwrite
        for name, config in (per_filter or {}).items():
            if isinstance(config, FaultConfig):
                out[name] = _injector(injectors, config)
    return out


class CompiledRoute:
    """One route with its match, cluster choice and header mutations precomputed."""

    __slots__ = (
        "action",
        "cluster",
        "cluster_header",
        "cumulative",
        "decider",
        "decision",
        "faults",
        "hedge",
        "index",
        "match",
        "plain",
        "request_mutations",
        "response_mutations",
        "retry",
        "route",
        "total_weight",
        "weights",
    )

    def __init__(
        self,
        rc: RouteConfiguration,
        vh: VirtualHost,
        index: int,
        route: Route,
        injectors: Injectors | None = None,
    ) -> None:
        action = route.action
        assert not isinstance(action, NonForwardingAction)
        self.index = index
        self.route = route
        self.action: Action = action
        self.match = CompiledMatch(route.match)
        self.cluster: str | None = None
        self.cluster_header: str | None = None
        self.weights: tuple[ClusterWeight, ...] = ()
        self.cumulative: tuple[int, ...] = ()
        self.total_weight = 0
        cluster_levels: list[HeaderOps | None] = [None]
        if isinstance(action, RouteAction):
            if action.weighted_clusters:
                self.weights = action.weighted_clusters
                # Envoy: value % total, then the first cluster whose cumulative weight
                # exceeds it; zero-weight clusters are never chosen.
                self.cumulative = tuple(accumulate(cw.weight for cw in self.weights))
                self.total_weight = self.cumulative[-1]
                if self.total_weight <= 0:
                    raise ResourceInvalid(
                        rc.name,
                        f"virtual_hosts[{vh.name}].routes[{index}].route.weighted_clusters",
                        "sum of weights must be greater than 0",
                    )
                cluster_levels = [cw.header_ops for cw in self.weights]
            elif action.cluster_header is not None:
                self.cluster_header = action.cluster_header.lower()
            else:
                self.cluster = action.cluster
        req: list[HeaderMutation] = []
        resp: list[HeaderMutation] = []
        for cluster_ops in cluster_levels:
            # Most specific first: Envoy's default (most_specific_header_mutations_wins=false).
            levels = [route.header_ops, vh.header_ops, rc.header_ops]
            if cluster_ops is not None:
                levels.insert(0, cluster_ops)
            req.append(HeaderMutation.request(levels))
            resp.append(HeaderMutation.response(levels))
        self.request_mutations = tuple(req)
        self.response_mutations = tuple(resp)
        # The per-route runtime, compiled with the table rather than looked up per request:
        # the effective retry and hedge policies (the route's, else the virtual host's),
        # the retry decider (None: no retries), and per weighted cluster the fault filter
        # overrides (filter name -> injector).
        self.retry: RetryPolicy | None = None
        self.hedge: HedgePolicy | None = None
        self.decider: RetryDecider | None = None
        if isinstance(action, RouteAction):
            self.retry = action.retry_policy or vh.retry_policy
            self.hedge = action.hedge_policy or vh.hedge_policy
            if self.retry is not None and self.retry.num_retries > 0:
                self.decider = RetryDecider(self.retry)
        inj: Injectors = {} if injectors is None else injectors
        self.faults: tuple[dict[str, FaultInjector], ...] = tuple(
            _fault_overrides(
                inj,
                [
                    cw.typed_per_filter_config if cw is not None else None,
                    route.typed_per_filter_config,
                    vh.typed_per_filter_config,
                ],
            )
            for cw in (self.weights or (None,))
        )
        #: Set by the virtual host for a route to one named cluster: the decision it
        #: gives every request it takes (shared; decisions are never modified).
        self.decision: RouteDecision | None = None
        #: Whether forwarding on this route reads nothing of the request but its path
        #: and authority: no hash policy, header edits, rewrites, host rewrite literal,
        #: retriable_request_headers (route or virtual host retry policy).
        self.plain = False
        if isinstance(action, RouteAction):
            retry = action.retry_policy or vh.retry_policy
            self.plain = not (
                action.hash_policies
                or action.host_rewrite_literal
                or action.prefix_rewrite is not None
                or action.regex_rewrite is not None
                or not self.request_mutations[0].empty
                or (retry is not None and retry.retriable_request_headers)
            )


class CompiledVirtualHost:
    """A virtual host's routes; ``routes`` holds only those a client can take."""

    __slots__ = ("all_routes", "entries", "routes", "virtual_host")

    def __init__(
        self, rc: RouteConfiguration, vh: VirtualHost, injectors: Injectors | None = None
    ) -> None:
        self.virtual_host = vh
        inj: Injectors = {} if injectors is None else injectors
        # NonForwardingAction is a server-side action: a client treats the route as absent.
        self.all_routes: tuple[CompiledRoute | None, ...] = tuple(
            None if isinstance(r.action, NonForwardingAction) else CompiledRoute(rc, vh, i, r, inj)
            for i, r in enumerate(vh.routes)
        )
        self.routes = tuple(r for r in self.all_routes if r is not None)
        #: (path test, other conditions or None, route): what select() iterates. Runs of
        #: plain path routes are folded into one dict-driven entry (see _PathRun).
        self.entries = _fold_runs(self.routes)
        for cr in self.routes:
            if cr.cluster is not None:
                cr.decision = RouteDecision(vh, cr, cr.cluster, None, 0)


#: Marks an entry whose test is a :class:`_PathRun` lookup returning the route or None.
_RUN: Any = object()
#: path_decision's memo: the request's decision depends on more than the path.
_VARIES = object()
#: path_decision's memo holds at most this many paths (then starts again): a bound for
#: paths with ids in them.
_PATH_MEMO_LIMIT = 4096
#: Shorter runs of plain routes are cheaper to test one by one.
_MIN_RUN = 4


class _PathRun:
    """Consecutive routes whose only condition is a case-sensitive prefix or exact path.

    First match wins, so the run's answer is the earliest route whose prefix starts the
    path (or whose path equals it): a dict lookup per distinct prefix length instead of
    one test per route. Large generated tables (a route per API prefix) are mostly this.
    """

    __slots__ = ("exact", "lengths", "prefixes")

    def __init__(self, routes: list[CompiledRoute]) -> None:
        self.exact: dict[str, tuple[int, CompiledRoute]] = {}
        self.prefixes: dict[str, tuple[int, CompiledRoute]] = {}
        for order, cr in enumerate(routes):
            table = self.prefixes if cr.match.kind == PREFIX else self.exact
            table.setdefault(cr.match.path_cmp, (order, cr))
        self.lengths = tuple(sorted({len(p) for p in self.prefixes}))

    def find(self, bare: str) -> CompiledRoute | None:
        best = self.exact.get(bare)
        prefixes = self.prefixes
        n = len(bare)
        for length in self.lengths:
            if length > n:
                break
            hit = prefixes.get(bare[:length])
            if hit is not None and (best is None or hit[0] < best[0]):
                best = hit
        return best[1] if best is not None else None


def _plain(cr: CompiledRoute) -> bool:
    m = cr.match
    return m.extras is None and m.case_sensitive and m.kind in (PREFIX, PATH)


def _fold_runs(
    routes: tuple[CompiledRoute, ...],
) -> tuple[tuple[Callable[[str], Any], Any, CompiledRoute], ...]:
    entries: list[tuple[Callable[[str], Any], Any, CompiledRoute]] = []
    run: list[CompiledRoute] = []

    def flush() -> None:
        if len(run) >= _MIN_RUN:
            # The route slot is unused for a run (its lookup returns the route).
            entries.append((_PathRun(run).find, _RUN, run[0]))
        else:
            entries.extend((cr.match.path_test, cr.match.extras, cr) for cr in run)
        run.clear()

    for cr in routes:
        if _plain(cr):
            run.append(cr)
            continue
        flush()
        entries.append((cr.match.path_test, cr.match.extras, cr))
    flush()
    return tuple(entries)


class RouteDecision:
    """The outcome of :meth:`RouteTable.select` for one request.

    ``cluster`` is the chosen cluster: the route's cluster, the picked weighted cluster,
    or the value of ``cluster_header`` (None when that header is absent or empty: the
    caller answers ``action.cluster_not_found_response_code``). It is None for redirect
    and direct-response actions.
    """

    __slots__ = (
        "_weight_index",
        "action",
        "cluster",
        "cluster_weight",
        "compiled",
        "route",
        "route_index",
        "virtual_host",
    )

    def __init__(
        self,
        virtual_host: VirtualHost,
        compiled: CompiledRoute,
        cluster: str | None,
        cluster_weight: ClusterWeight | None,
        weight_index: int,
    ) -> None:
        self.virtual_host = virtual_host
        self.route: Route = compiled.route
        self.route_index = compiled.index
        self.action: Action = compiled.action
        self.cluster = cluster
        self.cluster_weight = cluster_weight
        #: The matched route's compiled runtime (retry decider, policies, fault overrides).
        self.compiled = compiled
        self._weight_index = weight_index

    @property
    def request_mutation(self) -> HeaderMutation:
        return self.compiled.request_mutations[self._weight_index]

    @property
    def fault_overrides(self) -> dict[str, FaultInjector]:
        """Fault filter name -> injector of the most specific override for this decision
        (weighted cluster, route, virtual host); empty when none."""
        return self.compiled.faults[self._weight_index]

    @property
    def response_mutation(self) -> HeaderMutation:
        return self.compiled.response_mutations[self._weight_index]

    def __repr__(self) -> str:
        return (
            f"RouteDecision(virtual_host={self.virtual_host.name!r}, "
            f"route_index={self.route_index}, route={self.route.name!r}, "
            f"action={type(self.action).__name__}, cluster={self.cluster!r})"
        )


def _plain_decision(cr: CompiledRoute) -> RouteDecision | object:
    return cr.decision if cr.decision is not None and cr.plain else _VARIES


def cluster_from_header(req: RequestInfo, name: str) -> str | None:
    """The ``cluster_header`` value: Envoy takes the first value; None if absent/empty."""
    repeated = req.repeated.get(name) if req.repeated else None
    value = repeated[0] if repeated else req.header(name)
    return value or None


def decide(
    vh: CompiledVirtualHost, cr: CompiledRoute, req: RequestInfo, random_value: int
) -> RouteDecision:
    """Pick the cluster of a matched route."""
    fixed = cr.decision
    if fixed is not None:
        return fixed
    if cr.weights:
        i = bisect_right(cr.cumulative, random_value % cr.total_weight)
        cw = cr.weights[i]
        return RouteDecision(vh.virtual_host, cr, cw.name, cw, i)
    if cr.cluster_header is not None:
        return RouteDecision(
            vh.virtual_host, cr, cluster_from_header(req, cr.cluster_header), None, 0
        )
    return RouteDecision(vh.virtual_host, cr, cr.cluster, None, 0)


class RouteTable:
    """An immutable, precompiled RouteConfiguration; ``select`` is lock-free.

    Build it once per RouteConfiguration with :meth:`compile` (which raises
    :class:`~pymesh.errors.ResourceInvalid` for duplicate domains, several ``*`` virtual
    hosts or weighted clusters summing to 0) and share it between threads.
    """

    __slots__ = ("_by_path", "_domains", "route_config")

    def __init__(self, rc: RouteConfiguration, domains: DomainIndex[CompiledVirtualHost]) -> None:
        self.route_config = rc
        self._domains = domains
        #: path_decision's memo: (authority, bare path) -> decision or _VARIES.
        self._by_path: dict[tuple[str, str], RouteDecision | object] = {}

    @classmethod
    def compile(cls, rc: RouteConfiguration) -> RouteTable:
        """Compile ``rc``; everything a request needs is computed here."""
        injectors: Injectors = {}
        entries = [(vh.domains, CompiledVirtualHost(rc, vh, injectors)) for vh in rc.virtual_hosts]
        return cls(rc, DomainIndex(rc.name, entries))

    def find_virtual_host(
        self, authority: str
    ) -> tuple[CompiledVirtualHost, DomainKind, str] | None:
        """The virtual host for ``authority`` with the kind of domain and the domain."""
        return self._domains.find(authority)

    def select(self, req: RequestInfo, random_value: int) -> RouteDecision | None:
        """The first matching route of the request's virtual host, with its cluster.

        ``random_value`` is a uniform random 64-bit integer: it drives
        ``runtime_fraction`` (``value % denominator < numerator``) and the weighted
        cluster pick (``value % total_weight``), as Envoy's per-stream random value.
        None: no virtual host or no route matched.
        """
        found = self._domains.find(req.authority)
        if found is None:
            return None
        vh = found[0]
        bare = req.bare_path
        for path_test, extras, cr in vh.entries:
            if extras is _RUN:
                hit = path_test(bare)
                if hit is not None:
                    return decide(vh, hit, req, random_value)
            elif path_test(bare) and (extras is None or extras(req, random_value)):
                return decide(vh, cr, req, random_value)
        return None

    def path_decision(self, authority: str, bare_path: str) -> RouteDecision | None:
        """The decision for every request to ``authority`` whose path without query is
        ``bare_path``, when nothing else can change it or what forwarding on it does;
        else None (use :meth:`select`).

        It is the decision :meth:`select` gives when every route before the match fails
        on the path alone and the match is a plain route (``CompiledRoute.plain``) to one
        named cluster with no other condition: then headers, query and the random value
        play no part. Memoised per table (a new table comes with every
        RouteConfiguration), bounded; safe without a lock (a racing writer stores the
        same answer).
        """
        key = (authority, bare_path)
        memo = self._by_path
        hit = memo.get(key)
        if hit is None:
            hit = self._path_only(authority, bare_path)
            if len(memo) >= _PATH_MEMO_LIMIT:
                memo.clear()
            memo[key] = hit
        return hit if hit is not _VARIES else None  # type: ignore[return-value]

    def _path_only(self, authority: str, bare: str) -> RouteDecision | object:
        found = self._domains.find(authority)
        if found is None:
            return _VARIES
        for path_test, extras, cr in found[0].entries:
            if extras is _RUN:
                hit = path_test(bare)
                if hit is not None:
                    return _plain_decision(hit)
            elif path_test(bare):
                # A route with other conditions than the path: whether it matches (and
                # so the answer) depends on more than the path.
                return _plain_decision(cr) if extras is None else _VARIES
        return _VARIES

    def __repr__(self) -> str:
        return (
            f"RouteTable(name={self.route_config.name!r}, "
            f"virtual_hosts={len(self.route_config.virtual_hosts)})"
        )


def request_header_ops(table: RouteTable, decision: RouteDecision) -> HeaderMutation:
    """Request-header edits for the decision's route and weighted cluster (precomputed at
    compile time): weighted cluster, route, virtual host, route configuration, in that
    order (Envoy's default, ``most_specific_header_mutations_wins: false``)."""
    return decision.request_mutation


def response_header_ops(table: RouteTable, decision: RouteDecision) -> HeaderMutation:
    """Response-header edits, in the same order as :func:`request_header_ops`."""
    return decision.response_mutation
