"""Weighted cluster pick: value % total_weight, then the cumulative ranges (Envoy)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from routing_helpers import match, req, route, table

from pymesh.errors import ResourceInvalid
from pymesh.xds.resources.route import ClusterWeight


def weighted(*weights: tuple[str, int]) -> object:
    cws = tuple(ClusterWeight(n, w) for n, w in weights)
    return table(
        route(match(), cluster=None, weighted_clusters=cws, total_weight=sum(w for _, w in weights))  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("value", "cluster"),
    [
        (0, "a"),
        (19, "a"),
        (20, "b"),
        (49, "b"),
        (50, "c"),
        (99, "c"),
        (100, "a"),  # wraps: value % 100
        (120, "b"),
        (2**64 - 1, "a"),  # (2**64 - 1) % 100 == 15
        (2**64 - 51, "c"),  # ... % 100 == 65
    ],
)
def test_boundaries(value: int, cluster: str) -> None:
    t = weighted(("a", 20), ("b", 30), ("c", 50))
    d = t.select(req(), value)  # type: ignore[attr-defined]
    assert d.cluster == cluster
    assert d.cluster_weight is not None and d.cluster_weight.name == cluster


def test_zero_weight_clusters_are_never_picked() -> None:
    t = weighted(("zero1", 0), ("a", 1), ("zero2", 0), ("b", 1), ("zero3", 0))
    picked = {t.select(req(), v).cluster for v in range(100)}  # type: ignore[attr-defined]
    assert picked == {"a", "b"}
    assert t.select(req(), 0).cluster == "a"  # type: ignore[attr-defined]
    assert t.select(req(), 1).cluster == "b"  # type: ignore[attr-defined]


def test_exact_distribution_over_one_period() -> None:
    t = weighted(("a", 1), ("b", 2), ("c", 7))
    counts = Counter(t.select(req(), v).cluster for v in range(1000, 1010))  # type: ignore[attr-defined]
    assert counts == {"a": 1, "b": 2, "c": 7}


def test_random_distribution_is_close_to_weights() -> None:
    rng = random.Random(1234)
    t = weighted(("a", 10), ("b", 30), ("c", 60))
    n = 20_000
    counts = Counter(t.select(req(), rng.getrandbits(64)).cluster for _ in range(n))  # type: ignore[attr-defined]
    for name, share in (("a", 0.1), ("b", 0.3), ("c", 0.6)):
        assert abs(counts[name] / n - share) < 0.02


def test_sum_of_weights_zero_is_rejected() -> None:
    with pytest.raises(ResourceInvalid):
        weighted(("a", 0), ("b", 0))
