"""ClusterRuntime: config updates and ejection changes never deadlock each other."""

from __future__ import annotations

import dataclasses
import random
import threading
from typing import Any

import pytest

from pymesh._upstream import ClusterRuntime
from pymesh.resilience import Outcome
from pymesh.xds.dependencies import ClusterConfig
from pymesh.xds.resources.cluster import Cluster, OutlierDetection
from pymesh.xds.resources.endpoint import (
    ClusterLoadAssignment,
    Endpoint,
    Locality,
    LocalityEndpoints,
)


def _config(*ports: int) -> ClusterConfig:
    cla = ClusterLoadAssignment(
        "c",
        (LocalityEndpoints(Locality(), tuple(Endpoint("127.0.0.1", p) for p in ports)),),
    )
    return ClusterConfig("c", Cluster("c", outlier_detection=OutlierDetection()), cla)


def test_update_does_not_wait_for_the_detector_while_holding_its_own_lock() -> None:
    """The detector calls back into the runtime (an ejection change) while holding its
    lock; an xDS update running at that moment must not hold the runtime's lock while
    it waits for the detector's (the opposite order deadlocks)."""
    rt = ClusterRuntime("c", random.Random(1))
    rt.update(_config(1000, 1001))
    outlier = rt.outlier
    assert outlier is not None
    updated = threading.Event()
    with outlier._lock:  # as OutlierDetector.record does around on_change
        worker = threading.Thread(
            target=lambda: (rt.update(_config(1000, 1001, 1002)), updated.set()), daemon=True
        )
        worker.start()
        # The update is now blocked on the detector's lock; the callback must still get
        # the runtime's lock.
        callback = threading.Thread(target=rt._on_ejected, args=(frozenset(),), daemon=True)
        callback.start()
        callback.join(10)
        assert not callback.is_alive(), "ejection callback deadlocked against an update"
    assert updated.wait(10)
    assert rt.addresses == {"127.0.0.1:1000", "127.0.0.1:1001", "127.0.0.1:1002"}
    assert rt.picker is not None


def test_slow_start_times_endpoints_from_when_they_joined_and_the_sweep_rebuilds() -> None:
    """Slow start, as Envoy: every endpoint ramps from when it joined (the first
    assignment's too); a changed Cluster restarts every window; the sweeper thread's
    tick rebuilds the picker once the weights have moved on."""
    from pymesh.xds.resources.cluster import LbPolicy, SlowStart

    def config(*ports: int, window: float = 60.0) -> ClusterConfig:
        cla = ClusterLoadAssignment(
            "c",
            (LocalityEndpoints(Locality(), tuple(Endpoint("127.0.0.1", p) for p in ports)),),
        )
        policy = LbPolicy(slow_start=SlowStart(window))
        return ClusterConfig("c", Cluster("c", lb_policy=policy), cla)

    rt = ClusterRuntime("c", random.Random(1))
    rt.update(config(1000, 1001))
    assert rt.joined is not None and set(rt.joined) == {"127.0.0.1:1000", "127.0.0.1:1001"}
    first_joined = rt.joined["127.0.0.1:1000"]
    rt.update(config(1000, 1001, 1002))
    assert rt.joined is not None and rt.joined["127.0.0.1:1000"] == first_joined
    assert rt.joined["127.0.0.1:1002"] >= first_joined
    first = rt.picker
    assert first is not None and first.refresh_at > 0.0
    rt.sweep(first.refresh_at - 0.05)
    assert rt.picker is first  # not due yet
    rt.sweep(first.refresh_at)
    assert rt.picker is not first
    rt.update(config(1000, 1001))  # 1002 left: forgotten (back later, it is new again)
    assert set(rt.joined) == {"127.0.0.1:1000", "127.0.0.1:1001"}
    rt.joined = dict.fromkeys(rt.joined, -1.0)  # long ago
    rt.update(config(1000, 1001))  # the same Cluster again: nothing restarts
    assert set(rt.joined.values()) == {-1.0}
    rt.update(config(1000, 1001, window=30.0))  # a changed Cluster: every window restarts
    assert all(t >= first_joined for t in rt.joined.values())


def test_an_endpoint_shows_as_ejected_only_once_the_pickers_leave_it_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ClusterRuntime.ejected`` (what config_dump shows) moves on after the pickers are
    rebuilt without the host: while they are being built, a reader must still see the
    host as not ejected, because requests can still be picked onto it."""
    import pymesh._upstream as upstream

    rt = ClusterRuntime("c", random.Random(1))
    cc = _config(1000, 1001, 1002)
    assert cc.cluster is not None
    od = OutlierDetection(max_ejection_percent=100)
    rt.update(
        dataclasses.replace(cc, cluster=dataclasses.replace(cc.cluster, outlier_detection=od))
    )
    outlier = rt.outlier
    assert outlier is not None and rt.ejected == frozenset()
    seen_while_building: list[frozenset[str]] = []
    build = upstream.build_picker

    def observed(*args: Any, **kwargs: Any) -> Any:
        seen_while_building.append(rt.ejected)
        return build(*args, **kwargs)

    monkeypatch.setattr(upstream, "build_picker", observed)
    failure = Outcome.response(503)
    for _ in range(outlier.config.consecutive_5xx):  # Envoy's default: 5 in a row
        outlier.record("127.0.0.1:1001", failure)
    assert seen_while_building == [frozenset()]
    assert rt.ejected == {"127.0.0.1:1001"}
    assert rt.picker is not None
    picks = [rt.picker.pick() for _ in range(60)]
    assert {e.address for e in picks if e is not None} == {"127.0.0.1:1000", "127.0.0.1:1002"}
    assert None not in picks
