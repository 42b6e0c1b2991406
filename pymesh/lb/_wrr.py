"""Client-side weighted round robin (gRFC A58, Envoy's ``client_side_weighted_round_robin``).

Each endpoint's weight comes from its ORCA load reports (per call, or out of band):
``weight = qps / (utilization + eps / qps * error_utilization_penalty)``, where
utilization is ``application_utilization`` when set, else the largest of
``metric_names_for_computing_utilization``, else ``cpu_utilization`` (Envoy's order). A
weight counts only after ``blackout_period`` of reports (a fresh endpoint's first numbers
are noise) and until ``weight_expiration_period`` without one.

The picker's weights are recomputed every ``weight_update_period`` off the hot path: the
pick that finds the period over builds a new immutable :class:`StaticStride` scheduler
and swaps it in (one attribute write); concurrent picks use the old one meanwhile. No
lock anywhere. Endpoints without a valid weight get the mean of the valid ones; with
fewer than two valid weights the picker is plain round robin (gRPC's rules).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence

from pymesh.lb._state import EndpointState
from pymesh.xds.resources.cluster import WrrConfig
from pymesh.xds.resources.endpoint import Endpoint
from pymesh.xds.resources.orca import LoadReport

__all__ = ["ClientSideWrr", "EndpointWeight", "StaticStride", "weight_from_report"]

#: gRPC's static stride scheduler: weights scaled to at most this, ratios capped to 10:1
#: above the mean and 1:100 below it.
_MAX_WEIGHT = 0xFFFF
_MAX_RATIO = 10.0
_MIN_RATIO = 0.01
_OFFSET = _MAX_WEIGHT // 2


def weight_from_report(report: LoadReport, config: WrrConfig) -> float:
    """An endpoint's weight from one report (0: the report gives none)."""
    qps = report.qps
    if qps <= 0:
        return 0.0
    utilization = report.application_utilization
    if utilization <= 0 and config.metric_names_for_computing_utilization:
        utilization = max(
            (v for n in config.metric_names_for_computing_utilization for v in report.metric(n)),
            default=0.0,
        )
    if utilization <= 0:
        utilization = report.cpu_utilization
    utilization += report.eps / qps * config.error_utilization_penalty
    if utilization <= 0:
        return 0.0
    return qps / utilization


class EndpointWeight:
    """One endpoint's weight from its reports (lives in its EndpointState, so it survives
    picker rebuilds). Plain attribute writes: approximate under races, never torn."""

    __slots__ = ("config", "last_update", "non_empty_since", "value")

    def __init__(self, config: WrrConfig) -> None:
        self.config = config
        self.value = 0.0
        #: When the first report of the current run of reports came (None: no run).
        self.non_empty_since: float | None = None
        self.last_update = 0.0

    def on_report(self, report: LoadReport | None, now: float | None = None) -> None:
        """Fold in one report (None: it did not parse; ignored, as a weight of 0)."""
        if report is None:
            return
        weight = weight_from_report(report, self.config)
        if weight <= 0:
            return
        now = time.monotonic() if now is None else now
        if self.non_empty_since is None:
            self.non_empty_since = now
        self.last_update = now
        self.value = weight

    def current(self, now: float) -> float:
        """The weight to use now: 0 while blacked out, expired or never reported."""
        since = self.non_empty_since
        if since is None:
            return 0.0
        config = self.config
        if now - self.last_update >= config.weight_expiration_period:
            self.non_empty_since = None  # the next report starts a new blackout
            return 0.0
        if config.blackout_period > 0 and now - since < config.blackout_period:
            return 0.0
        return self.value

    def __repr__(self) -> str:
        return f"EndpointWeight({self.value:.3f}, since={self.non_empty_since})"


class StaticStride:
    """gRPC's static stride scheduler: lock-free weighted picks over fixed weights.

    A shared sequence number (``itertools.count``: one C call, atomic under the GIL)
    is split into a backend index (``seq % n``) and a generation (``seq // n``); the
    backend is taken in ``weight`` of every ``_MAX_WEIGHT`` generations, spread evenly,
    else the next number is tried. Expected tries per pick: max weight / mean weight.
    """

    __slots__ = ("_n", "_seq", "weights")

    def __init__(self, weights: Sequence[float], seq: Iterator[int]) -> None:
        valid = [w for w in weights if w > 0]
        mean = sum(valid) / len(valid)
        top = min(max(valid), _MAX_RATIO * mean)
        scale = _MAX_WEIGHT / top
        scaled_mean = round(scale * mean)
        floor = max(1, round(scaled_mean * _MIN_RATIO))
        #: The scheduler's integer weights (an endpoint without one gets the mean).
        self.weights = tuple(
            scaled_mean if w <= 0 else max(floor, round(min(w, top) * scale)) for w in weights
        )
        self._n = len(self.weights)
        self._seq = seq

    def pick(self) -> int:
        n = self._n
        weights = self.weights
        seq = self._seq
        while True:
            s = next(seq)
            i = s % n
            w = weights[i]
            if (w * (s // n) + i * _OFFSET) % _MAX_WEIGHT >= _MAX_WEIGHT - w:
                return i


class ClientSideWrr:
    """The host chooser of ``client_side_weighted_round_robin`` over one host list."""

    __slots__ = ("_clock", "_hosts", "_n", "_next_update", "_period", "_pick", "_seq", "_weights")

    def __init__(
        self,
        hosts: tuple[Endpoint, ...],
        states: tuple[EndpointState, ...],
        config: WrrConfig,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hosts = hosts
        self._n = len(hosts)
        self._clock = clock
        self._period = config.weight_update_period
        weights = []
        for state in states:
            w = state.orca
            if w is None or w.config != config:
                w = state.orca = EndpointWeight(config)
            weights.append(w)
        self._weights = tuple(weights)
        # One sequence for the scheduler and the round-robin fallback, from a random
        # start so that clients built together do not all begin on the same host.
        self._seq = itertools.count(rng.randrange(max(1, self._n) * 64))
        self._next_update = 0.0
        self._pick: Callable[[], int] = self._round_robin
        self._update(clock())

    def _round_robin(self) -> int:
        return next(self._seq) % self._n

    def _update(self, now: float) -> None:
        self._next_update = now + self._period
        weights = [w.current(now) for w in self._weights]
        if sum(1 for w in weights if w > 0) < 2:
            self._pick = self._round_robin  # fewer than two weights: round robin (A58)
        else:
            self._pick = StaticStride(weights, self._seq).pick

    def scheduler_weights(self) -> tuple[float, ...]:
        """The weights in use now (0 for an endpoint given the mean), for inspection."""
        now = self._clock()
        return tuple(w.current(now) for w in self._weights)

    def choose(self) -> Endpoint | None:
        now = self._clock()
        if now >= self._next_update:
            self._update(now)
        return self._hosts[self._pick()]
