"""ClusterRuntime: config updates and ejection changes never deadlock each other."""

from __future__ import annotations

import random
import threading

from pymesh._upstream import ClusterRuntime
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
