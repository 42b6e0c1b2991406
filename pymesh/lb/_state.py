"""Per-endpoint counters shared by every picker of a cluster.

Pickers are rebuilt on each endpoint or ejection change, but an endpoint's load and
latency must survive those rebuilds, so they live here, keyed by ``Endpoint.address``.
Updates are plain attribute writes without locks: the numbers steer load balancing and
are allowed to be approximate (a lost increment under a race only skews one pick).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

#: Default decay window of the peak-EWMA latency estimate (seconds), as Finagle/Linkerd.
DEFAULT_DECAY_TIME = 10.0

# Finagle's trick: a host with requests in flight but no latency sample yet is treated as
# very expensive, so a new host gets one probe request at a time until it has answered.
_PENALTY = 1e12


class EndpointState:
    """Mutable, approximate counters of one endpoint.

    ``active_requests`` is maintained by the caller (``on_start``/``on_finish``);
    ``ewma_latency`` (seconds) and ``last_update`` (the caller's monotonic clock) feed
    the peak-EWMA policy via :meth:`observe`.
    """

    __slots__ = ("active_requests", "address", "decay_time", "ewma_latency", "last_update")

    def __init__(self, address: str, *, decay_time: float = DEFAULT_DECAY_TIME) -> None:
        self.address = address
        self.active_requests = 0
        self.ewma_latency = 0.0
        self.last_update: float | None = None
        self.decay_time = decay_time

    def on_start(self) -> None:
        """A request to this endpoint started."""
        self.active_requests += 1

    def on_finish(self, latency_s: float | None = None, now: float | None = None) -> None:
        """A request finished; record its latency when both values are given."""
        self.active_requests = max(0, self.active_requests - 1)
        if latency_s is not None and now is not None:
            self.observe(latency_s, now)

    def observe(self, latency_s: float, now: float) -> None:
        """Fold one latency sample into the peak-sensitive EWMA.

        A sample above the estimate replaces it at once (the "peak"); lower samples are
        averaged in with a weight that grows with the time since the previous sample.
        """
        last = self.last_update
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
        """Peak-EWMA cost: latency * (in-flight + 1), with Finagle's penalty for new hosts."""
        active = self.active_requests
        latency = self.latency_estimate(now)
        if latency == 0.0 and active > 0:
            return _PENALTY + active
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

    __slots__ = ("_states", "decay_time")

    def __init__(self, *, decay_time: float = DEFAULT_DECAY_TIME) -> None:
        self._states: dict[str, EndpointState] = {}
        self.decay_time = decay_time

    def get_or_create(self, address: str) -> EndpointState:
        state = self._states.get(address)
        if state is None:
            state = self._states.setdefault(
                address, EndpointState(address, decay_time=self.decay_time)
            )
        return state

    def set_decay_time(self, decay_time: float) -> None:
        """Use ``decay_time`` (the cluster's peak-EWMA setting) for all endpoints."""
        self.decay_time = decay_time
        for state in list(self._states.values()):
            state.decay_time = decay_time

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
