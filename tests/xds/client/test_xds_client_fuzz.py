"""Mutated xDS resources of all four types through pymesh's real control plane and the
real xDS client: every response is ACKed or NACKed, a NACK names the resource and the
field, NACKed resources keep their last good value, a rejected response deletes
nothing, and accepted route tables route random requests without raising.

hypothesis chooses the seeds (derandomized: the same examples on every run); the
mutator is pymesh.testing._proto_fuzz, which benchmarks/xds_fuzz.py runs at 100 000+
resources.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymesh.bootstrap import load_bootstrap
from pymesh.server import ControlPlane
from pymesh.testing._proto_fuzz import TYPES, FuzzRun
from pymesh.xds.client import Backoff, XdsClient


@pytest.fixture(scope="module")
def fuzz() -> Iterator[FuzzRun]:
    with ControlPlane(port=0) as cp:
        bootstrap = load_bootstrap(
            {
                "xds_servers": [
                    {"server_uri": cp.address, "channel_creds": [{"type": "insecure"}]}
                ],
                "node": {"id": "fuzz"},
            }
        )
        with XdsClient(bootstrap, backoff=Backoff(base=0.2, maximum=1.0)) as client:
            run = FuzzRun(cp, client, "fuzz")
            run.subscribe()
            yield run


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(type_index=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_mutated_resources_through_the_real_client(
    fuzz: FuzzRun, type_index: int, seed: int
) -> None:
    answer = fuzz.round(TYPES[type_index], random.Random(seed))
    assert answer in ("ack", "nack", "skipped")


def test_the_fuzzing_reached_both_outcomes_and_the_client_still_works(fuzz: FuzzRun) -> None:
    # Runs after the property test (same module fixture): it must have exercised both
    # sides, or it proved nothing.
    for seed in range(40):
        fuzz.round(TYPES[seed % 4], random.Random(seed))
    stats = fuzz.stats
    assert stats.acks > 10 and stats.nacks > 10, stats
    assert stats.routed > 0
    assert fuzz.client.stats.connected == 1 and fuzz.client.stats.stream_failures == 0
