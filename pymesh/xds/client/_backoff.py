"""Jittered exponential backoff for ADS stream retries (gRPC's connection-backoff spec)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """gRPC connection backoff: 1 s base, times 1.6, 120 s cap, 20 % jitter.

    ``next_delay()`` returns the delay before the next attempt and grows the interval;
    ``reset()`` goes back to ``base`` (called once a stream has received a response).
    """

    base: float = 1.0
    multiplier: float = 1.6
    maximum: float = 120.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    _current: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._current = self.base

    def next_delay(self) -> float:
        delay = self._current * (1 + self.rng.uniform(-self.jitter, self.jitter))
        self._current = min(self._current * self.multiplier, self.maximum)
        return max(0.0, delay)

    def reset(self) -> None:
        self._current = self.base
