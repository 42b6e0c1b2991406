"""The ADS reconnect back-off: gRPC's connection-backoff curve with its jitter."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pymesh.xds.client import Backoff


@given(seed=st.integers(0, 2**32 - 1), attempts=st.integers(1, 40))
def test_each_delay_is_the_curve_within_its_jitter(seed: int, attempts: int) -> None:
    b = Backoff(rng=random.Random(seed))
    for n in range(1, attempts + 1):
        nominal = min(1.0 * 1.6 ** (n - 1), 120.0)
        assert nominal * 0.8 <= b.next_delay() <= nominal * 1.2


def test_reset_starts_the_curve_again_and_a_custom_curve_is_honoured() -> None:
    b = Backoff(base=0.2, multiplier=2.0, maximum=1.0, jitter=0.0)
    assert [b.next_delay() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next_delay() == 0.2
