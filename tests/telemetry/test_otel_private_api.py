"""pymesh reads two private globals of opentelemetry-api (see pymesh.telemetry._providers).

These tests fail loudly when a new opentelemetry-api release moves or changes them, and
show that the fallback to the public getters keeps telemetry working meanwhile.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

from pymesh.telemetry import _providers


def _run(script: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok", out.stdout


def test_the_import_time_guard_accepts_this_opentelemetry_api() -> None:
    assert _providers.PRIVATE_GLOBALS_OK, (
        f"opentelemetry-api {version('opentelemetry-api')} no longer has "
        "opentelemetry.trace._TRACER_PROVIDER / opentelemetry.metrics._internal."
        "_METER_PROVIDER as pymesh expects: pymesh now uses the public getters (correct, "
        "~1.4 µs slower per request). Update pymesh/telemetry/_providers.py."
    )
    assert _providers._sources is _providers._sources_private


def test_the_private_globals_are_what_the_public_getters_return() -> None:
    """Unset: the globals are None and the getters return the API's proxies (whose
    module the meter check relies on). Set: both name the application's providers."""
    _run(
        """
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from pymesh.telemetry._providers import _sources_private, _sources_public
assert _sources_private()[2:] == (None, None)
tp, mp = _sources_public()[2:]
assert isinstance(tp, trace.ProxyTracerProvider)
assert type(mp).__module__.startswith("opentelemetry.metrics"), type(mp)
tracer_provider, meter_provider = TracerProvider(), MeterProvider()
trace.set_tracer_provider(tracer_provider)
metrics.set_meter_provider(meter_provider)
assert _sources_private()[2:] == (tracer_provider, meter_provider)
assert _sources_public()[2:] == (tracer_provider, meter_provider)
print("ok")
"""
    )


def test_the_public_getter_fallback_finds_providers_and_off() -> None:
    """With the guard failed (simulated), telemetry is found off, then on once the
    application installs providers, exactly as on the fast path."""
    _run(
        """
import httpx
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from pymesh.telemetry import _providers
_providers.PRIVATE_GLOBALS_OK = False
_providers._sources = _providers._sources_public
from pymesh import telemetry
from pymesh.telemetry._providers import off
from pymesh.telemetry._request import observe_request
url = httpx.URL("http://svc:80/")
assert observe_request("GET", url, "svc:80") is None and off()
assert telemetry.tracer() is None and telemetry.instruments() is None
trace.set_tracer_provider(TracerProvider())
metrics.set_meter_provider(MeterProvider())
assert not off()
assert telemetry.tracer() is not None and telemetry.instruments() is not None
assert observe_request("GET", url, "svc:80") is not None
print("ok")
"""
    )
