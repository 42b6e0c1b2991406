"""Real processes for the chaos tests: ``pymesh serve`` and echo backends as children
that a test can SIGKILL, plus a bounded traffic loop that counts every failure.

Everything binds 127.0.0.1; ports come from the OS (port 0) and are reused only to
restart the same process on the port it had.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

#: Generous: a loaded 2-core CI machine starts a Python child in well under this.
START_TIMEOUT = 60.0

_ECHO = """
import sys, threading
from pymesh.testing import EchoBackend
b = EchoBackend(sys.argv[1]).start()
print(b.port, flush=True)
threading.Event().wait()
"""


class Child:
    """A child process whose first stdout line (matched by ``ready``) says it is up."""

    def __init__(self, args: list[str], ready: str) -> None:
        self.args = args
        self._ready = re.compile(ready)
        self.proc: subprocess.Popen[str] | None = None
        self.match: re.Match[str] | None = None
        self.output: list[str] = []

    def start(self) -> Child:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        got = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if self.match is None:
                    m = self._ready.search(line)
                    if m is not None:
                        self.match = m
                        got.set()
            got.set()

        self.match = None
        threading.Thread(target=pump, daemon=True, name="chaos-child-out").start()
        if not got.wait(START_TIMEOUT) or self.match is None:
            self.kill()
            raise AssertionError(f"{self.args} did not start: {''.join(self.output)}")
        return self

    def kill(self) -> None:
        """SIGKILL: no goodbye on any socket, as a crashed pod."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def control_plane(mesh_file: Path, port: int = 0) -> Child:
    """``pymesh serve mesh_file --port port`` (``.match[1]`` is host:port)."""
    args = [sys.executable, "-m", "pymesh", "serve", str(mesh_file), "--port", str(port)]
    return Child(args, r"serving .* on (\S+:\d+)").start()


def echo_backend(name: str) -> Child:
    """An EchoBackend in its own process (``int(.match[1])`` is its port)."""
    return Child([sys.executable, "-c", _ECHO, name], r"^(\d+)$").start()


def write_mesh(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


class Traffic:
    """``threads`` loops calling ``send()`` until stopped (bounded by ``limit``
    calls each); every exception or non-2xx answer is counted as a failure."""

    def __init__(self, send: Callable[[], Any], threads: int = 2, limit: int = 100_000) -> None:
        self._send = send
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.ok = 0
        self.failures: Counter[str] = Counter()
        self.answered_by: Counter[str] = Counter()
        self._progress = threading.Condition(self._lock)
        self._threads = [
            threading.Thread(target=self._loop, args=(limit,), daemon=True, name=f"traffic-{i}")
            for i in range(threads)
        ]

    def _loop(self, limit: int) -> None:
        for _ in range(limit):
            if self._stop.is_set():
                return
            try:
                resp = self._send()
                failed = None if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"
                backend = resp.headers.get("x-backend", "?")
            except Exception as e:
                failed, backend = f"{type(e).__name__}: {e}", ""
            with self._lock:
                if failed is None:
                    self.ok += 1
                    self.answered_by[backend] += 1
                else:
                    self.failures[failed] += 1
                self._progress.notify_all()

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def wait_for(self, more: int, timeout: float = 60.0) -> None:
        """Block until ``more`` further requests succeeded."""
        with self._lock:
            target = self.ok + more
            ok = self._progress.wait_for(lambda: self.ok >= target or self.failures, timeout)
        assert ok and not self.failures, f"traffic stalled or failed: {self.failures}"
