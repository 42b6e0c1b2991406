"""One request's attempts: endpoint choice, breakers, outlier reports, retry decisions.

Sans-I/O and shared by every transport (httpx sync/async, grpc): the transport calls
:meth:`Attempts.start` before each try, then exactly one of :meth:`failed` or
:meth:`answered`, and sleeps :meth:`backoff` between tries. Envoy's router semantics:
the first try takes a request slot of the cluster's circuit breaker and each retry a
retry slot (or budget); ``previous_hosts`` steers retries to other endpoints; the
route's deadline bounds the whole request, retries and back-off included.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping

from pymesh._mesh import ListenerState
from pymesh._upstream import ClusterRuntime
from pymesh.lb import EndpointState
from pymesh.resilience import CircuitBreaker, Outcome
from pymesh.transports._plan import LocalReply, Plan, target_runtime
from pymesh.xds.resources.endpoint import Endpoint


class Try:
    """One attempt in flight: where it goes and what to release when it ends."""

    __slots__ = (
        "_breaker",
        "_done",
        "_is_retry",
        "_timed",
        "deadline",
        "endpoint",
        "hedge_at",
        "hedged",
        "runtime",
        "started",
        "state",
    )

    def __init__(
        self,
        runtime: ClusterRuntime,
        endpoint: Endpoint,
        state: EndpointState,
        breaker: CircuitBreaker | None,
        is_retry: bool,
        deadline: float | None,
        hedge_at: float | None = None,
    ) -> None:
        self.runtime = runtime
        self.endpoint = endpoint
        self.state = state
        self._breaker = breaker
        self._is_retry = is_retry
        self._done = False
        cluster = runtime.cluster
        # Only peak EWMA reads attempt timings: the other policies skip the clock.
        self._timed = timed = cluster is not None and cluster.lb_policy.name == "peak_ewma"
        self.started = time.monotonic() if timed else 0.0
        #: This attempt's deadline: the route's, or sooner with a per-try timeout.
        self.deadline = deadline
        #: Hedging: when the (soft) per-try timeout fires; None when not hedging.
        self.hedge_at = hedge_at
        #: Hedging: the per-try timeout fired and was handled (a hedge may be in flight).
        self.hedged = False
        if timed:
            state.on_start(self.started)
        else:
            state.on_start_untimed()

    def finished(self, failed: bool = False) -> None:
        """Report the attempt's end to its endpoint's load state, with its latency only
        where peak EWMA reads it. A failure is a (penalised) latency sample there: a host
        refusing connections at once must not look fast (EndpointState.on_failure)."""
        if not self._timed:
            self.state.on_finish()
            return
        now = time.monotonic()
        if failed:
            self.state.on_failure(now - self.started, now)
        else:
            self.state.on_finish(now - self.started, now)

    def release(self) -> None:
        """Give back the breaker slot (idempotent): when the response body is done."""
        if self._done:
            return
        self._done = True
        breaker = self._breaker
        if breaker is not None:
            if self._is_retry:
                breaker.release_retry()
            else:
                breaker.release_request()


class Attempts:
    """The retry state of one request (a new one per request; not shared)."""

    __slots__ = (
        "_exclude",
        "_last",
        "_pending",
        "_retry_slot",
        "attempt",
        "decider",
        "hedging",
        "limit",
        "plan",
        "retriable",
        "retry_reason",
        "rng",
        "state",
        "tried",
    )

    def __init__(
        self, plan: Plan, state: ListenerState, rng: random.Random, *, replayable: bool = True
    ) -> None:
        self.plan = plan
        self.state = state
        self.rng = rng
        self.decider = decider = plan.decider
        retry = plan.retry
        self.attempt = 0
        #: Addresses of the attempts so far; kept only for the previous_hosts predicate.
        self.tried: set[str] = set()
        #: The retry_on condition of the last retry decided (telemetry reads it).
        self.retry_reason: str | None = None
        self._retry_slot: CircuitBreaker | None = None
        self._pending = False  # a retry was decided and has not started yet
        self._last: Outcome | None = None
        #: The last outcome matched retry_on (whether or not a retry could be taken).
        self.retriable = False
        if decider is None or retry is None or not replayable:
            # No retries (a body that cannot be rewound is sent once): the common case.
            self.limit = 1
            self._exclude = False
            self.hedging = False
            return
        self.limit = 1 + retry.num_retries
        self._exclude = "previous_hosts" in retry.retry_host_predicates
        hedge = plan.hedge
        #: Envoy's hedge_on_per_try_timeout: a per-try timeout starts another attempt
        #: without cancelling the one in flight (see pymesh.transports._hedging).
        self.hedging = bool(
            hedge is not None
            and hedge.hedge_on_per_try_timeout
            and retry.per_try_timeout
            and self.limit > 1
        )

    @property
    def needs_headers(self) -> bool:
        """Whether :meth:`answered` wants the response headers (retry on headers)."""
        return self.decider is not None and self.limit > 1 and self.decider.needs_headers

    def start(self) -> Try | LocalReply:
        """Choose the endpoint and take a breaker slot for the next attempt.

        The first attempt takes a request slot here; a retry's slot (max_retries or the
        retry budget) was already taken when the retry was decided.
        """
        plan = self.plan
        is_retry = self.attempt > 0
        retry_slot, self._retry_slot = self._retry_slot, None
        self._pending = False
        rt = plan.runtime
        if rt.leaf_clusters:  # an aggregate cluster: pick from its leaf
            leaf = target_runtime(plan, self.state)
            if leaf is None:
                return self._give_back(retry_slot, _local(plan, "no healthy upstream", "UH"))
            rt = leaf
        picker = rt.picker
        if picker is None:
            return self._give_back(retry_slot, _local(plan, "no healthy upstream", "UH"))
        if not is_retry and picker.has_drops:
            category = picker.drop_category(self.rng.random())
            if category is not None:
                return _local(plan, f"dropped by drop_overloads ({category})", "DO")
        retry = plan.retry
        if self._exclude:
            ep = picker.pick(
                plan.hash_key,
                self.tried,
                host_selection_retry_max_attempts=retry.host_selection_retry_max_attempts
                if retry is not None and is_retry
                else 1,
            )
        else:
            ep = picker.pick(plan.hash_key)
        if ep is None:
            return self._give_back(retry_slot, _local(plan, "no healthy upstream", "UH"))
        breaker = retry_slot if is_retry else rt.breaker
        if breaker is not None and not is_retry:
            cluster = rt.cluster
            if not breaker.try_acquire_request(cluster is not None and not cluster.http2):
                limit = (
                    "max_requests"
                    if breaker.active_requests >= breaker.thresholds.max_requests
                    else "max_pending_requests"
                )
                return _local(plan, f"upstream overflow (circuit breaker {limit})", "UO")
        if self._exclude:
            self.tried.add(ep.address)
        deadline = plan.deadline
        hedge_at = None
        if retry is not None and retry.per_try_timeout:
            per_try = time.monotonic() + retry.per_try_timeout
            if self.hedging:
                hedge_at = per_try  # soft: the attempt itself runs to the route deadline
            else:
                deadline = per_try if deadline is None else min(deadline, per_try)
        state = rt.states.get_or_create(ep.address)
        return Try(rt, ep, state, breaker, is_retry, deadline, hedge_at)

    @staticmethod
    def _give_back(slot: CircuitBreaker | None, reply: LocalReply) -> LocalReply:
        if slot is not None:
            slot.release_retry()
        return reply

    def hedge(self, t: Try) -> bool:
        """Hedging: ``t``'s per-try timeout fired while it is still in flight.

        As Envoy: the timeout counts for outlier detection now, and a retry is decided
        (slot, budget and limits as for any retry) without cancelling ``t``; True when
        another attempt should start (after :meth:`backoff`).
        """
        t.hedged = True
        outlier = t.runtime.outlier
        timeout = Outcome.failure(timeout=True)
        if outlier is not None:
            outlier.record(t.endpoint.address, timeout)
        return self._retry(t, timeout, hedging=True)

    def abandon(self, t: Try) -> None:
        """A hedged attempt that lost the race (cancelled, or its answer discarded)."""
        t.state.on_finish()
        t.release()

    def failed(self, t: Try, outcome: Outcome) -> bool:
        """The attempt failed before a response; True when another attempt should run."""
        t.finished(failed=True)
        t.release()
        outlier = t.runtime.outlier
        if outlier is not None and not t.hedged:  # a hedged try's timeout was recorded
            outlier.record(t.endpoint.address, outcome)
        return self._retry(t, outcome)

    def answered(
        self,
        t: Try,
        status: int | None,
        headers: Mapping[str, str] | None = None,
        grpc_status: int | None = None,
    ) -> bool:
        """The attempt got a response; True when it should be dropped and retried.

        The breaker slot stays taken until the caller calls ``t.release()`` (when the
        response body completes) unless a retry is decided, which releases it here.
        """
        t.finished()
        outlier = t.runtime.outlier
        if outlier is None and self.decider is None:
            return False  # nothing reads the outcome: the common case, no allocation
        outcome = Outcome.response(status, headers, grpc_status=grpc_status)
        if outlier is not None and not t.hedged:  # a hedged try's timeout was recorded
            outlier.record(t.endpoint.address, outcome)
        if self._retry(t, outcome):
            t.release()
            return True
        return False

    def _retry(self, t: Try, outcome: Outcome, *, hedging: bool = False) -> bool:
        """Decide a retry: the policy allows it and a retry slot is free.

        With no slot (max_retries or the retry budget exhausted) the request is not
        retried and the caller gets this attempt's answer, as Envoy does. ``retriable``
        tells whether the outcome matched retry_on at all (hedging drops such answers
        while other attempts are still in flight). A hedged try already triggered its
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
        breaker = t.runtime.breaker
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
        deadline = self.plan.deadline
        if deadline is not None and time.monotonic() + delay >= deadline:
            slot, self._retry_slot = self._retry_slot, None
            self._pending = False
            if slot is not None:
                slot.release_retry()
            return None
        return delay

    def timed_out(self, t: Try, idle: bool = False) -> LocalReply | None:
        """After a final timeout: Envoy's local 504 when the route's timeout, a per-try
        timeout or (``idle``) the per-try idle timeout fired; None when the caller's own
        timeout did (the caller's error)."""
        plan = self.plan
        if idle:
            return _local(plan, "upstream per-try idle timeout", "UT", 504, grpc_status=4)
        if t.deadline is not None and (plan.route_timeout_binding or t.deadline != plan.deadline):
            return _local(plan, "upstream request timeout", "UT", 504, grpc_status=4)
        return None

    def deadline_exceeded(self) -> LocalReply:
        return _local(self.plan, "request timeout during retries", "UT", 504, grpc_status=4)


def _local(
    plan: Plan, why: str, flags: str, status: int = 503, grpc_status: int = 14
) -> LocalReply:
    return LocalReply(
        status,
        f"pymesh: {why} (cluster {plan.cluster_name!r})\n".encode(),
        grpc_status=grpc_status,
        flags=flags,
    )
