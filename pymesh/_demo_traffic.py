"""The demo's load: worker threads sending paced requests through MeshTransport.

Each request carries ``x-demo-phase`` so the backends' own logs attribute every attempt
(retries included) to the phase that sent it, even across a config push.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from pymesh.testing import EchoBackend

__all__ = ["PhaseStats", "Result", "Traffic", "percentile"]

PHASE_HEADER = "x-demo-phase"
USER_HEADER = "end-user"
TEST_USER_EVERY = 5  # every 5th request of a worker is the test user's


@dataclass(frozen=True, slots=True)
class Result:
    """One user-visible request: who sent it, who served it, how it ended."""

    phase: int
    test_user: bool
    backend: str  # "" when no backend answered
    status: int  # 0 for a transport error
    latency: float


@dataclass
class PhaseStats:
    """What one phase looked like, computed from client results and backend logs."""

    index: int
    name: str
    say: str
    xds_version: str = ""
    xds_types: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    requests: int = 0
    by_version: Counter[str] = field(default_factory=Counter)  # everyone but the test user
    test_user: Counter[str] = field(default_factory=Counter)
    user_errors: int = 0
    backend_attempts: int = 0
    backend_5xx: int = 0
    flaky_requests: int = 0
    retries: int = 0
    ejections: int = 0
    returns: int = 0  # un-ejections: the host came back after its ejection time
    flaky_while_ejected: int = 0
    ejected_now: bool = False
    p50_ms: float = 0.0
    p99_ms: float = 0.0

    def share(self, version: str) -> float:
        """Percent of the non-test-user requests served by ``version``."""
        total = sum(self.by_version.values())
        return 100.0 * self.by_version[version] / total if total else 0.0


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0..100) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, round(q / 100.0 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


class Traffic:
    """``workers`` threads sharing one client, together about ``rate`` requests/s."""

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        *,
        workers: int,
        rate: float,
        test_user: str,
        seed: int,
    ) -> None:
        self._client = client
        self._url = url
        self._workers = workers
        self._interval = workers / rate
        self._test_user = test_user
        self._seed = seed
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._inflight: Counter[int] = Counter()
        self._results: list[Result] = []
        self.phase = 0
        self.fatal: BaseException | None = None

    def start(self) -> None:
        """Start the workers (they send with the current :attr:`phase`)."""
        for i in range(self._workers):
            t = threading.Thread(
                target=self._run, args=(i,), name=f"pymesh-demo-worker-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers and wait for their last request."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def results(self, phase: int) -> list[Result]:
        """Results of ``phase`` so far."""
        with self._cond:
            return [r for r in self._results if r.phase == phase]

    def forget(self, phase: int) -> None:
        """Drop the results of ``phase`` (already summarised)."""
        with self._cond:
            self._results = [r for r in self._results if r.phase != phase]

    def wait_drained(self, phase: int, timeout: float = 15.0) -> None:
        """Block until no request of ``phase`` is in flight (TimeoutError otherwise)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._inflight[phase] == 0, timeout):
                raise TimeoutError(f"requests of phase {phase} still in flight after {timeout}s")

    def _run(self, index: int) -> None:
        rng = random.Random(self._seed * 1000 + index)
        # Stagger the workers so they do not fire in lock-step.
        next_at = time.monotonic() + rng.random() * self._interval
        n = 0
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):  # pacing, not synchronisation
                return
            next_at = max(next_at + self._interval, time.monotonic())
            n += 1
            try:
                self._one(n % TEST_USER_EVERY == 0)
            except Exception as e:  # a bug in the demo itself: stop and report it
                self.fatal = e
                self._stop.set()
                return

    def _one(self, test_user: bool) -> None:
        phase = self.phase
        headers = {PHASE_HEADER: str(phase)}
        if test_user:
            headers[USER_HEADER] = self._test_user
        with self._cond:
            self._inflight[phase] += 1
        status, backend = 0, ""
        started = time.perf_counter()
        try:
            r = self._client.get(self._url, headers=headers)
            status, backend = r.status_code, r.headers.get("x-backend", "")
        except httpx.HTTPError:
            pass  # counted as a user-visible failure (status 0)
        finally:
            latency = time.perf_counter() - started
            with self._cond:
                self._inflight[phase] -= 1
                self._results.append(Result(phase, test_user, backend, status, latency))
                self._cond.notify_all()


def backend_attempts(backends: list[EchoBackend], phase: int) -> dict[str, list[tuple[int, float]]]:
    """Per backend: ``(status, arrival time)`` of every attempt tagged with ``phase``."""
    tag = str(phase)
    return {
        b.name: [(r.status, r.at) for r in b.requests if r.header(PHASE_HEADER) == tag]
        for b in backends
    }
