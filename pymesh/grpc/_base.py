"""State and bookkeeping shared by the sync and aio mesh channels (no I/O, no waiting).

Attempts are the call engine's (:mod:`pymesh.call`): a channel only starts an admitted
attempt on its endpoint's sub-channel (:meth:`MeshChannelBase.begin`) and maps the
call's status into the engine's :class:`~pymesh.call.Reply` (:func:`reply_of`).
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from collections.abc import Callable, Container, Iterable
from typing import Any, Generic, TypeVar

import grpc

from pymesh._mesh import ListenerState, Mesh
from pymesh.call import (
    GRPC_MAX_ATTEMPTS,
    Attempts,
    LocalReply,
    PathRoute,
    Plan,
    Reply,
    Ticket,
    path_route,
)
from pymesh.grpc._core import (
    DEADLINE,
    LocalStatus,
    Metadata,
    deadline_cap,
    grpc_deadline,
    local_status,
    outgoing_metadata,
    parse_xds_target,
    plan_call,
    remaining,
    status_code,
)
from pymesh.grpc._tls import TlsEndpoint, cluster_tls
from pymesh.resilience import Outcome
from pymesh.security import ClientTls
from pymesh.telemetry._rpc import RpcObserver, observe_rpc
from pymesh.xds.resources.route import RouteAction

OutMetadata = Metadata | None
Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None
#: A per-try timeout: the attempt's own deadline (sooner than the call's) passed.
_PER_TRY = Outcome.failure(timeout=True)
_DEADLINE_CODE = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
#: Methods whose route a channel keeps (MeshChannelBase._route_of), at most.
_ROUTE_MEMO_LIMIT = 1024
#: Seconds between two looks at the sub-channels draining (MeshChannelBase.reap): only
#: while an endpoint that left still has calls in flight.
DRAIN_POLL = 0.1

SubT = TypeVar("SubT")
ChannelT = TypeVar("ChannelT")


class Prepared:
    """A planned call: where it goes and until when (``obs``: its telemetry, if on)."""

    __slots__ = ("deadline", "metadata", "obs", "plan", "state")

    def __init__(
        self, plan: Plan, state: ListenerState, deadline: float | None, metadata: OutMetadata
    ) -> None:
        # gRPC's deadline is the caller's capped by A31 (grpc_deadline), never Envoy's
        # route timeout: the call's Attempts bound retries and per-try timeouts by it
        # (new_attempts), and the plan may be shared by calls (PathRoute.plan).
        self.plan = plan
        self.state = state
        self.deadline = deadline
        self.metadata = metadata
        self.obs: RpcObserver | None = None


class LocalFailure(Exception):
    """Raised inside the call path for a status pymesh answers itself."""

    def __init__(self, status: LocalStatus, flag: str = "") -> None:
        super().__init__(status.details)
        self.status = status
        self.flag = flag  # Envoy's response flag (UH, UO, DO, UF) for telemetry


def observe_failure(p: Prepared, exc: LocalFailure) -> None:
    """Note on the call's telemetry that pymesh answered it itself (and why)."""
    if p.obs is not None and exc.flag:
        p.obs.local_reply = exc.flag


def reply_of(
    a: Attempts | None,
    t: Ticket,
    code: grpc.StatusCode,
    value: object = None,
    error: BaseException | None = None,
) -> Reply:
    """The engine's view of an attempt that ended with ``code``: a response carrying that
    gRPC status (A44 retries and A50 outlier detection read it), except that
    DEADLINE_EXCEEDED of an attempt whose per-try timeout fired is a timeout failure (as
    Envoy's per-try timeout). ``a`` is None for an attempt admitted alone
    (:func:`pymesh.call.start_alone`: no per-try timeout)."""
    return number_reply(a, t, code.value[0], value, error)


def number_reply(
    a: Attempts | None,
    t: Ticket,
    number: int,
    value: object = None,
    error: BaseException | None = None,
) -> Reply:
    """:func:`reply_of` for a status given as its number (what grpc's call reports)."""
    if number == _DEADLINE_CODE and a is not None and a.per_try_fired(t):
        return Reply(value, grpc_status=number, failure=_PER_TRY, error=error)
    return Reply(value, grpc_status=number, error=error)


def settle(a: Attempts | None, t: Ticket, reply: Reply) -> None:
    """Record the end of a call's single attempt: through its Attempts, or its ticket's
    own record when it was admitted alone (``a`` None, :func:`pymesh.call.start_alone`).
    The slot stays held until ``t.release()``."""
    if a is None:
        t.answered(reply, False)
    else:
        a.settle(t, reply)


def final_reply(result: Ticket | LocalReply, node_id: str) -> Reply:
    """The caller's answer from the engine: the winning (or last) attempt's reply with
    its slot given back; a LocalFailure for an answer pymesh gives itself."""
    if isinstance(result, LocalReply):
        raise LocalFailure(local_status(result, node_id), result.flags)
    result.release()
    reply = result.reply
    assert reply is not None
    return reply


def _attempt_ended(obs: RpcObserver, t: Ticket, reason: str | None) -> None:
    reply = t.reply
    code = status_code(reply.grpc_status) if reply and reply.grpc_status is not None else None
    obs.attempt_done(code, retried=reason is not None, attempt=t.trace)


Options = tuple[tuple[str, Any], ...]

#: gRPC core's initial reconnect back-off (GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS).
_GRPC_INITIAL_BACKOFF_MS = 1000


def connect_options(options: Options, connect_timeout: float | None) -> Options:
    """Channel options that make a sub-channel's connection attempt end after the
    cluster's ``connect_timeout`` (Envoy's meaning: TCP and TLS handshake), as it does
    for httpx.

    gRPC core gives each connection attempt the deadline ``max(now +
    grpc.min_reconnect_backoff_ms, the next back-off time)``: 20 s and 1 s (±20 %
    jitter) by default. So the minimum becomes the timeout, and a timeout under 1 s
    also lowers the initial back-off, else that would bound the attempt instead. Keys
    the caller set in ``options`` win.
    """
    if connect_timeout is None:
        return options
    keys = {key for key, _ in options}
    ms = max(1, round(connect_timeout * 1000))
    extra: list[tuple[str, Any]] = []
    if "grpc.min_reconnect_backoff_ms" not in keys:
        extra.append(("grpc.min_reconnect_backoff_ms", ms))
    if ms < _GRPC_INITIAL_BACKOFF_MS and "grpc.initial_reconnect_backoff_ms" not in keys:
        extra.append(("grpc.initial_reconnect_backoff_ms", ms))
    return (*options, *extra) if extra else options


class MeshChannelBase(Generic[SubT]):
    """Target, listener slot, per-endpoint sub-channels and the endpoint choice."""

    def __init__(
        self,
        target: str,
        mesh: Mesh,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Iterable[tuple[str, Any]] | None = None,
        compression: grpc.Compression | None = None,
    ) -> None:
        self.target = target
        self.mesh = mesh
        self.xds_authority, self.authority = parse_xds_target(target)
        self._credentials = credentials
        # gRPC sends the target's authority upstream; TLS verifies against it too
        # (unless the caller set an authority of their own).
        opts = tuple(options or ())
        if not any(key == "grpc.default_authority" for key, _ in opts):
            opts = (*opts, ("grpc.default_authority", self.authority))
        self._options = opts
        self._compression = compression
        # A42: the io.grpc.channel_id hash policy hashes a random per-channel number.
        self.channel_id = mesh.rng.getrandbits(64)
        # Subscribe now, not on the first call; xds://authority/ names a federation
        # authority (gRFC A47) whose servers and listener template apply.
        self._slot = mesh.slot(self.authority, self.xds_authority)
        self._lock = threading.Lock()  # sub-channel creation and cleanup only
        self._subs: dict[str, SubT] = {}
        #: Per address, one item per attempt in flight there: appended as an attempt
        #: starts, popped as it gives its slot back. A deque's append and pop are atomic
        #: C calls (calls end on grpc's threads too), so counting takes no lock, and
        #: the release hook is the bound ``pop`` itself: no Python frame per call.
        self._inflight: dict[str, collections.deque[None]] = {}
        #: Addresses that left every cluster with attempts in flight: their sub-channel
        #: is closed once those end (:meth:`reap`), watched while any is left.
        self._draining: set[str] = set()
        self._reaping = False
        self._seen: ListenerState | None = None
        #: Per method: the listener state it was routed in, its PathRoute (None when a
        #: route reads more than the path) and A31's timeout cap there (_route_of).
        self._routes: dict[str, tuple[ListenerState, PathRoute | None, float | None]] = {}
        self._closed = False
        self._failing: set[str] = set()  # sub-channels in TRANSIENT_FAILURE
        #: What the engine calls per attempt for the addresses to avoid.
        self.avoid_now = self._avoid_source()
        #: ``attempts(plan, state, deadline=...)``: :meth:`new_attempts` of a call without
        #: telemetry (replayable, may hedge; the common call), the channel's fixed
        #: arguments bound once, so that it costs no frame of its own.
        self.attempts: Callable[..., Attempts] = functools.partial(
            Attempts,
            rng=mesh.rng,
            max_attempts=GRPC_MAX_ATTEMPTS,
            avoid=self.avoid_now,
            grpc=True,
        )

    def __repr__(self) -> str:
        return (
            f"<pymesh.grpc.{type(self).__name__} {self.target} subchannels={len(self._subs)}"
            f"{' closed' if self._closed else ''}>"
        )

    #: The channel's multi-callable classes (set by the sync and aio modules).
    _kinds: dict[str, type] = {}

    # -- grpc.Channel / grpc.aio.Channel: a multi-callable of each kind --------------------
    # ``_registered_method`` (what generated stubs pass) is passed on to the sub-channels'
    # own multi-callables: grpcio's registered-call path does more per call (about six
    # Python frames in grpcio 1.85), so a call costs what it costs on the caller's grpc.

    def unary_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._kinds["unary_unary"](
            self, method, request_serializer, response_deserializer, bool(_registered_method)
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._kinds["unary_stream"](
            self, method, request_serializer, response_deserializer, bool(_registered_method)
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._kinds["stream_unary"](
            self, method, request_serializer, response_deserializer, bool(_registered_method)
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._kinds["stream_stream"](
            self, method, request_serializer, response_deserializer, bool(_registered_method)
        )

    # Implemented by the sync / aio channel.
    def _new_channel(self, address: str, options: Options) -> SubT:
        raise NotImplementedError

    def _close_sub(self, address: str, sub: SubT) -> None:
        raise NotImplementedError

    def _on_new_sub(self, address: str, sub: SubT) -> None:
        return None

    def _new_tls_endpoint(self, address: str, plain: SubT | None, options: Options) -> SubT:
        """The sub-channel of an endpoint that TLS clusters use (pymesh/grpc/_tls.py),
        adopting the address's plaintext channel ``plain`` if there is one."""
        raise NotImplementedError

    def subchannel(
        self, address: str, tls: ClientTls | None = None, connect_timeout: float | None = None
    ) -> SubT:
        """The cached real channel to one endpoint address (created on first use).

        For an attempt to a TLS cluster (``tls``: its ClientTls, from :func:`cluster_tls`),
        the view of the endpoint's TlsEndpoint for that cluster's TLS config. A new
        sub-channel connects within ``connect_timeout`` (the cluster's, see
        :func:`connect_options`); an address shared by clusters keeps the first one's.
        """
        sub = self._subs.get(address)
        if sub is not None:
            if isinstance(sub, TlsEndpoint):
                return sub.view(tls)  # type: ignore[no-any-return]
            if tls is None:
                return sub
        with self._lock:
            if self._closed:
                raise LocalFailure(LocalStatus(grpc.StatusCode.CANCELLED, "channel closed"))
            sub = self._subs.get(address)
            options = connect_options(self._options, connect_timeout)
            if sub is None and tls is None:
                sub = self._new_channel(address, options)
                self._on_new_sub(address, sub)
                self._subs[address] = sub
            elif not isinstance(sub, TlsEndpoint) and tls is not None:
                # Never reuse a plaintext channel for a TLS cluster: the endpoint gets a
                # TlsEndpoint, which keeps serving plaintext calls on the old channel.
                sub = self._new_tls_endpoint(address, sub, options)
                self._on_new_sub(address, sub)
                self._subs[address] = sub
        assert sub is not None
        return sub.view(tls) if isinstance(sub, TlsEndpoint) else sub

    def collect(self, state: ListenerState) -> None:
        """Close sub-channels of endpoints that left every cluster (after their calls)."""
        self._seen = state
        live: set[str] = set()
        for rt in self.mesh.clusters().values():
            live |= rt.addresses
        closing: list[tuple[str, SubT]] = []
        with self._lock:
            self._draining -= live  # back in a cluster before its calls ended: kept
            for address in [a for a in self._subs if a not in live]:
                if self._inflight.get(address):
                    self._draining.add(address)
                else:
                    closing.append((address, self._subs.pop(address)))
            watch = bool(self._draining) and not self._reaping and not self._closed
            if watch:
                self._reaping = True
        for address, sub in closing:
            self._close_sub(address, sub)
        if watch:
            self._watch_draining()

    def reap(self) -> bool:
        """Close the sub-channels of draining addresses whose attempts all ended; True
        while some are still draining (then call again later)."""
        closing: list[tuple[str, SubT]] = []
        with self._lock:
            for address in list(self._draining):
                if not self._inflight.get(address):
                    self._draining.discard(address)
                    sub = self._subs.pop(address, None)
                    if sub is not None:
                        closing.append((address, sub))
            more = bool(self._draining) and not self._closed
            if not more:
                self._reaping = False
        for address, sub in closing:
            self._close_sub(address, sub)
        return more

    def _watch_draining(self) -> None:
        """Call :meth:`reap` every :data:`DRAIN_POLL` seconds until it returns False
        (off the call path: a thread, or a task of the event loop)."""
        raise NotImplementedError

    def observe(self, method: str) -> RpcObserver | None:
        """Telemetry for one call, or None when it is off (then every hook is skipped)."""
        return observe_rpc(self.target, method, self._slot.name, self.authority)

    def avoid(self) -> frozenset[str] | set[str]:
        """Addresses whose sub-channel is in TRANSIENT_FAILURE."""
        return frozenset()

    def _avoid_source(self) -> Callable[[], Container[str]]:
        """What the engine calls per attempt for the addresses to avoid: :meth:`avoid`,
        unless a channel has a cheaper equivalent."""
        return self.avoid

    def plan_on(
        self,
        state: ListenerState,
        method: str,
        timeout: float | None,
        metadata: Metadata | None,
        start: float,
    ) -> tuple[float, Prepared | LocalStatus]:
        """Plan a call on the listener's ``state`` (the sync and aio channels' shared
        step): the seconds to wait first (a fault delay; A33: it counts against the
        call's deadline, so it is cut there and the call then fails DEADLINE_EXCEEDED),
        then the Prepared call, or the LocalStatus to fail it with."""
        if state is not self._seen:
            self.collect(state)
        memo = self._routes.get(method)
        if memo is None or memo[0] is not state:
            memo = self._route_of(state, method)
        route = memo[1]
        if route is not None and route.runtime.error is None:
            # Routed by the method alone: the route's one plan, no routing per call.
            cap = memo[2]
            limit = cap if cap is not None and (timeout is None or cap < timeout) else timeout
            # Prepared without its __init__ frame (the path every such call takes).
            p = object.__new__(Prepared)
            p.plan, p.state, p.obs = route.plan, state, None
            p.deadline = None if limit is None else start + limit
            p.metadata = metadata or None
            return 0.0, p
        plan = plan_call(self.mesh, state, self.authority, method, metadata, self.channel_id)
        if isinstance(plan, LocalStatus):
            delay = plan.delay
            if delay and timeout is not None and delay >= timeout:
                return max(timeout, 0.0), DEADLINE
            return delay, plan
        deadline = grpc_deadline(plan, state, timeout, start)
        # This call's own plan: gRPC's deadline, never Envoy's route timeout (A31).
        plan.deadline = deadline
        plan.route_timeout_binding = False
        delay = plan.fault_delay
        if delay:
            left = remaining(deadline)
            if left is not None and delay >= left:
                return max(left, 0.0), DEADLINE
        return delay, Prepared(plan, state, deadline, outgoing_metadata(plan, metadata))

    def _route_of(
        self, state: ListenerState, method: str
    ) -> tuple[ListenerState, PathRoute | None, float | None]:
        # gRPC routes by the method path alone unless a route reads metadata: find that
        # route (and A31's cap on its timeout) once per listener state and method.
        route = path_route(state, self.authority, method)
        cap = None
        if route is not None:
            action = route.decision.action
            assert isinstance(action, RouteAction)
            cap = deadline_cap(action, state)
        memo = (state, route, cap)
        routes = self._routes
        if len(routes) >= _ROUTE_MEMO_LIMIT:
            routes.clear()  # a bound for clients that make up method names
        routes[method] = memo
        return memo

    def new_attempts(self, p: Prepared, *, replayable: bool = True, hedge: bool = True) -> Attempts:
        """The engine's attempts of one call: A44's 5-attempt cap, sub-channels in
        TRANSIENT_FAILURE avoided while others can be picked, telemetry per attempt."""
        obs = p.obs
        return Attempts(
            p.plan,
            p.state,
            self.mesh.rng,
            replayable=replayable,
            max_attempts=GRPC_MAX_ATTEMPTS,
            avoid=self.avoid_now,
            hedge=hedge,
            on_end=None if obs is None else functools.partial(_attempt_ended, obs),
            grpc=True,
            deadline=p.deadline,
        )

    def local_error(self, status: LocalStatus) -> BaseException:
        """The error a call of this channel fails with for a status pymesh chose."""
        raise NotImplementedError

    def failed(self, p: Prepared, exc: BaseException) -> BaseException:
        """A call failed with ``exc``: the error to raise (a LocalFailure becomes this
        channel's local error), with the call's telemetry ended."""
        err = exc
        if isinstance(exc, LocalFailure):
            observe_failure(p, exc)
            err = self.local_error(exc.status)
        if p.obs is not None:
            p.obs.error(err)
        return err

    def unary_answer(self, p: Prepared, result: Ticket | LocalReply) -> Any:
        """The caller's answer of a unary-response call from the engine's result: the
        winning attempt's response, else its status (the upstream's own, or pymesh's)
        raised."""
        try:
            reply = final_reply(result, self.mesh.node_id)
            if reply.error is not None:
                raise reply.error
        except BaseException as exc:
            err = self.failed(p, exc)
            if err is exc:
                raise
            raise err from None
        if p.obs is not None:
            p.obs.finish(grpc.StatusCode.OK)
        return reply.value

    def start_stream(
        self,
        p: Prepared,
        start: Callable[[SubT, float | None, OutMetadata], Any],
        a: Attempts | None = None,
        alone: Ticket | LocalReply | None = None,
    ) -> tuple[Attempts | None, Ticket, Any]:
        """Start a call with a streaming side (or a single-attempt unary call): one
        attempt, admitted now and never retried; ``start`` sends it. ``a``: the call's
        attempts if already made (allowed one attempt); ``alone``: instead, what
        :func:`pymesh.call.start_alone` admitted (then no Attempts: None is returned for
        them). The driver calls :meth:`stream_ended` when the call terminates."""
        try:
            if alone is not None:
                t = alone
            else:
                if a is None:
                    a = self.new_attempts(p, replayable=False)
                t = a.start()
            if isinstance(t, LocalReply):
                raise LocalFailure(local_status(t, self.mesh.node_id), t.flags)
            try:
                begun = self.begin(p, a, t)
                if begun is None:
                    settle(a, t, reply_of(a, t, grpc.StatusCode.DEADLINE_EXCEEDED))
                    raise LocalFailure(DEADLINE)
                call = start(*begun)
            except BaseException:
                t.abandon()
                raise
        except BaseException as exc:
            err = self.failed(p, exc)
            if err is exc:
                raise
            raise err from None
        return a, t, call

    @staticmethod
    def stream_ended(
        p: Prepared, a: Attempts | None, t: Ticket, code: grpc.StatusCode, details: str | None
    ) -> None:
        """The streaming call of :meth:`start_stream` terminated with ``code``."""
        settle(a, t, reply_of(a, t, code))
        t.release()
        if p.obs is not None:
            p.obs.finish(code, details)

    def begin(
        self, p: Prepared, a: Attempts | None, t: Ticket
    ) -> tuple[SubT, float | None, OutMetadata] | None:
        """Start admitted attempt ``t``: its sub-channel (with the cluster's TLS, passed
        explicitly), timeout and metadata; None when its deadline has already passed
        (the driver answers DEADLINE_EXCEEDED without sending). Raises LocalFailure when
        the cluster's TLS cannot be set up (never plaintext) or the channel closed."""
        rt = t.runtime
        assert rt is not None
        address = t.address
        cluster = rt.cluster
        sub: SubT | None = None
        if cluster is None or cluster.tls is None:  # plaintext (cluster_tls: None)
            sub = self._subs.get(address)
            if isinstance(sub, TlsEndpoint):
                sub = None  # subchannel() gives its plaintext view
        if sub is None:
            tls = cluster_tls(self.mesh, rt, p.plan, enabled=self._credentials is None)
            if isinstance(tls, LocalStatus):
                raise LocalFailure(tls, "UF")
            sub = self.subchannel(address, tls, cluster.connect_timeout if cluster else None)
        deadline = t.deadline
        timeout = None
        if deadline is not None:
            timeout = deadline - time.monotonic()  # remaining(deadline), inline
            if timeout <= 0:
                return None
        inflight = self._inflight.get(address)
        if inflight is None:
            inflight = self._inflight.setdefault(address, collections.deque())
        inflight.append(None)
        t.on_release = inflight.pop
        obs = p.obs
        if obs is None:
            return sub, timeout, p.metadata
        md = obs.attempt(rt, address, p.metadata)
        if a is not None and a.hedging:  # side by side: each ends with its own handle
            t.trace = obs.detach_attempt()
        return sub, timeout, md


class MultiCallableBase(Generic[ChannelT, SubT]):
    """A mesh channel's multi-callable for one method (sync and aio alike): what it was
    made with, and the sub-channels' own multi-callables for that method."""

    def __init__(
        self,
        channel: ChannelT,
        method: str,
        ser: Serializer,
        deser: Deserializer,
        registered: bool = False,
    ) -> None:
        self._channel = channel
        self._registered = registered
        self._method = method
        self._ser = ser
        self._deser = deser
        self._cache: dict[int, tuple[SubT, Any]] = {}

    def _real(self, sub: SubT, kind: str) -> Any:
        """``sub``'s own multi-callable of ``kind`` for this method: one per sub-channel
        (creating them per call costs throughput), keyed by the sub-channel's id, a
        stable key while it lives (checked by identity)."""
        hit = self._cache.get(id(sub))
        if hit is not None and hit[0] is sub:
            return hit[1]
        mc = getattr(sub, kind)(
            self._method, self._ser, self._deser, _registered_method=self._registered
        )
        self._cache[id(sub)] = (sub, mc)
        return mc
