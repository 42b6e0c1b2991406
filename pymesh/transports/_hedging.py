"""The bookkeeping of a hedged request (Envoy's ``hedge_policy.hedge_on_per_try_timeout``).

Sans-I/O and shared by the sync and async transports, which only start attempts, wait
for the first to finish (or for :meth:`Race.wake_in`) and act on the verdicts. Envoy's
router semantics:

* a per-try timeout does not cancel the attempt; it counts as a timeout for outlier
  detection and, if the retry policy allows a retry (retry_on, num_retries, retry
  slot or budget), another attempt starts after the usual back-off while the first
  keeps going; every attempt runs until the route deadline;
* the first answer that does not match retry_on wins, and the others are cancelled;
* an answer or failure that matches retry_on is retried if a retry is left, else it is
  dropped while other attempts are in flight (or a retry is pending) and becomes the
  answer only when it is the last one;
* the route timeout ends everything with a local 504.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from typing import Generic, TypeVar

from pymesh.resilience import Outcome
from pymesh.telemetry._call import Attempt, CallObserver
from pymesh.transports._attempts import Attempts, Try

H = TypeVar("H")  # the transport's handle on one attempt in flight (future, task)


class Verdict(enum.Enum):
    """What the transport does with a finished attempt."""

    NEXT = "next"  # dropped or retried: keep waiting on the race
    WIN = "win"  # this answer goes to the caller; cancel the others
    LAST = "last"  # nothing else is coming: this answer/failure is the caller's
    DEADLINE = "deadline"  # no room left before the deadline: answer the local 504


class Race(Generic[H]):
    """The attempts of one hedged request: which are in flight, and when to act next."""

    __slots__ = ("attempts", "inflight", "launch_at", "retried", "spans")

    def __init__(self, attempts: Attempts) -> None:
        self.attempts = attempts
        self.inflight: dict[H, Try] = {}
        #: Telemetry handles of the attempts in flight (only when telemetry is on).
        self.spans: dict[H, Attempt | None] = {}
        #: Monotonic time at which the next attempt starts; None = none pending.
        self.launch_at: float | None = 0.0
        #: Whether the attempt last settled (failed/answered) triggered a retry.
        self.retried = False

    def started(self, handle: H, t: Try, obs: CallObserver | None) -> None:
        """``t`` is in flight as ``handle`` (with its telemetry, detached: hedged attempts
        run side by side)."""
        self.inflight[handle] = t
        if obs is not None:
            self.spans[handle] = obs.detach_attempt()

    def launch_due(self, now: float) -> bool:
        """True (once) when the pending attempt should start now."""
        if self.launch_at is not None and now >= self.launch_at:
            self.launch_at = None
            return True
        return False

    def wake_in(self, now: float) -> float | None:
        """Seconds until the next launch or soft per-try timeout; None = only answers."""
        due = self.launch_at
        for t in self.inflight.values():
            if not t.hedged and t.hedge_at is not None and (due is None or t.hedge_at < due):
                due = t.hedge_at
        return None if due is None else max(due - now, 0.0)

    def fire_timers(self, now: float) -> None:
        """Per-try timeouts that fired: decide the hedges they start."""
        for t in list(self.inflight.values()):
            due = not t.hedged and t.hedge_at is not None and t.hedge_at <= now
            if due and self.attempts.hedge(t):
                self._schedule(now)

    def _schedule(self, now: float) -> bool:
        """Start the retry just decided after its back-off; False when the deadline
        leaves no room (Attempts.backoff then calls the retry off)."""
        delay = self.attempts.backoff()
        if delay is None:
            return False
        self.launch_at = now + delay  # one retry is pending at a time (Attempts)
        return True

    def _others(self) -> bool:
        return bool(self.inflight) or self.launch_at is not None

    def failed(self, t: Try, outcome: Outcome) -> Verdict:
        """``t`` (already removed from ``inflight``) failed without an answer."""
        self.retried = self.attempts.failed(t, outcome)
        if self.retried:
            if self._schedule(time.monotonic()) or self._others():
                return Verdict.NEXT
            return Verdict.DEADLINE
        return Verdict.NEXT if self._others() else Verdict.LAST

    def answered(self, t: Try, status: int, headers: Mapping[str, str] | None) -> Verdict:
        """``t`` (already removed from ``inflight``) got response headers. On NEXT the
        transport closes the response (its slot is already given back)."""
        attempts = self.attempts
        self.retried = attempts.answered(t, status, headers)
        if self.retried:
            if self._schedule(time.monotonic()) or self._others():
                return Verdict.NEXT
            return Verdict.DEADLINE
        if attempts.retriable and self._others():
            t.release()  # a retriable answer nobody will retry: wait for the others
            return Verdict.NEXT
        return Verdict.WIN
