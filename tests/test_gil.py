"""pymesh._gil.short_turns: the switch interval is short while the xDS thread applies a
response, and the application's own interval is what stays afterwards."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import pymesh
from pymesh._gil import TURN, short_turns
from pymesh.server import ControlPlane
from pymesh.testing import EchoBackend, bootstrap_for, push_mesh
from pymesh.xds.client import EDS


@pytest.fixture
def interval() -> Iterator[float]:
    """A known switch interval for the test, the process's own put back after it."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield 0.005
    sys.setswitchinterval(before)


def test_short_inside_and_put_back_after(interval: float) -> None:
    with short_turns():
        assert sys.getswitchinterval() == TURN
    assert sys.getswitchinterval() == interval


def test_the_gil_is_released_once_when_the_interval_is_lowered(
    interval: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread already waiting for the GIL waits out the interval it began with; the
    block lets it have the GIL at once when it lowers the interval, and only then (not
    when nested, not when the interval is already short)."""
    import pymesh._gil as gil

    releases: list[float] = []
    monkeypatch.setattr(gil.time, "sleep", releases.append)
    with short_turns():
        assert releases == [0]
        with short_turns():
            pass
    assert releases == [0]
    sys.setswitchinterval(TURN / 2)
    with short_turns():
        pass
    assert releases == [0]


def test_put_back_after_an_error(interval: float) -> None:
    with pytest.raises(RuntimeError), short_turns():
        raise RuntimeError("boom")
    assert sys.getswitchinterval() == interval


def test_an_interval_the_application_sets_meanwhile_is_kept(interval: float) -> None:
    with short_turns():
        sys.setswitchinterval(0.002)
    assert sys.getswitchinterval() == 0.002


def test_a_shorter_interval_of_the_applications_is_left_alone() -> None:
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.0001)
        mine = sys.getswitchinterval()  # as CPython keeps it (whole microseconds)
        with short_turns():
            assert sys.getswitchinterval() == mine
        assert sys.getswitchinterval() == mine
    finally:
        sys.setswitchinterval(before)


def test_overlapping_blocks_in_two_threads_put_it_back_once_both_end(interval: float) -> None:
    inside, release = threading.Event(), threading.Event()
    seen: list[float] = []

    def other() -> None:
        with short_turns():
            inside.set()
            assert release.wait(30)
        seen.append(sys.getswitchinterval())

    with short_turns():
        t = threading.Thread(target=other)
        t.start()
        assert inside.wait(30)
    # The first block ended, the other thread's still runs: still short.
    assert sys.getswitchinterval() == TURN
    release.set()
    t.join(30)
    assert seen == [interval]
    assert sys.getswitchinterval() == interval


def test_the_xds_thread_applies_a_response_in_short_turns(interval: float) -> None:
    seen: list[float] = []
    applied = threading.Event()

    class Watcher:
        def on_resource(self, name: str, value: Any) -> None:
            if len(value.endpoints) == 2:
                seen.append(sys.getswitchinterval())
                applied.set()

        def on_error(self, name: str, error: Any) -> None: ...

        def on_does_not_exist(self, name: str) -> None: ...

    with (
        EchoBackend("a") as a,
        EchoBackend("b") as b,
        ControlPlane() as cp,
        pymesh.Mesh(bootstrap=bootstrap_for(cp)) as mesh,
    ):
        services = {"echo": {"port": 8080, "endpoints": [a.address]}}
        push_mesh(cp, mesh, {"services": services})
        cluster = next(c.cluster for c in mesh.clusters().values() if c.cluster is not None)
        mesh._client.watch(EDS, cluster.eds_resource_name, Watcher())
        services["echo"]["endpoints"] = [a.address, b.address]
        push_mesh(cp, mesh, {"services": services})
        assert applied.wait(30)
        # Whatever the xDS loop runs next runs after that response's handling ended.
        after: list[float] = []
        ran = threading.Event()

        def later() -> None:
            after.append(sys.getswitchinterval())
            ran.set()

        mesh._client.default.submit(later)
        assert ran.wait(30)
        assert seen == [TURN]
        assert after == [interval]
