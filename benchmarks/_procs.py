"""What the benchmarks share: this process's memory, an echo backend in a process of its
own (so its threads do not compete for the measured process's GIL), and running a
benchmark's client mode in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

_ECHO = """
import sys
from pymesh.testing import EchoBackend
print(EchoBackend(sys.argv[1]).start().address, flush=True)
sys.stdin.read()  # until the parent closes our stdin (or kills us)
"""


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def echo_backend(name: str) -> tuple[subprocess.Popen[str], str]:
    """An EchoBackend named ``name`` in its own process: (the process, its address)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _ECHO, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def client_json(args: list[str], env: dict[str, str], timeout: float) -> Any:
    """Run ``python *args`` (a benchmark's own client mode, in a process of its own) and
    return the JSON value of the last line it prints."""
    out = subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
