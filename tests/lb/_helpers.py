"""Small builders for load-balancing tests."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable

from pymesh.lb import EndpointStates, Picker, build_picker
from pymesh.xds.resources.cluster import Cluster, LbPolicy
from pymesh.xds.resources.endpoint import (
    ClusterLoadAssignment,
    DropOverload,
    Endpoint,
    Locality,
    LocalityEndpoints,
)


def eps(prefix: str, n: int, **kw: object) -> tuple[Endpoint, ...]:
    """``n`` endpoints ``{prefix}.{i}:80`` (prefix like "10.0.0")."""
    return tuple(Endpoint(f"{prefix}.{i + 1}", 80, **kw) for i in range(n))  # type: ignore[arg-type]


def cla(
    *groups: tuple[Iterable[Endpoint], int] | tuple[Iterable[Endpoint], int, int | None, str],
    drops: tuple[DropOverload, ...] = (),
    factor: int = 140,
) -> ClusterLoadAssignment:
    """Groups are (endpoints, priority) or (endpoints, priority, locality_weight, zone)."""
    localities = []
    for g in groups:
        if len(g) == 2:
            endpoints, priority = g
            weight, zone = None, f"p{priority}"
        else:
            endpoints, priority, weight, zone = g
        localities.append(
            LocalityEndpoints(Locality("r", zone), tuple(endpoints), weight, priority)
        )
    return ClusterLoadAssignment("c", tuple(localities), drops, factor)


def picker(
    assignment: ClusterLoadAssignment,
    policy: str = "round_robin",
    *,
    seed: int = 1,
    states: EndpointStates | None = None,
    ejected: frozenset[str] = frozenset(),
    panic: float = 50.0,
    clock: Callable[[], float] = time.monotonic,
    **policy_kw: object,
) -> Picker:
    cluster = Cluster(
        "c",
        lb_policy=LbPolicy(name=policy, **policy_kw),  # type: ignore[arg-type]
        healthy_panic_threshold=panic,
    )
    return build_picker(
        cluster,
        assignment,
        states=states if states is not None else EndpointStates(),
        ejected=ejected,
        rng=random.Random(seed),
        clock=clock,
    )
