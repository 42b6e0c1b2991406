"""The OpenTelemetry SDK is an extra: pymesh needs only the API, and never imports the SDK."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import requires


def _by_extra() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for req in requires("pymesh") or []:
        name = re.split(r"[<>=\[; ]", req, maxsplit=1)[0]
        extra = re.search(r"extra == ['\"](\w+)['\"]", req)
        out.setdefault(extra[1] if extra else "", set()).add(name)
    return out


def test_the_sdk_is_the_otel_extra_and_the_api_a_hard_dependency() -> None:
    deps = _by_extra()
    assert "opentelemetry-api" in deps[""]
    assert "opentelemetry-sdk" not in deps[""]
    assert deps["otel"] == {"opentelemetry-sdk"}
    assert "opentelemetry-sdk" in deps["test"]


def test_importing_and_using_pymesh_never_imports_the_sdk() -> None:
    # A fresh interpreter: this test process has the SDK loaded by other tests.
    code = (
        "import sys, pymesh, pymesh.grpc, pymesh.telemetry, pymesh._admin\n"
        "from pymesh.telemetry import instruments, tracer\n"
        "assert tracer() is None and instruments() is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
