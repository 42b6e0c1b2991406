"""Which providers pymesh uses: a misconfigured environment must not break calls."""

from __future__ import annotations

import os
import subprocess
import sys


def test_unknown_provider_in_the_environment_leaves_telemetry_off() -> None:
    """OTEL_PYTHON_*_PROVIDER naming nothing installed: the API raises from its getter;
    pymesh treats that as telemetry off (once) instead of failing every call."""
    script = """
from pymesh import telemetry
from pymesh.telemetry._rpc import observe_rpc
for _ in range(2):
    assert telemetry.tracer() is None
    assert telemetry.instruments() is None
    assert observe_rpc("xds:///a:1", "/p.S/M", "a:1", "a:1") is None
print("ok")
"""
    env = {
        **os.environ,
        "OTEL_PYTHON_TRACER_PROVIDER": "no_such_provider",
        "OTEL_PYTHON_METER_PROVIDER": "no_such_provider",
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_telemetry_found_off_turns_on_when_the_application_installs_a_provider() -> None:
    """The request path remembers "off" (pymesh.telemetry._providers.off); a global SDK
    provider installed later, or one given to configure(), must still be seen at once."""
    script = """
import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from pymesh import telemetry
from pymesh.telemetry._providers import off
from pymesh.telemetry._request import observe_request
url = httpx.URL("http://svc:80/")
assert observe_request("GET", url, "svc:80") is None
assert off()
provider = TracerProvider()
telemetry.configure(tracer_provider=provider)
assert not off()
assert observe_request("GET", url, "svc:80") is not None
telemetry.configure()
assert observe_request("GET", url, "svc:80") is None and off()
trace.set_tracer_provider(TracerProvider())
assert not off()
assert observe_request("GET", url, "svc:80") is not None
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
