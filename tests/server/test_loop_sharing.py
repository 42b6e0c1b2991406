"""grpc.aio's process-wide completion queue and the control plane's shared loop: a Mesh
(whose xDS client has its own loop) and control planes stopped in either order leave no
traceback behind, and the loop's error handler keeps grpc's queue draining."""

from __future__ import annotations

import asyncio
import errno
import logging
import subprocess
import sys
from typing import Any

import pytest

from pymesh.server._runner import _on_loop_error

SCRIPT = """
import sys
from pymesh import Mesh
from pymesh.server import ControlPlane
from pymesh.testing import EchoBackend, bootstrap_for, push_mesh

with EchoBackend("v1") as b:
    for i in range(int(sys.argv[1])):
        cp = ControlPlane().start()
        mesh = Mesh(bootstrap=bootstrap_for(cp))
        push_mesh(cp, mesh, {"services": {"echo": {"port": 8080, "endpoints": [b.address]}}})
        if i % 2:
            mesh.close()
            cp.stop()
        else:
            cp.stop()
            mesh.close()
print("done")
"""


def test_meshes_and_control_planes_come_and_go_without_tracebacks() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, "12"], capture_output=True, text=True, timeout=110
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("done")
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]


class _Handle:
    def __init__(self, calls: list[str]) -> None:
        self._callback = calls.append
        self._args = ("drained",)


def _context(exc: BaseException, calls: list[str]) -> dict[str, Any]:
    return {"message": "Exception in callback", "exception": exc, "handle": _Handle(calls)}


def test_a_completion_for_a_closed_loop_is_dropped_and_draining_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        calls: list[str] = []
        with caplog.at_level(logging.ERROR):
            _on_loop_error(loop, _context(RuntimeError("Event loop is closed"), calls))
            _on_loop_error(loop, _context(OSError(errno.EBADF, "Bad file descriptor"), calls))
        loop.run_until_complete(asyncio.sleep(0))
        assert calls == ["drained"]  # re-run once for the closed-loop case, not for EBADF
        assert caplog.records == []
        with caplog.at_level(logging.ERROR):
            _on_loop_error(loop, _context(ValueError("a real bug"), calls))
        assert [r.levelno for r in caplog.records] == [logging.ERROR]  # not swallowed
    finally:
        loop.close()
