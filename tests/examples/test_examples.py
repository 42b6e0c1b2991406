"""Every example runs on its own, on loopback, exits 0 and prints what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=EXAMPLES.parent,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_httpx_sync() -> None:
    out = _run(str(EXAMPLES / "httpx_sync.py"))
    m = re.search(r"200 requests: \{'v1': (\d+), 'v2': (\d+)\}", out)
    assert m, out
    assert int(m[1]) + int(m[2]) == 200 and 5 <= int(m[2]) <= 45, out
    assert "end-user: jason -> v3" in out
    assert "connected=True" in out


def test_httpx_async() -> None:
    out = _run(str(EXAMPLES / "httpx_async.py"))
    m = re.search(r"100 concurrent requests: \{'blue': (\d+), 'green': (\d+)\}", out)
    assert m and int(m[1]) + int(m[2]) == 100 and 25 <= int(m[1]) <= 75, out
    assert "all ok: True" in out


def test_grpc_stub() -> None:
    out = _run(str(EXAMPLES / "grpc_stub.py"))
    m = re.search(r"100 calls: \{'echo-v1': (\d+), 'echo-v2': (\d+)\}", out)
    assert m and int(m[1]) + int(m[2]) == 100 and 5 <= int(m[2]) <= 40, out
    assert "echoed: 'hi'" in out


def test_canary_serve_follows_file_edits() -> None:
    out = _run(str(EXAMPLES / "canary_serve.py"))
    shares = [int(s) for s in re.findall(r"\((\d+)% v2\)", out)]
    assert len(shares) == 3, out
    assert shares[0] <= 25 and 30 <= shares[1] <= 70 and shares[2] == 100, out
    assert out.count("pymesh: reloaded") == 2


def test_istio_bootstrap() -> None:
    out = _run(str(EXAMPLES / "istio_bootstrap.py"))
    assert "node id        sidecar~10.244.0.12~" in out
    assert "xDS server     unix:///etc/istio/proxy/XDS" in out
    assert "-> 200 from reviews-v1" in out


@pytest.mark.timeout(120)
def test_fixtures_example_passes_under_pytest() -> None:
    out = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "fixtures_test.py"))
    assert re.search(r"\b2 passed\b", out), out
