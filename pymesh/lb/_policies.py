"""Endpoint choice within one host list (a priority's healthy hosts, a locality, ...).

Each class follows the Envoy load balancer of the same name; see the module docstring
of :mod:`pymesh.lb._picker` for how host lists are chosen.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Protocol

from pymesh.lb._edf import Edf
from pymesh.lb._state import EndpointState, EndpointStates
from pymesh.lb._wrr import ClientSideWrr
from pymesh.xds.resources.cluster import LbPolicy
from pymesh.xds.resources.endpoint import Endpoint


class HostChooser(Protocol):
    def choose(self) -> Endpoint | None: ...


class _Empty:
    __slots__ = ()

    def choose(self) -> Endpoint | None:
        return None


EMPTY: HostChooser = _Empty()
_weight = attrgetter("weight")


def _equal_weights(hosts: tuple[Endpoint, ...]) -> bool:
    return len(set(map(_weight, hosts))) == 1  # no Python frame per host


def _below(rng: random.Random) -> Callable[[int], int]:
    """A fast uniform ``int`` in ``[0, n)``: ``random()`` is one C call, ``randrange``
    several Python frames (the bias for n far below 2**53 is negligible)."""
    uniform = rng.random

    def below(n: int) -> int:
        return int(uniform() * n)

    return below


def _distinct(rand: Callable[[int], int], n: int, k: int) -> list[int]:
    """``k`` distinct random indices below ``n`` (k < n), in draw order."""
    seen: set[int] = set()
    out: list[int] = []
    while len(out) < k:
        i = rand(n)
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


class RoundRobin:
    """Plain rotation from a random start (Envoy's unweighted round robin)."""

    __slots__ = ("_counter", "_hosts", "_n")

    def __init__(self, hosts: tuple[Endpoint, ...], rng: random.Random) -> None:
        self._hosts = hosts
        self._n = len(hosts)
        # itertools.count.__next__ is a single C call: a lock-free atomic ticket.
        self._counter = itertools.count(rng.randrange(self._n))

    def choose(self) -> Endpoint | None:
        return self._hosts[next(self._counter) % self._n]


class WeightedRoundRobin:
    """EDF-scheduled weighted round robin (Envoy, when endpoint weights differ or some
    endpoint is in slow start; ``ramp``: address → slow-start weight factor)."""

    __slots__ = ("_edf", "_hosts")

    def __init__(
        self,
        hosts: tuple[Endpoint, ...],
        rng: random.Random,
        ramp: Mapping[str, float] | None = None,
    ) -> None:
        self._hosts = hosts
        r = ramp or {}
        self._edf = Edf.randomized([h.weight * r.get(h.address, 1.0) for h in hosts], rng)

    def choose(self) -> Endpoint | None:
        i = self._edf.pick()
        return None if i is None else self._hosts[i]


class RandomChoice:
    """Uniform random choice. Envoy's RANDOM ignores endpoint weights; so does this."""

    __slots__ = ("_hosts", "_rng")

    def __init__(self, hosts: tuple[Endpoint, ...], rng: random.Random) -> None:
        self._hosts = hosts
        self._rng = rng

    def choose(self) -> Endpoint | None:
        hosts = self._hosts
        return hosts[int(self._rng.random() * len(hosts))]


class LeastRequest:
    """Envoy's LEAST_REQUEST.

    Equal weights: power of ``choice_count`` choices — sample that many *distinct* hosts
    (Envoy samples with replacement; distinct never wastes a choice) and take the one
    with the fewest active requests, ties to the earlier sample. With no more hosts than
    choices every host is compared (Envoy's full scan), ties broken at random.
    Unequal weights (or a host in slow start): EDF where a host re-enters the schedule
    with weight ``weight / (active_requests + 1) ** active_request_bias``, times its
    slow-start factor (``ramp``: address → factor).
    """

    __slots__ = ("_below", "_choices", "_edf", "_hosts", "_n", "_rng", "_states", "_uniform")

    def __init__(
        self,
        hosts: tuple[Endpoint, ...],
        states: tuple[EndpointState, ...],
        policy: LbPolicy,
        rng: random.Random,
        ramp: Mapping[str, float] | None = None,
    ) -> None:
        self._hosts = hosts
        self._states = states
        self._n = len(hosts)
        self._rng = rng
        self._uniform = rng.random
        self._below = _below(rng)
        self._choices = max(1, policy.choice_count)
        self._edf: Edf | None = None
        if ramp or not _equal_weights(hosts):
            bias = policy.active_request_bias
            base = [h.weight * (ramp or {}).get(h.address, 1.0) for h in hosts]

            def weight_of(i: int) -> float:
                w = base[i]
                if bias == 0.0:
                    return w
                active = states[i].active_requests + 1
                return w / active if bias == 1.0 else w / active**bias

            self._edf = Edf.randomized([weight_of(i) for i in range(self._n)], rng, weight_of)

    def choose(self) -> Endpoint | None:
        if self._edf is not None:
            i = self._edf.pick()
            return None if i is None else self._hosts[i]
        n = self._n
        states = self._states
        if n == 1:
            return self._hosts[0]
        k = self._choices
        if k == 2 and n > 2:  # (k >= n: the full scan below)
            # The default (choice_count 2), inlined: the same draws as _below makes.
            uniform = self._uniform
            a = int(uniform() * n)
            b = int(uniform() * (n - 1))
            if b >= a:
                b += 1
            if states[b].active_requests < states[a].active_requests:
                return self._hosts[b]
            return self._hosts[a]
        rand = self._below
        if k >= n:
            # Envoy's full scan: every host, ties broken uniformly (start at random).
            start = rand(n)
            order: list[int] = [(start + j) % n for j in range(n)]
        else:
            order = _distinct(rand, n, k)
        best = order[0]
        best_active = states[best].active_requests
        for i in order[1:]:
            active = states[i].active_requests
            if active < best_active:
                best, best_active = i, active
        return self._hosts[best]


class PeakEwma:
    """Power of two choices on the peak-EWMA cost (Finagle / Linkerd), ``pymesh.lb.v1.PeakEwma``.

    cost = latency * (active_requests + 1) / weight (:meth:`EndpointState.cost`), where
    latency is the decayed peak EWMA (Finagle, Linkerd), raised to how long the requests in
    flight have gone unanswered when that is longer (pymesh's addition: a host that stops
    answering is avoided before its slow answers return). A host that has never answered
    costs 0 while idle (a penalty-free first request) and a huge penalty while its first
    requests are in flight, so new hosts are probed one request at a time (Finagle).
    The two candidates are distinct and uniformly drawn, and a tie keeps the first, so
    equal hosts share load evenly (as Envoy's least request and Finagle's P2C).
    """

    __slots__ = ("_below", "_clock", "_hosts", "_n", "_rng", "_states")

    def __init__(
        self,
        hosts: tuple[Endpoint, ...],
        states: tuple[EndpointState, ...],
        rng: random.Random,
        clock: Callable[[], float],
    ) -> None:
        self._hosts = hosts
        self._states = states
        self._n = len(hosts)
        self._rng = rng
        self._below = _below(rng)
        self._clock = clock

    def choose(self) -> Endpoint | None:
        n = self._n
        if n == 1:
            return self._hosts[0]
        rand = self._below
        a = rand(n)
        b = rand(n - 1)
        if b >= a:
            b += 1
        now = self._clock()
        hosts = self._hosts
        cost_a = self._states[a].cost(now) / hosts[a].weight
        cost_b = self._states[b].cost(now) / hosts[b].weight
        return hosts[b] if cost_b < cost_a else hosts[a]


def make_chooser(
    policy: LbPolicy,
    hosts: tuple[Endpoint, ...],
    *,
    states: EndpointStates,
    rng: random.Random,
    clock: Callable[[], float] = time.monotonic,
    ramp: Mapping[str, float] | None = None,
) -> HostChooser:
    """The chooser of ``policy.name`` over ``hosts`` (non-hashing policies only).

    ``ramp``: slow-start weight factors of the hosts in their window (address → factor
    in (0, 1)); round robin and least request honour it, as Envoy."""
    if not hosts:
        return EMPTY
    name = policy.name
    if ramp is not None:
        ramp = {h.address: ramp[h.address] for h in hosts if h.address in ramp} or None
    if name == "round_robin":
        if ramp is None and _equal_weights(hosts):
            return RoundRobin(hosts, rng)
        return WeightedRoundRobin(hosts, rng, ramp)
    if name == "random":
        return RandomChoice(hosts, rng)
    per_host = states.for_hosts(hosts)
    if name == "least_request":
        return LeastRequest(hosts, per_host, policy, rng, ramp)
    if name == "peak_ewma":
        return PeakEwma(hosts, per_host, rng, clock)
    if name == "client_side_weighted_round_robin" and policy.wrr is not None:
        return ClientSideWrr(hosts, per_host, policy.wrr, rng, clock)
    raise ValueError(f"no host chooser for lb policy {name!r}")
