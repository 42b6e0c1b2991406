"""Admission: the cluster's pick, which enforces drops and breakers and hands out a ticket.

Modelled on grpc-go's clusterimpl picker: one pick step enforces EDS ``drop_overloads``
and the circuit breaker, and returns a handle (:class:`Ticket`) whose :meth:`Ticket.done`
records everything the attempt's end means (load state for least-request / peak EWMA,
the outlier detector's result) and gives the breaker slot back. No driver can forget any
of it, and no driver writes it again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Container, Iterable

from pymesh._upstream import ClusterRuntime
from pymesh.call._session import OverridePicker
from pymesh.lb import EndpointState, Picker
from pymesh.lb._aggregate import LevelPicker
from pymesh.resilience import CircuitBreaker, Outcome
from pymesh.xds.resources.endpoint import Endpoint
from pymesh.xds.resources.orca import REPORT_BASE64, REPORT_SERIALIZED, REPORT_TEXT

__all__ = ["Refused", "Ticket", "admit"]

#: gRPC statuses that mean the endpoint gave no real answer (peak EWMA penalises them as
#: failures): DEADLINE_EXCEEDED, UNAVAILABLE.
NO_ANSWER = frozenset({4, 14})

#: A refused admission: (Envoy response flag, why), e.g. ("DO", "dropped by ...").
Refused = tuple[str, str]

# ORCA per-call reports (gRFC A51; Envoy's header forms): the key and how it is encoded.
_ORCA_BIN = "endpoint-load-metrics-bin"
_ORCA_TEXT = "endpoint-load-metrics"
_SERIALIZED, _BASE64, _TEXT = REPORT_SERIALIZED, REPORT_BASE64, REPORT_TEXT


class Ticket:
    """One admitted attempt: where it goes, what it holds, and when it must end.

    ``load`` is the endpoint's load state (least request, peak EWMA). ``runtime``,
    ``endpoint`` and ``load`` are None for an attempt that picks no endpoint
    (the interceptor, which cannot choose the destination of the channel it wraps).
    """

    # No __slots__: the fields most attempts never change are class-level defaults, so
    # admitting an attempt sets only what it knows (the request path allocates little).

    #: Whether :meth:`done` ran (the outcome is recorded once), and the slot was given back.
    ended = False
    _released = False
    #: This attempt's deadline (monotonic): the call's, or sooner with a per-try timeout.
    deadline: float | None = None
    #: Hedging: when the (soft) per-try timeout fires; None when not hedging.
    hedge_at: float | None = None
    #: Hedging: the per-try timeout fired and was recorded (a hedge may be in flight).
    hedged = False
    #: The driver's answer for this attempt (set when it ends), and its handle on the
    #: attempt while it runs beside others (hedging: future, task).
    reply: Reply | None = None
    handle: object = None
    #: The driver's telemetry handle of this attempt (hedged attempts run side by side).
    trace: object = None
    #: Driver hook run once when the slot is given back (gRPC: sub-channel accounting).
    on_release: Callable[[], None] | None = None
    #: Only peak EWMA reads attempt timings: the other policies skip the clock.
    _timed = False
    started = 0.0
    #: Client-side weighted round robin from per-call reports: the driver hands the
    #: attempt's ORCA trailer / header to :meth:`report_trailers` / :meth:`report_headers`
    #: (only when this is set), and :meth:`done` folds it into the endpoint's weight.
    wants_load_report = False
    _load_report: tuple[str | bytes, int] | None = None
    #: The breaker slot this attempt holds (None: none, or the pool holds it) and whether
    #: it is a retry slot.
    _breaker: CircuitBreaker | None = None
    _is_retry = False

    def __init__(
        self,
        runtime: ClusterRuntime | None,
        endpoint: Endpoint | None,
        load: EndpointState | None,
        breaker: CircuitBreaker | None,
        is_retry: bool,
    ) -> None:
        # admit() builds the common ticket (counted, not timed, no load report) without
        # this frame: keep the two in step (tests/call/test_engine.py compares them).
        self.runtime = runtime
        self.endpoint = endpoint
        self.load = load
        if breaker is not None:
            self._breaker = breaker
        if is_retry:
            self._is_retry = True
        if endpoint is None:
            self.address = ""
            return
        self.address = endpoint.address
        cluster = runtime.cluster if runtime is not None else None
        if cluster is not None and cluster.lb_policy.name == "peak_ewma":
            self._timed = True
            self.started = now = time.monotonic()
            load.on_start(now)  # type: ignore[union-attr]
        elif load is not None:
            load.active_requests += 1  # counted, not timed: no call per attempt
            if load.orca is not None and cluster is not None:
                wrr = cluster.lb_policy.wrr
                if wrr is not None and not wrr.enable_oob_load_report:
                    self.wants_load_report = True

    def __repr__(self) -> str:
        return f"<Ticket {self.address or '-'} retry={self._is_retry} ended={self.ended}>"

    def report_trailers(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        """gRPC: keep the ORCA report in the attempt's trailing metadata, if any (the
        ``-bin`` trailer where the gRPC library shows it, else Envoy's text form)."""
        for key, value in metadata or ():
            if key == _ORCA_BIN:
                self._load_report = (value, _SERIALIZED)
                return
            if key == _ORCA_TEXT:
                self._load_report = (value, _TEXT)

    def report_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """HTTP: keep the ORCA report in the response headers, if any (Envoy's order:
        ``endpoint-load-metrics-bin`` first, then ``endpoint-load-metrics``)."""
        for key, value in headers:
            if len(key) < 21:
                continue
            name = key.lower()
            if name == b"endpoint-load-metrics-bin":
                self._load_report = (value, _BASE64)
                return
            if name == b"endpoint-load-metrics":
                self._load_report = (value, _TEXT)

    def done(self, outcome: Outcome | None, failed: bool = False, release: bool = True) -> None:
        """The attempt ended with ``outcome`` (None: nothing reads it). Records the load
        state (``failed``: a penalised latency sample, see EndpointState.on_failure), the
        outlier result (unless a hedge already counted this attempt's timeout) and, with
        ``release``, gives the slot back. Idempotent."""
        if self.ended:
            if release:
                self.release()
            return
        self.ended = True
        load = self.load
        if self._load_report is not None and load is not None and load.orca is not None:
            value, kind = self._load_report
            load.orca.on_raw_report(value, kind)
        if load is not None:
            if not self._timed:
                # load.on_finish() with no latency, without a call per attempt
                n = load.active_requests
                load.active_requests = n - 1 if n > 0 else 0
                if load._timed > 0:
                    load._timed -= 1
            else:
                now = time.monotonic()
                if failed:
                    load.on_failure(now - self.started, now)
                else:
                    load.on_finish(now - self.started, now)
        rt = self.runtime
        if outcome is not None and rt is not None and not self.hedged:
            outlier = rt.outlier
            if outlier is not None:
                outlier.record(self.address, outcome)
        if release:
            self.release()

    def answered(self, reply: Reply, release: bool = True) -> None:
        """The attempt got ``reply`` and nothing decides a retry on it (no retry policy):
        keep it as :attr:`reply`, and :meth:`done` with the outcome the outlier detector
        reads, if the cluster has one (no allocation otherwise), and a gRPC
        DEADLINE_EXCEEDED / UNAVAILABLE as a failed latency sample."""
        self.reply = reply
        rt = self.runtime
        outcome = None
        if rt is not None and rt.outlier is not None:
            outcome = Outcome.response(
                reply.status,
                reply.headers,  # type: ignore[arg-type]
                grpc_status=reply.grpc_status,
            )
        self.done(outcome, reply.grpc_status in NO_ANSWER, release)

    def abandon(self) -> None:
        """The attempt is given up without an outcome (cancelled, lost a hedging race,
        or the driver raised): end its load accounting and free its slot."""
        self.done(None)

    def release(self) -> None:
        """Give back the breaker slot (idempotent): when the response body is done."""
        if self._released:
            return
        self._released = True
        breaker = self._breaker
        if breaker is not None:
            if self._is_retry:
                breaker.release_retry()
            else:
                breaker.active_requests -= 1  # breaker.release_request(), inline
        hook = self.on_release
        if hook is not None:
            hook()


class Reply:
    """A driver's answer for one attempt, in the terms the engine reads.

    ``failure`` is set (an Outcome.failure) when no response came; otherwise ``status``
    (HTTP) and/or ``grpc_status`` describe the response and ``headers`` its headers
    (only filled when the engine asks, :attr:`Attempts.needs_headers`). ``value`` is the
    protocol's own answer (httpcore response, gRPC result) and ``error`` the exception
    to raise if this reply becomes the caller's. ``refused`` is set when the driver's
    connection pool refused the attempt before sending it (HTTP/1.1 pending overflow:
    ("UO", why)): the call ends with that local answer, not retried, no outlier result,
    as Envoy's pool overflow.
    """

    __slots__ = ("error", "failure", "grpc_status", "headers", "refused", "status", "value")

    def __init__(
        self,
        value: object = None,
        status: int | None = None,
        grpc_status: int | None = None,
        headers: object = None,
        failure: Outcome | None = None,
        error: BaseException | None = None,
        refused: Refused | None = None,
    ) -> None:
        self.refused = refused
        self.value = value
        self.status = status
        self.grpc_status = grpc_status
        self.headers = headers
        self.failure = failure
        self.error = error

    def __repr__(self) -> str:
        if self.failure is not None:
            return f"<Reply failure {self.error!r}>"
        return f"<Reply status={self.status} grpc_status={self.grpc_status}>"


def admit(
    rt: ClusterRuntime,
    hash_key: int | None,
    rng: random.Random,
    is_retry: bool,
    retry_slot: CircuitBreaker | None,
    exclude: Container[str] = frozenset(),
    tries: int = 1,
    picker: Picker | LevelPicker | OverridePicker | None = None,
    pooled: bool = False,
) -> Ticket | Refused:
    """The cluster's pick: drops (first attempts only, as gRPC's xds_cluster_impl and
    Envoy), endpoint choice (``exclude`` re-picked up to ``tries`` times), then the
    breaker: a first attempt takes a request slot here; a retry brings the retry slot it
    took when the retry was decided (``retry_slot``). ``picker``: what to pick with
    instead of ``rt.picker`` (gRPC's picker, or the level an aggregate cluster chose).
    ``pooled``: the driver's HTTP/1.1 pools take the request slot when the request is
    attached to a connection, as Envoy's connection pools do (pymesh.transports._pool),
    so admission does not."""
    if picker is None:
        picker = rt.picker
    if picker is None:
        return ("UH", "no healthy upstream")
    if not is_retry and picker.has_drops:
        category = picker.drop_category(rng.random())
        if category is not None:
            return ("DO", f"dropped by drop_overloads ({category})")
    if exclude:
        ep = picker.pick(hash_key, exclude, host_selection_retry_max_attempts=tries)
    else:
        direct = picker.direct  # most pickers: the host chooser itself, one call
        ep = direct() if direct is not None else picker.pick(hash_key)
    if ep is None:
        return ("UH", "no healthy upstream")
    if is_retry:
        breaker = retry_slot
    else:
        breaker = rt.breaker
        if breaker is not None:
            cluster = rt.cluster
            if pooled and cluster is not None and not cluster.http2:
                breaker = None  # the pool takes the request slot (and gives it back)
            elif breaker.active_requests < breaker.max_requests:
                breaker.active_requests += 1  # try_acquire_request's success, inline
            elif not breaker.try_acquire_request():
                return ("UO", "upstream overflow (circuit breaker max_requests)")
    states = rt.states
    address = ep.address
    load = states.lookup(address)
    if load is None:
        load = states.get_or_create(address)
    cluster = rt.cluster
    if load.orca is not None or (cluster is not None and cluster.lb_policy.name == "peak_ewma"):
        return Ticket(rt, ep, load, breaker, is_retry)
    # Ticket(rt, ep, load, breaker, is_retry) for the common attempt (counted, not
    # timed, no per-call load report), without its __init__ frame.
    t: Ticket = object.__new__(Ticket)
    t.runtime, t.endpoint, t.load, t.address = rt, ep, load, address
    if breaker is not None:
        t._breaker = breaker
    if is_retry:
        t._is_retry = True
    load.active_requests += 1
    return t
