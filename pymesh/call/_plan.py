"""Planning: route + weighted cluster, shared by every driver (httpx, gRPC; sync, async).

``Planner.plan`` turns a request and a listener state into either a local answer
(404, direct response, redirect, fault abort, 503) or a :class:`Plan`: the chosen
cluster, rewritten path/headers, deadlines, and the retry policy. The transports
only add the waiting and the I/O. The per-route runtime (retry decider, effective retry
and hedge policies, fault injectors) was compiled with the route table
(:class:`pymesh.routing.RouteDecision.compiled`), not looked up per request.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from pymesh._mesh import ListenerState
from pymesh._upstream import ClusterRuntime
from pymesh.call._session import Session, read_session, session_config
from pymesh.lb._aggregate import AggregatePicker, LevelPicker
from pymesh.resilience import FaultInjector, RetryDecider
from pymesh.routing import (
    RequestInfo,
    RouteDecision,
    compute_hash,
    host_rewrite,
    redirect_location,
    rewrite_path,
)
from pymesh.routing._request import strip_query_and_fragment
from pymesh.xds.resources.route import (
    DirectResponseAction,
    HedgePolicy,
    RedirectAction,
    RetryPolicy,
    RouteAction,
)


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A response pymesh answers itself, as Envoy would (no upstream is contacted)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    grpc_status: int | None = None
    flags: str = ""  # Envoy-style response flag, e.g. "NR" (no route), "UO" (overflow)
    delay: float = 0.0  # a fault delay to wait before answering
    #: A ``cluster_header`` target the listener has not subscribed yet: the driver may
    #: wait for it (:meth:`pymesh.Mesh.wait_cluster`) and plan again; else this NC.
    wait_cluster: str | None = None


@dataclass(slots=True)
class Plan:
    """Everything needed to send (and retry) one request upstream."""

    decision: RouteDecision
    action: RouteAction
    cluster_name: str
    runtime: ClusterRuntime
    path: str
    #: Lower-case names, after the route's header mutations; None when the caller gave
    #: a lazy source and no mutation applies (the transport sends the original headers).
    headers: list[tuple[str, str]] | None
    authority: str
    hash_key: int | None
    deadline: float | None  # monotonic; None = no route timeout
    retry: RetryPolicy | None
    decider: RetryDecider | None
    fault_delay: float = 0.0
    #: True when the route's timeout (not the caller's) sets the deadline: a timeout is
    #: then answered with a local 504, as Envoy does; the caller's own raises.
    route_timeout_binding: bool = False
    #: The route's (else the virtual host's) hedge policy.
    hedge: HedgePolicy | None = None
    #: The request's stateful session (its cookie's endpoint), or None.
    session: Session | None = None


def _fault(state: ListenerState, decision: RouteDecision) -> FaultInjector | None:
    """The fault injector of the listener's fault filter for this decision: the most
    specific override (weighted cluster, route, virtual host; compiled with the route
    table), else the listener's own config."""
    name = state.fault_filter_name
    if name is None:
        return None
    override = decision.fault_overrides.get(name)
    if override is not None:
        return override
    return state.fault


def not_found(listener: str, authority: str, path: str) -> LocalReply:
    return LocalReply(
        404,
        f"pymesh: no route for {authority}{path} (listener {listener!r})\n".encode(),
        grpc_status=14,
        flags="NR",
    )


def aggregate_target(
    plan: Plan, state: ListenerState, grpc: bool = False
) -> tuple[ClusterRuntime, LevelPicker] | None:
    """For an aggregate cluster: the leaf runtime and the level of its picker to pick
    from, chosen on the leaves' merged priority set (:mod:`pymesh.lb._aggregate`, as
    Envoy's aggregate cluster); None when no leaf has endpoints.

    The merged set is cached on the aggregate's runtime and rebuilt here, without a lock,
    whenever a leaf's picker was replaced (two threads may both rebuild; either result is
    whole and correct). ``grpc``: merge the leaves' gRPC pickers."""
    rt = plan.runtime
    runtimes = [state.clusters.get(leaf) for leaf in rt.leaf_clusters]
    pickers = tuple(None if r is None else (r.grpc_picker if grpc else r.picker) for r in runtimes)
    merged = rt.aggregate_pickers.get(grpc)
    if merged is None or merged.leaves != pickers:
        cluster = rt.cluster
        threshold = cluster.healthy_panic_threshold if cluster is not None else 50.0
        merged = AggregatePicker(pickers, threshold, rt.rng)
        rt.aggregate_pickers[grpc] = merged
    choice = merged.choose()
    if choice is None:
        return None
    i, level = choice
    leaf_rt = runtimes[i]
    assert leaf_rt is not None  # a leaf without a runtime has no picker, so no levels
    return leaf_rt, level


def _deadline(
    action: RouteAction, caller_timeout: float | None, fault_delay: float
) -> tuple[float | None, bool]:
    """A request's deadline (monotonic, None for none) and whether the route's timeout
    rather than the caller's sets it: the shorter one binds."""
    timeout = action.timeout
    if caller_timeout is not None and (timeout is None or caller_timeout < timeout):
        return time.monotonic() + caller_timeout + fault_delay, False
    if timeout is None:
        return None, False
    return time.monotonic() + timeout + fault_delay, True


def _build(
    decision: RouteDecision,
    runtime: ClusterRuntime,
    path: str,
    headers: list[tuple[str, str]] | None,
    authority: str,
    hash_key: int | None,
    deadline: float | None,
    route_binding: bool,
    fault_delay: float,
    retriable: bool,
) -> Plan:
    """The Plan of a routed request: :func:`plan_by_path`, :attr:`PathRoute.plan`
    and :func:`plan_request` all end here, so they can never disagree on what a route
    means."""
    action = decision.action
    assert isinstance(action, RouteAction)
    compiled = decision.compiled
    cluster_name = decision.cluster
    assert cluster_name is not None
    return Plan(
        decision,
        action,
        cluster_name,
        runtime,
        path,
        headers,
        authority,
        hash_key,
        deadline,
        compiled.retry,
        compiled.decider if retriable else None,
        fault_delay,
        route_binding,
        compiled.hedge,
    )


class PathRoute:
    """Where every request to one authority and path goes when nothing else decides it
    (:func:`path_route`): found once per listener state and path, so a driver that keeps
    it (a gRPC channel, per method: gRPC routes by path only) plans a call without
    routing it again.

    :attr:`plan` is the one Plan of all its requests, built as every plan is, with no
    deadline: a driver that shares it gives each call's deadline to its
    :class:`~pymesh.call.Attempts` (``deadline=``) and never changes the plan. It is
    valid while ``runtime.error`` is None (else :func:`plan_request` answers why).
    """

    __slots__ = ("decision", "plan", "runtime", "state")

    def __init__(
        self,
        state: ListenerState,
        decision: RouteDecision,
        runtime: ClusterRuntime,
        path: str,
        authority: str,
    ) -> None:
        #: The listener state it was found in: valid while that state is current.
        self.state = state
        self.decision = decision
        self.runtime = runtime
        self.plan = _build(decision, runtime, path, None, authority, None, None, False, 0.0, True)


def _path_target(
    state: ListenerState, authority: str, path: str
) -> tuple[RouteDecision, ClusterRuntime] | None:
    """The decision and cluster of requests routed by their authority and path alone
    (see :func:`path_route`), or None."""
    if state.fault_filter_name is not None or state.session_filter_name is not None:
        return None  # the filters read the request's headers
    decision = state.table.path_decision(authority, strip_query_and_fragment(path))
    if decision is None:
        return None
    runtime = state.clusters.get(decision.cluster)  # type: ignore[arg-type]
    if runtime is None:
        return None  # plan_request answers why
    return decision, runtime


def path_route(state: ListenerState, authority: str, path: str) -> PathRoute | None:
    """The route of requests decided by their authority and path alone, without reading
    their headers; None when :func:`plan_request` must look further.

    The common case: no header, query or runtime condition on the way to a route that
    names one cluster, nothing on that route that reads the request (hash policies,
    header edits, rewrites, retriable_request_headers: the route table's
    ``path_decision`` says when), and no fault filter. Its plans are the ones
    plan_request gives.
    """
    target = _path_target(state, authority, path)
    if target is None:
        return None
    return PathRoute(state, target[0], target[1], path, authority)


def plan_by_path(
    state: ListenerState, authority: str, path: str, caller_timeout: float | None
) -> Plan | None:
    """The Plan of a request whose route is decided by its authority and path alone
    (:func:`path_route`), built without reading its headers; None when
    :func:`plan_request` must look further."""
    target = _path_target(state, authority, path)
    if target is None:
        return None
    decision, runtime = target
    if runtime.error is not None:
        return None  # plan_request answers why
    action = decision.action
    assert isinstance(action, RouteAction)
    deadline, route_binding = _deadline(action, caller_timeout, 0.0)
    return _build(
        decision, runtime, path, None, authority, None, deadline, route_binding, 0.0, True
    )


def plan_request(
    state: ListenerState,
    info: RequestInfo,
    headers: list[tuple[str, str]] | Callable[[], list[tuple[str, str]]],
    rng: random.Random,
    caller_timeout: float | None,
    channel_id: int | None = None,
) -> Plan | LocalReply:
    """Route ``info`` through ``state``; return a Plan to send upstream or a LocalReply.

    ``channel_id`` answers the ``io.grpc.channel_id`` hash policy (gRFC A42).
    """
    decision = state.table.select(info, rng.getrandbits(64))
    listener = state.config.listener.name
    if decision is None:
        return not_found(listener, info.authority, info.path)
    action = decision.action
    fault_delay = 0.0
    injector = _fault(state, decision)
    if injector is not None:
        fd = injector.decide(info.headers, rng.getrandbits(64), cluster=decision.cluster)
        if fd.delay:
            fault_delay = fd.delay
        if fd.abort_http is not None or fd.abort_grpc is not None:
            # A gRPC abort travels in an HTTP 200 with grpc-status, as Envoy sends it.
            status = fd.abort_http if fd.abort_http is not None else 200
            return LocalReply(
                status,
                b"fault filter abort",
                grpc_status=fd.abort_grpc,
                flags="FI",
                delay=fault_delay,
            )
    if isinstance(action, DirectResponseAction):
        return LocalReply(action.status, action.body, delay=fault_delay)
    if isinstance(action, RedirectAction):
        location = redirect_location(decision, info, "http")
        return LocalReply(action.response_code, b"", (("location", location),), delay=fault_delay)
    assert isinstance(action, RouteAction)
    cluster_name = decision.cluster
    if cluster_name is None:  # cluster_header named nothing
        return LocalReply(
            action.cluster_not_found_response_code,
            b"pymesh: cluster_header named no cluster\n",
            grpc_status=14,
            flags="NC",
        )
    runtime = state.clusters.get(cluster_name)
    if runtime is None or runtime.error is not None:
        why = runtime.error if runtime is not None else "unknown cluster"
        on_demand = runtime is None and decision.compiled.cluster_header is not None
        return LocalReply(
            action.cluster_not_found_response_code,
            f"pymesh: cluster {cluster_name!r} unavailable: {why}\n".encode(),
            grpc_status=14,
            flags="NC",
            wait_cluster=cluster_name if on_demand else None,
        )
    mutation = decision.request_mutation
    edited: list[tuple[str, str]] | None
    if not mutation.empty:
        edited = mutation.apply(headers() if callable(headers) else headers)
    else:
        edited = None if callable(headers) else headers
    authority = info.authority
    if action.host_rewrite_literal:
        authority = host_rewrite(decision) or authority
    path = info.path
    if action.prefix_rewrite is not None or action.regex_rewrite is not None:
        path = rewrite_path(decision, path)
    # retriable_request_headers: a request that matches none of them is sent once.
    decider = decision.compiled.decider
    retriable = decider is None or (
        not decider.policy.retriable_request_headers or decider.request_is_retriable(info.headers)
    )
    hash_key = (
        compute_hash(action.hash_policies, info, channel_id) if action.hash_policies else None
    )
    deadline, route_binding = _deadline(action, caller_timeout, fault_delay)
    plan = _build(
        decision,
        runtime,
        path,
        edited,
        authority,
        hash_key,
        deadline,
        route_binding,
        fault_delay,
        retriable,
    )
    if state.session_filter_name is not None:
        config = session_config(decision, state.session_filter_name, state.session)
        if config is not None:
            repeated = info.repeated.get("cookie") if info.repeated else None
            cookie = info.headers.get("cookie")
            cookies = repeated if repeated is not None else ([cookie] if cookie else [])
            # The original request path: Envoy's filter runs before the router rewrites.
            plan.session = read_session(
                config, info.path, [("cookie", c) for c in cookies], info.is_grpc
            )
    return plan
