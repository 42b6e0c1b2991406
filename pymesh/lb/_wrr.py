"""Client-side weighted round robin (gRFC A58, Envoy's ``client_side_weighted_round_robin``).

Each endpoint's weight comes from its ORCA load reports (per call, or out of band):
``weight = qps / (utilization + eps / qps * error_utilization_penalty)``, where
utilization is ``application_utilization`` when set, else the largest of
``metric_names_for_computing_utilization``, else ``cpu_utilization`` (Envoy's order). A
weight counts only after ``blackout_period`` of reports (a fresh endpoint's first numbers
are noise) and until ``weight_expiration_period`` without one.

Out of band (``enable_oob_load_report``): one ``OpenRcaService`` stream per endpoint
(:class:`OobStream`), asking for a report every ``oob_reporting_period``.

The picker's weights are recomputed every ``weight_update_period`` off the hot path: the
pick that finds the period over builds a new immutable :class:`StaticStride` scheduler
and swaps it in (one attribute write); concurrent picks use the old one meanwhile. No
lock anywhere. Endpoints without a valid weight get the mean of the valid ones; with
fewer than two valid weights the picker is plain round robin (gRPC's rules).
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from xds.service.orca.v3 import orca_pb2

from pymesh.lb._state import EndpointState
from pymesh.xds.resources.cluster import WrrConfig
from pymesh.xds.resources.endpoint import Endpoint
from pymesh.xds.resources.orca import LoadReport, parse_raw, parse_serialized

__all__ = ["ClientSideWrr", "EndpointWeight", "OobStream", "StaticStride", "weight_from_report"]

log = logging.getLogger("pymesh.lb.wrr")
_OOB_METHOD = "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics"

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

    __slots__ = (
        "__weakref__",
        "_last",
        "_lock",
        "_oob",
        "_users",
        "config",
        "last_update",
        "non_empty_since",
        "value",
    )

    def __init__(self, config: WrrConfig) -> None:
        self.config = config
        # Out-of-band stream bookkeeping (picker builds and finalizers; never a request).
        self._lock = threading.Lock()
        self._oob: OobStream | None = None
        self._users = 0
        # The last raw per-call report and its weight, one tuple (read and replaced
        # whole, so never torn): a server's metrics change far less often than it
        # answers, so most reports repeat the previous one exactly.
        self._last: tuple[str | bytes, int, float] = ("", -1, 0.0)
        self.value = 0.0
        #: When the first report of the current run of reports came (None: no run).
        self.non_empty_since: float | None = None
        self.last_update = 0.0

    def on_raw_report(self, value: str | bytes, kind: int) -> None:
        """Fold in a per-call report as the driver found it (see
        :func:`pymesh.xds.resources.orca.parse_raw`); one equal to the last is not parsed
        again."""
        last = self._last
        if last[1] == kind and last[0] == value:
            weight = last[2]
        else:
            report = parse_raw(value, kind)
            weight = 0.0 if report is None else weight_from_report(report, self.config)
            self._last = (value, kind, weight)
        self._set(weight, time.monotonic())

    def on_report(self, report: LoadReport | None, now: float | None = None) -> None:
        """Fold in one report (None: it did not parse; ignored, as a weight of 0)."""
        if report is None:
            return
        self._set(weight_from_report(report, self.config), time.monotonic() if now is None else now)

    def _set(self, weight: float, now: float) -> None:
        if weight <= 0:
            return
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

    def acquire_oob(self, address: str) -> None:
        """A chooser uses this endpoint with out-of-band reports: make sure its stream runs."""
        with self._lock:
            self._users += 1
            if self._oob is None or not self._oob.alive:
                self._oob = OobStream(address, self, self.config.oob_reporting_period)

    def release_oob(self) -> None:
        """A chooser that used the stream is gone; the last one stops it."""
        with self._lock:
            self._users -= 1
            if self._users <= 0:
                self._users = 0
                if self._oob is not None:
                    self._oob.stop()
                    self._oob = None

    def stop_oob(self) -> None:
        with self._lock:
            if self._oob is not None:
                self._oob.stop()
                self._oob = None

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
    """The host chooser of ``client_side_weighted_round_robin`` over one host list.

    With ``enable_oob_load_report`` each endpoint's weight comes from an
    ``OpenRcaService`` stream (:class:`OobStream`) that lives while some chooser uses the
    endpoint; otherwise from the per-call reports the drivers pass to ``Ticket.done``.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_hosts",
        "_n",
        "_next_update",
        "_period",
        "_sched",
        "_seq",
        "_weights",
    )

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
                if w is not None:
                    w.stop_oob()
                w = state.orca = EndpointWeight(config)
            weights.append(w)
        self._weights = tuple(weights)
        if config.enable_oob_load_report:
            for host, w in zip(hosts, weights, strict=True):
                w.acquire_oob(host.address)
            # The streams live while a chooser uses them: released when this one is
            # dropped (a picker rebuild builds its successor first).
            weakref.finalize(self, _release_all, self._weights)
        # One sequence for the scheduler and the round-robin fallback, from a random
        # start so that clients built together do not all begin on the same host.
        self._seq = itertools.count(rng.randrange(max(1, self._n) * 64))
        self._next_update = 0.0
        self._sched: StaticStride | None = None
        self._update(clock())

    def _update(self, now: float) -> None:
        self._next_update = now + self._period
        weights = [w.current(now) for w in self._weights]
        if sum(1 for w in weights if w > 0) < 2:
            self._sched = None  # fewer than two weights: round robin (A58)
        else:
            self._sched = StaticStride(weights, self._seq)

    def scheduler_weights(self) -> tuple[float, ...]:
        """The weights in use now (0 for an endpoint given the mean), for inspection."""
        now = self._clock()
        return tuple(w.current(now) for w in self._weights)

    def choose(self) -> Endpoint | None:
        now = self._clock()
        if now >= self._next_update:
            self._update(now)
        sched = self._sched
        if sched is None:
            return self._hosts[next(self._seq) % self._n]
        return self._hosts[sched.pick()]


def _release_all(weights: tuple[EndpointWeight, ...]) -> None:
    for w in weights:
        w.release_oob()


class OobStream:
    """One ``OpenRcaService.StreamCoreMetrics`` stream to an endpoint (gRFC A51), on a
    named daemon thread: every report is folded into the endpoint's weight. Reconnects
    with back-off (1 s doubling to 30 s); stops for good when the server does not
    implement the service, or when :meth:`stop` is called. Plaintext only."""

    def __init__(self, address: str, weight: EndpointWeight, period: float) -> None:
        self.address = address
        self._weight = weakref.ref(weight)
        self._period = period
        self._stop = threading.Event()
        self._call: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"pymesh-orca-oob {address}", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()

    def _run(self) -> None:
        request = orca_pb2.OrcaLoadReportRequest()
        request.report_interval.FromNanoseconds(int(self._period * 1e9))
        backoff = 1.0
        while not self._stop.is_set():
            try:
                with grpc.insecure_channel(self.address) as channel:
                    stream = channel.unary_stream(
                        _OOB_METHOD,
                        request_serializer=orca_pb2.OrcaLoadReportRequest.SerializeToString,
                        response_deserializer=parse_serialized,
                        _registered_method=True,
                    )
                    self._call = call = stream(request, wait_for_ready=True)
                    if self._stop.is_set():
                        call.cancel()
                    for report in call:
                        weight = self._weight()
                        if weight is None:
                            return
                        weight.on_report(report)
                        backoff = 1.0
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                if code is grpc.StatusCode.UNIMPLEMENTED:
                    log.warning(
                        "%s does not serve %s: no out-of-band load reports from it",
                        self.address,
                        _OOB_METHOD,
                    )
                    return
                if code is grpc.StatusCode.CANCELLED and self._stop.is_set():
                    return
            except Exception:  # the thread must not die of a bad report or channel
                log.exception("ORCA out-of-band stream to %s failed", self.address)
            self._call = None
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)
