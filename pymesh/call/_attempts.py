"""One call's attempts: admission, retry decisions, back-off, per-try timeouts, hedging.

Sans-I/O and shared by every driver (httpx sync/async, gRPC sync/aio and the
interceptor). Envoy's router semantics: the first attempt takes a request slot of the
cluster's circuit breaker (:func:`pymesh.call.admit`) and each retry a retry slot (or
budget) taken when the retry is decided; with no slot left the caller gets the last
attempt's own answer (Envoy's upstream_rq_retry_overflow); ``previous_hosts`` steers
retries to other endpoints; the route's deadline bounds the whole call, retries and
back-off included. gRPC calls are additionally held to gRFC A44's limit of 5 attempts.

One retry policy classifies HTTP statuses and gRPC codes alike (linkerd's model): the
route's :class:`~pymesh.resilience.RetryDecider` reads an :class:`Outcome` that carries
either.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Container
from types import EllipsisType

from pymesh._mesh import ListenerState
from pymesh.call._admit import NO_ANSWER, Reply, Ticket, admit
from pymesh.call._plan import LocalReply, Plan, aggregate_target
from pymesh.call._session import OverridePicker, session_picker
from pymesh.lb import Picker
from pymesh.lb._aggregate import LevelPicker
from pymesh.resilience import CircuitBreaker, Outcome

#: gRFC A44: at most 5 attempts, whatever the policy says.
GRPC_MAX_ATTEMPTS = 5

_TIMEOUT = Outcome.failure(timeout=True)
#: No endpoint to steer away from (the common pick).
_NOTHING: frozenset[str] = frozenset()


class Attempts:
    """The attempt state of one call (a new one per call; never shared)."""

    # No __slots__: what most calls never change is a class-level default, so a call
    # without retries sets five attributes (the request path allocates little).

    #: Retries decided so far (the attempt number of the next attempt).
    attempt = 0
    #: How many attempts the call may make (1: no retries).
    limit = 1
    #: Addresses of the attempts so far; kept only for the previous_hosts predicate.
    tried: set[str] = frozenset()  # type: ignore[assignment]
    #: The retry_on condition of the last retry decided (telemetry reads it).
    retry_reason: str | None = None
    #: Called after each attempt is settled, with the retry reason when it is retried.
    on_end: Callable[[Ticket, str | None], None] | None = None
    #: The last outcome matched retry_on (whether or not a retry could be taken).
    retriable = False
    #: Whether a Reply must carry the response headers (retry on headers).
    needs_headers = False
    #: Envoy's hedge_on_per_try_timeout: a per-try timeout starts another attempt
    #: without cancelling the one in flight (pymesh.call._steps).
    hedging = False
    #: False: attempts pick no endpoint (the interceptor cannot choose one).
    pick = True
    #: A gRPC call: picks follow the gRFCs where they differ from Envoy (A27: DEGRADED
    #: endpoints are not used; A55: a session's endpoint statuses and cookie format).
    grpc = False
    #: The driver's HTTP/1.1 pools take request slots on attach (httpx transports).
    pooled = False
    _exclude = False  # previous_hosts
    #: Endpoints to steer away from while others can be picked (gRPC: sub-channels in
    #: TRANSIENT_FAILURE).
    _avoid: Callable[[], Container[str]] | None = None
    _retry_slot: CircuitBreaker | None = None  # taken for the retry decided
    _pending = False  # a retry was decided and has not started yet
    _last: Outcome | None = None  # the outcome that decided the last retry

    def __init__(
        self,
        plan: Plan,
        state: ListenerState,
        rng: random.Random,
        *,
        replayable: bool = True,
        max_attempts: int | None = None,
        avoid: Callable[[], Container[str]] | None = None,
        pick: bool = True,
        hedge: bool = True,
        on_end: Callable[[Ticket, str | None], None] | None = None,
        grpc: bool = False,
        pooled: bool = False,
        deadline: float | EllipsisType | None = ...,
    ) -> None:
        self.plan = plan
        #: The call's deadline (monotonic, None for none): the plan's, unless the driver
        #: keeps it apart from a plan its calls share (``deadline``).
        self.deadline = plan.deadline if deadline is ... else deadline
        #: The listener's routing state (aggregate clusters resolve their leaf in it).
        self.listener = state
        self.rng = rng
        self.decider = decider = plan.decider
        if avoid is not None:
            self._avoid = avoid
        if on_end is not None:
            self.on_end = on_end
        if not pick:
            self.pick = False
        if grpc:
            self.grpc = True
        if pooled:
            self.pooled = True
        retry = plan.retry
        if decider is None or retry is None or not replayable:
            return  # no retries (a body that cannot be rewound is sent once): common
        limit = 1 + retry.num_retries
        self.limit = limit if max_attempts is None else min(limit, max_attempts)
        if "previous_hosts" in retry.retry_host_predicates:
            self._exclude = True
            self.tried = set()
        self.needs_headers = self.limit > 1 and decider.needs_headers
        policy = plan.hedge
        # ``hedge=False``: a driver that cannot run attempts side by side (interceptor).
        self.hedging = bool(
            hedge
            and policy is not None
            and policy.hedge_on_per_try_timeout
            and retry.per_try_timeout
            and self.limit > 1
        )
        if self.hedging:
            # Attempts side by side: one given up must free its slot at once, which a
            # pool's request slot (held until its answer arrives) would not.
            self.pooled = False

    def start(self) -> Ticket | LocalReply:
        """Admit the next attempt (:func:`pymesh.call.admit`), with its deadlines."""
        plan = self.plan
        is_retry = self.attempt > 0
        retry_slot = self._retry_slot
        if retry_slot is not None:
            self._retry_slot = None
        if self._pending:
            self._pending = False
        retry = plan.retry
        if not self.pick:
            t = Ticket(None, None, None, retry_slot, is_retry)
        else:
            rt = plan.runtime
            picker: Picker | LevelPicker | OverridePicker | None
            picker = rt.grpc_picker if self.grpc else None
            if rt.leaf_clusters:  # an aggregate cluster: a level of its merged priority set
                target = aggregate_target(plan, self.listener, self.grpc)
                if target is None:
                    return self._give_back(retry_slot, "UH", "no healthy upstream")
                rt, picker = target
            avoid = self._avoid() if self._avoid is not None else None
            session = plan.session
            # Envoy 1.40 (HTTP) ignores the override host of a request routed to an
            # aggregate cluster; gRPC (A55) keeps it per leaf, where the pick landed,
            # and not while its sub-channel is in TRANSIENT_FAILURE (``avoid``).
            if (
                session is not None
                and session.address is not None
                and (self.grpc or not plan.runtime.leaf_clusters)
                and not (avoid and session.address in avoid)
            ):
                override = session_picker(rt, session.address, picker, self.grpc)
                if override is not None:
                    picker = override
                elif session.config.strict:
                    why = f"stateful session endpoint {session.address} is not available"
                    return self._give_back(retry_slot, "UH", why)
            exclude: Container[str] = _NOTHING
            tries = 1
            if self._exclude or avoid:  # previous_hosts, or sub-channels to steer from
                if self._exclude:
                    exclude = self.tried
                    if is_retry and retry is not None:
                        tries = retry.host_selection_retry_max_attempts
                if avoid:
                    exclude = set(exclude) | set(avoid)  # type: ignore[call-overload]
                    tries = max(tries, 2 * len(avoid) + 2)  # type: ignore[arg-type]
            admitted = admit(
                rt,
                plan.hash_key,
                self.rng,
                is_retry,
                retry_slot,
                exclude,
                tries,
                picker,
                pooled=self.pooled,
            )
            if type(admitted) is tuple:
                return self._give_back(retry_slot, *admitted)
            t = admitted  # type: ignore[assignment]
            if self._exclude:
                self.tried.add(t.address)
        deadline = self.deadline
        if retry is not None and retry.per_try_timeout:
            per_try = time.monotonic() + retry.per_try_timeout
            if self.hedging:
                t.hedge_at = per_try  # soft: the attempt itself runs to the call deadline
            else:
                deadline = per_try if deadline is None else min(deadline, per_try)
        t.deadline = deadline
        return t

    def _give_back(self, slot: CircuitBreaker | None, flag: str, why: str) -> LocalReply:
        if slot is not None:
            slot.release_retry()
        return local(self.plan, why, flag)

    def hedge(self, t: Ticket) -> bool:
        """Hedging: ``t``'s per-try timeout fired while it is still in flight.

        As Envoy: the timeout counts for outlier detection now, and a retry is decided
        (slot, budget and limits as for any retry) without cancelling ``t``; True when
        another attempt should start (after :meth:`backoff`).
        """
        rt = t.runtime
        outlier = rt.outlier if rt is not None else None
        if outlier is not None:
            outlier.record(t.address, _TIMEOUT)
        t.hedged = True
        return self._retry(t, _TIMEOUT, hedging=True)

    def settle(self, t: Ticket, reply: Reply) -> bool:
        """``t`` ended with ``reply``; True when it is dropped and another attempt runs.

        A failure gives its slot back at once; an answer keeps it until the driver calls
        ``t.release()`` (when the response body is done) unless it is retried.
        """
        t.reply = reply
        failure = reply.failure
        if failure is not None:
            t.done(failure, True)
            retry = self._retry(t, failure)
        elif self.decider is None:  # nothing decides a retry: the common case
            t.answered(reply, False)
            retry = False
        else:
            outcome = Outcome.response(
                reply.status,
                reply.headers,  # type: ignore[arg-type]
                grpc_status=reply.grpc_status,
            )
            t.done(outcome, reply.grpc_status in NO_ANSWER, False)
            retry = self._retry(t, outcome)
            if retry:
                t.release()
        if self.on_end is not None:
            self.on_end(t, self.retry_reason if retry else None)
        return retry

    def refuse(self, t: Ticket, reply: Reply) -> LocalReply:
        """``t`` was refused by the driver's pool before it was sent (``reply.refused``):
        Envoy's pool overflow ends the call with a local 503 UO; it is never retried and
        says nothing about the endpoint (no outlier result: the cluster is overloaded)."""
        assert reply.refused is not None
        t.reply = reply
        t.done(None)
        if self.on_end is not None:
            self.on_end(t, None)
        flag, why = reply.refused
        return local(self.plan, why, flag)

    def _retry(self, t: Ticket, outcome: Outcome, *, hedging: bool = False) -> bool:
        """Decide a retry: the policy allows it and a retry slot is free.

        With no slot (max_retries or the retry budget exhausted) the call is not retried
        and the caller gets this attempt's answer, as Envoy does. ``retriable`` tells
        whether the outcome matched retry_on at all (hedging drops such answers while
        other attempts are still in flight). A hedged attempt already triggered its
        retry: its own answer never triggers another.
        """
        decider = self.decider
        self.retriable = False
        if decider is None:
            return False
        reason = decider.should_retry(outcome)
        if reason is None:
            return False
        self.retriable = True
        if (t.hedged and not hedging) or self._pending or self.attempt + 1 >= self.limit:
            return False
        rt = t.runtime if t.runtime is not None else self.plan.runtime
        breaker = rt.breaker
        if breaker is not None and not breaker.try_acquire_retry():
            return False
        self._retry_slot = breaker
        self._pending = True
        self.retry_reason = reason
        self._last = outcome
        self.attempt += 1
        return True

    def backoff(self) -> float | None:
        """Seconds to wait before the retry, or None when the deadline leaves no room
        (the retry is then called off and its slot given back)."""
        assert self.decider is not None
        delay = self.decider.next_delay(self.attempt, self._last, self.rng)
        deadline = self.deadline
        if deadline is not None and time.monotonic() + delay >= deadline:
            slot, self._retry_slot = self._retry_slot, None
            self._pending = False
            if slot is not None:
                slot.release_retry()
            return None
        return delay

    def per_try_fired(self, t: Ticket) -> bool:
        """Whether ``t``'s deadline was its per-try timeout rather than the call's."""
        return t.deadline is not None and t.deadline != self.deadline

    def timed_out(self, t: Ticket, idle: bool = False) -> LocalReply | None:
        """After a final timeout: Envoy's local 504 when the route's timeout, a per-try
        timeout or (``idle``) the per-try idle timeout fired; None when the caller's own
        timeout did (the caller's error)."""
        plan = self.plan
        if idle:
            return local(plan, "upstream per-try idle timeout", "UT", 504, grpc_status=4)
        if t.deadline is not None and (plan.route_timeout_binding or self.per_try_fired(t)):
            return local(plan, "upstream request timeout", "UT", 504, grpc_status=4)
        return None

    def deadline_exceeded(self) -> LocalReply:
        return local(self.plan, "request timeout during retries", "UT", 504, grpc_status=4)


def start_alone(
    plan: Plan,
    rng: random.Random,
    avoid: Container[str],
    deadline: float | None,
    *,
    grpc: bool = False,
) -> Ticket | LocalReply | None:
    """The one attempt of a call whose plan steers nothing past the pick (no retry
    policy, no session, not an aggregate cluster) and that has no endpoint to ``avoid``:
    admitted as :meth:`Attempts.start` admits a first attempt, without an
    :class:`Attempts` (the common call pays for no retry state). The driver records its
    end with ``t.answered(reply)``. A LocalReply when the pick refuses it (drop,
    overflow, no endpoint); None when the call needs :class:`Attempts` (nothing was
    admitted, so it may start over there)."""
    if plan.retry is not None or plan.session is not None or avoid:
        return None
    rt = plan.runtime
    if rt.leaf_clusters:
        return None
    admitted = admit(rt, plan.hash_key, rng, False, None, picker=rt.grpc_picker if grpc else None)
    if type(admitted) is tuple:
        return local(plan, admitted[1], admitted[0])
    t: Ticket = admitted  # type: ignore[assignment]
    t.deadline = deadline
    return t


def local(plan: Plan, why: str, flags: str, status: int = 503, grpc_status: int = 14) -> LocalReply:
    """A local answer about the plan's cluster (Envoy's response flag in ``flags``)."""
    return LocalReply(
        status,
        f"pymesh: {why} (cluster {plan.cluster_name!r})\n".encode(),
        grpc_status=grpc_status,
        flags=flags,
    )
