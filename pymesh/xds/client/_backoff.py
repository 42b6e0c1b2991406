"""Jittered exponential backoff for ADS stream retries (gRPC's connection-backoff spec).

The curve is tenacity's ``wait_exponential`` (base × multiplier^(n-1), capped); gRPC's
spec adds a ±20 % jitter on top, which tenacity's strategies (full or additive jitter)
do not express, so it is applied here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import tenacity


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
    _wait: tenacity.wait_exponential = field(init=False, repr=False)
    _state: tenacity.RetryCallState = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._wait = tenacity.wait_exponential(
            multiplier=self.base, exp_base=self.multiplier, max=self.maximum
        )
        # The only thing tenacity's wait reads from a retry state is the attempt number.
        self._state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        self.reset()

    def next_delay(self) -> float:
        delay = self._wait(self._state) * (1 + self.rng.uniform(-self.jitter, self.jitter))
        self._state.attempt_number += 1
        return max(0.0, delay)

    def reset(self) -> None:
        self._state.attempt_number = 1
