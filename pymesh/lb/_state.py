"""Per-endpoint counters shared by every picker of a cluster.

Pickers are rebuilt on each endpoint or ejection change, but an endpoint's load and
latency must survive those rebuilds, so they live here, keyed by ``Endpoint.address``.
Updates are plain attribute writes without locks: the numbers steer load balancing and
are allowed to be approximate (a lost increment under a race only skews a few picks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymesh.xds.resources.endpoint import Endpoint

#: Default decay window of the peak-EWMA latency estimate (seconds), as Finagle/Linkerd.
DEFAULT_DECAY_TIME = 10.0

#: A failed request counts as a latency sample of at least this many times the current
#: estimate (the error penalty of ServiceTalk's ``DefaultRequestTracker``).
ERROR_PENALTY = 10.0

# Finagle's trick: a host with requests in flight but no latency sample yet is treated as
# very expensive, so a new host gets one probe request at a time until it has answered.
_PENALTY = 1e12

# An endpoint unanswered for more than this many decay windows while it has requests in
# flight is taken for lost bookkeeping (an attempt whose end was never reported), which is
# forgotten: otherwise one leaked start would make it look ever slower and never picked.
_STALE_DECAYS = 4.0


class EndpointState:
    """Mutable, approximate counters of one endpoint.

    ``active_requests`` is maintained by the caller (``on_start``/``on_finish``, or
    directly: the call engine's ticket counts a request of a policy other than peak EWMA
    with no method call, and ends it as ``on_finish()`` with no latency does);
    ``ewma_latency`` (seconds) and ``last_update`` (the caller's monotonic clock) feed the
    peak-EWMA policy via :meth:`observe`. Requests started with :meth:`on_start` are also
    timed while in flight (:meth:`unanswered_for`), so an endpoint that stops answering
    looks expensive before its slow answers come back.
    """

    __slots__ = (
        "_busy_since",
        "_last_end",
        "_rttvar",
        "_srtt",
        "_timed",
        "active_requests",
        "address",
        "clock",
        "decay_time",
        "ewma_latency",
        "last_update",
        "orca",
    )

    def __init__(
        self,
        address: str,
        decay_time: float = DEFAULT_DECAY_TIME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.active_requests = 0
        self.ewma_latency = 0.0
        self.last_update: float | None = None
        self.decay_time = decay_time
        #: Monotonic seconds; read when the caller of on_start/on_finish gives no ``now``.
        self.clock = clock
        # Requests in flight that on_start counted, when the endpoint last went from idle
        # to busy, and when a request last ended: see unanswered_for().
        self._timed = 0
        self._busy_since = 0.0
        self._last_end = 0.0
        # Smoothed latency and mean deviation as TCP keeps them (RFC 6298): a wait past
        # srtt + 4 * rttvar is overdue; see overdue().
        self._srtt = 0.0
        self._rttvar = 0.0
        #: Client-side weighted round robin: the endpoint's weight from its ORCA reports
        #: (a pymesh.lb._wrr.EndpointWeight), set by that policy's picker; else None.
        self.orca: Any = None

    def on_start(self, now: float | None = None) -> None:
        """A request to this endpoint started (at ``now``, default: :attr:`clock`)."""
        self.active_requests += 1
        if self._timed <= 0:
            self._busy_since = self.clock() if now is None else now
            self._timed = 1
        else:
            self._timed += 1

    def on_finish(self, latency_s: float | None = None, now: float | None = None) -> None:
        """A request finished; record its latency when both values are given."""
        self.active_requests = max(0, self.active_requests - 1)
        self._ended(now)
        if latency_s is not None and now is not None:
            self.observe(latency_s, now)

    def on_failure(self, latency_s: float, now: float) -> None:
        """A request failed without a response (reset, refused, timed out) after ``latency_s``.

        Finagle records a failed request's elapsed time like any other; ServiceTalk also
        scales a failure by :data:`ERROR_PENALTY` so that fast failures (a refused
        connection) do not make a broken endpoint look fast. The sample is the larger of
        the two: at least the time it took, at least ten times the current estimate.
        """
        self.active_requests = max(0, self.active_requests - 1)
        self._ended(now)
        self.observe(max(latency_s, self.latency_estimate(now) * ERROR_PENALTY), now)

    def _ended(self, now: float | None) -> None:
        if self._timed > 0:
            self._timed -= 1
        # Only peak EWMA reads the timing, and its callers pass ``now``: the others
        # (on_finish() with no latency) skip the clock on the request path.
        if now is not None:
            self._last_end = now

    def unanswered_for(self, now: float) -> float:
        """Seconds since this endpoint last ended a request while it had some in flight.

        0 when nothing that :meth:`on_start` counted is in flight. It never exceeds the
        age of the oldest request in flight (every request older than the last end was
        itself in flight, so had ended, or the endpoint was idle), so it is a lower bound
        on a latency still to be reported. O(1), no per-request records, no drift.
        """
        if self._timed <= 0:
            return 0.0
        since = self._busy_since if self._busy_since > self._last_end else self._last_end
        age = now - since
        if age > _STALE_DECAYS * self.decay_time:
            self._timed = 0  # lost bookkeeping: forget it (see _STALE_DECAYS)
            return 0.0
        return age if age > 0.0 else 0.0

    def overdue_after(self) -> float:
        """Seconds after which a wait is overdue: srtt + 4 * rttvar, TCP's retransmission
        timeout (RFC 6298, Jacobson/Karels) over this endpoint's latency samples, so a
        jittery endpoint (or a jittery client) needs a longer wait to count as stalled."""
        return self._srtt + 4.0 * self._rttvar

    def observe(self, latency_s: float, now: float) -> None:
        """Fold one latency sample into the peak-sensitive EWMA.

        A sample above the estimate replaces it at once (the "peak"); lower samples are
        averaged in with a weight that grows with the time since the previous sample.
        The sample also updates the smoothed latency and deviation behind
        :meth:`overdue_after` (RFC 6298's gains, 1/8 and 1/4).
        """
        last = self.last_update
        if last is None:
            self._srtt, self._rttvar = latency_s, latency_s / 2
        else:
            self._rttvar += (abs(self._srtt - latency_s) - self._rttvar) / 4
            self._srtt += (latency_s - self._srtt) / 8
        if last is None or latency_s > self.ewma_latency:
            self.ewma_latency = latency_s
        else:
            w = math.exp(-max(0.0, now - last) / self.decay_time) if self.decay_time > 0 else 0.0
            self.ewma_latency = self.ewma_latency * w + latency_s * (1.0 - w)
        self.last_update = now

    def latency_estimate(self, now: float) -> float:
        """The EWMA decayed toward zero for the time since its last sample (read-only)."""
        last = self.last_update
        if last is None or self.decay_time <= 0:
            return self.ewma_latency
        return self.ewma_latency * math.exp(-max(0.0, now - last) / self.decay_time)

    def cost(self, now: float) -> float:
        """Peak-EWMA cost: latency * (in-flight + 1), with Finagle's penalty for new hosts.

        ``latency`` is the decayed EWMA, raised to :meth:`unanswered_for` once the
        requests in flight are overdue (:meth:`overdue_after`): an unanswered request is a
        lower bound on the latency it will report, so a host that has just stopped
        answering is avoided before its first slow answer arrives. This is pymesh's own
        addition (Finagle and Linkerd count requests in flight but do not time them); it
        applies peak EWMA's rule, react to the worst evidence at once, to evidence that has
        not arrived yet. The overdue threshold keeps the client's own stalls (a busy event
        loop delays every answer alike) from reading as a slow host.
        """
        active = self.active_requests
        latency = self.latency_estimate(now)
        if latency == 0.0 and active > 0:
            return _PENALTY + active
        if self._timed > 0:
            # unanswered_for() and overdue_after() inlined for the common case: this runs
            # twice per pick. The method (with its staleness check) only when it matters.
            last_end = self._last_end
            waited = now - (self._busy_since if self._busy_since > last_end else last_end)
            if waited > latency and waited > self._srtt + 4.0 * self._rttvar:
                waited = self.unanswered_for(now)
                if waited > latency:
                    latency = waited
        return latency * (active + 1)

    def __repr__(self) -> str:
        return (
            f"EndpointState({self.address!r}, active={self.active_requests}, "
            f"ewma={self.ewma_latency:.6f})"
        )


class EndpointStates(Mapping[str, EndpointState]):
    """Registry of :class:`EndpointState` by endpoint address, one per cluster.

    ``get_or_create`` is safe to call from several threads: ``dict.setdefault`` is
    atomic, so two racing callers end up sharing one state object.
    """

    __slots__ = ("_states", "clock", "decay_time", "lookup")

    def __init__(
        self,
        *,
        decay_time: float = DEFAULT_DECAY_TIME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._states: dict[str, EndpointState] = {}
        #: The state of an address if it has one, else None: the registry's own
        #: ``dict.get`` (admission reads it once per attempt; no Python frame).
        self.lookup: Callable[[str], EndpointState | None] = self._states.get
        self.decay_time = decay_time
        self.clock = clock

    def get_or_create(self, address: str) -> EndpointState:
        state = self._states.get(address)
        if state is None:
            state = self._states.setdefault(
                address, EndpointState(address, self.decay_time, self.clock)
            )
        return state

    def for_hosts(self, hosts: Iterable[Endpoint]) -> tuple[EndpointState, ...]:
        """:meth:`get_or_create` for each of ``hosts``, in order (one loop for a
        10 000-host picker, not a call per host)."""
        get, setdefault = self._states.get, self._states.setdefault
        decay_time, clock = self.decay_time, self.clock
        out = []
        for h in hosts:
            state = get(h.address)
            if state is None:
                address = h.address
                # Positional: keyword arguments double the cost of a new state.
                state = setdefault(address, EndpointState(address, decay_time, clock))
            out.append(state)
        return tuple(out)

    def set_decay_time(self, decay_time: float) -> None:
        """Use ``decay_time`` (the cluster's peak-EWMA setting) for all endpoints."""
        self.decay_time = decay_time
        for state in list(self._states.values()):
            state.decay_time = decay_time

    def close(self) -> None:
        """Stop the endpoints' background work (weighted round robin's ORCA
        out-of-band streams)."""
        for state in list(self._states.values()):
            if state.orca is not None:
                state.orca.stop_oob()

    def retain(self, addresses: set[str] | frozenset[str]) -> None:
        """Forget endpoints that are gone (call after an EDS update)."""
        for address in [a for a in self._states if a not in addresses]:
            self._states.pop(address, None)

    def __getitem__(self, address: str) -> EndpointState:
        return self._states[address]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._states))

    def __len__(self) -> int:
        return len(self._states)

    def __repr__(self) -> str:
        return f"EndpointStates({len(self._states)} endpoints)"
