"""Which tracer and meter pymesh uses, and whether telemetry is on at all.

pymesh uses the application's global OpenTelemetry providers unless :func:`configure`
names others. With only the API installed (or no SDK provider set) the global provider
is a proxy/no-op one; we detect that once per provider object and then skip every span
and metric call, so the request path pays one identity check.

That check reads the API's private globals ``opentelemetry.trace._TRACER_PROVIDER`` and
``opentelemetry.metrics._internal._METER_PROVIDER``: the public getters do the same
read but, while no provider is set, also look up ``os.environ`` on every call (measured:
~1.4 µs for the two getters against ~0.08 µs for the two reads, per request). No public
API exposes "the provider currently set" without that cost, so the private read stays,
behind an import-time guard (:data:`PRIVATE_GLOBALS_OK`): when a new opentelemetry-api
release moves or changes those globals, pymesh falls back to the public getters (correct,
a little slower) and ``tests/telemetry/test_otel_private_api.py`` fails loudly.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

try:
    from opentelemetry.metrics import _internal as _metrics_internal
except ImportError:  # a release without it: the guard below turns the fast path off
    _metrics_internal = ModuleType("opentelemetry.metrics._internal (missing)")

if TYPE_CHECKING:
    from pymesh.telemetry._metrics import Instruments

_NOOP_TRACER_PROVIDERS = (trace.NoOpTracerProvider, trace.ProxyTracerProvider)
_NOOP_METER_PROVIDERS = (metrics.NoOpMeterProvider,)


def _private_globals_look_right() -> bool:
    """The import-time guard: both private globals exist and hold None or a provider."""
    for module, attr, kind in (
        (trace, "_TRACER_PROVIDER", trace.TracerProvider),
        (_metrics_internal, "_METER_PROVIDER", metrics.MeterProvider),
    ):
        if not hasattr(module, attr):
            return False
        value = getattr(module, attr)
        if value is not None and not isinstance(value, kind):
            return False
    return True


#: True when opentelemetry-api's private provider globals are where and what this module
#: expects; False makes every lookup use the public getters instead.
PRIVATE_GLOBALS_OK = _private_globals_look_right()

_tracer_provider: trace.TracerProvider | None = None  # None: the global one
_meter_provider: metrics.MeterProvider | None = None


class _Cached:
    """The last provider object seen and what it gave (None when it is a no-op)."""

    __slots__ = ("provider", "unset", "value")

    def __init__(self) -> None:
        self.provider: object = object()  # matches nothing: resolved on first use
        self.value: object = None
        self.unset: object = None  # what the API's getter returns while no global is set


_tracer_cache = _Cached()
_meter_cache = _Cached()


def configure(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> None:
    """Use these providers instead of the global ones (None: back to the global one).

    Useful in tests and when an application keeps several providers; most applications
    set the global providers and never call this.
    """
    global _tracer_provider, _meter_provider
    _tracer_provider = tracer_provider
    _meter_provider = meter_provider


def _current(
    override: object, module: object, attr: str, cache: _Cached, get: Any, off: Any
) -> object:
    """The provider in effect, cheaply: the API's getters look up os.environ on every
    call while no global provider is set, so read the module's global and call the getter
    only until one is set (it also installs a provider named by OTEL_PYTHON_*_PROVIDER)."""
    if override is not None:
        return override
    if not PRIVATE_GLOBALS_OK:
        try:
            return get()
        except Exception:  # as below: a provider named in the environment is missing
            if cache.unset is None:
                cache.unset = off()
            return cache.unset
    provider = getattr(module, attr, None)
    if provider is not None:
        return provider
    if cache.unset is None:
        try:
            cache.unset = get()
        except Exception:
            # OTEL_PYTHON_*_PROVIDER names no installed provider (the API has logged
            # why): telemetry stays off instead of failing every request and call.
            cache.unset = off()
    return cache.unset


#: The provider sources (our overrides, the API's globals) as they were when telemetry
#: was last found off; while they are unchanged it is still off (see :func:`off`).
_quiet: tuple[object, object, object, object] | None = None


def _sources_private() -> tuple[object, object, object, object]:
    return (
        _tracer_provider,
        _meter_provider,
        getattr(trace, "_TRACER_PROVIDER", None),
        getattr(_metrics_internal, "_METER_PROVIDER", None),
    )


def _sources_public() -> tuple[object, object, object, object]:
    """The same sources through the public getters (the fallback; see the module doc)."""
    return (
        _tracer_provider,
        _meter_provider,
        trace.get_tracer_provider(),
        metrics.get_meter_provider(),
    )


_sources = _sources_private if PRIVATE_GLOBALS_OK else _sources_public


def off() -> bool:
    """Whether neither tracing nor metrics records anything: True only while every
    provider source is as :func:`tracer` and :func:`instruments` last found it, both off.
    The first check every request and call makes, so it is four identity checks (the
    private sources of :func:`_sources_private` read in place: no frame, no tuple; the
    import-time guard made sure the attributes exist)."""
    quiet = _quiet
    if quiet is None:
        return False
    if PRIVATE_GLOBALS_OK:
        return (
            quiet[2] is trace._TRACER_PROVIDER
            and quiet[3] is _metrics_internal._METER_PROVIDER
            and quiet[0] is _tracer_provider
            and quiet[1] is _meter_provider
        )
    return quiet == _sources()


def resolve() -> tuple[trace.Tracer | None, Instruments | None]:
    """The tracer and instruments in effect (each None when off); remembers when both
    are off so that :func:`off` answers the next request cheaply."""
    global _quiet
    sources = _sources()
    t = tracer()
    inst = instruments()
    _quiet = sources if t is None and inst is None else None
    return t, inst


def tracer() -> trace.Tracer | None:
    """The pymesh tracer, or None when no SDK tracer provider is configured."""
    cache = _tracer_cache
    provider = _current(
        _tracer_provider,
        trace,
        "_TRACER_PROVIDER",
        cache,
        trace.get_tracer_provider,
        trace.NoOpTracerProvider,
    )
    if provider is not cache.provider:
        # The global provider object changes when the application installs its SDK
        # provider (the proxy is replaced), so an identity check is a cheap re-check.
        cache.value = (
            None
            if isinstance(provider, _NOOP_TRACER_PROVIDERS)
            else provider.get_tracer("pymesh", _version())  # type: ignore[attr-defined]
        )
        cache.provider = provider
    return cache.value  # type: ignore[return-value]


def instruments() -> Instruments | None:
    """pymesh's metric instruments, or None when no SDK meter provider is configured."""
    cache = _meter_cache
    provider = _current(
        _meter_provider,
        _metrics_internal,
        "_METER_PROVIDER",
        cache,
        metrics.get_meter_provider,
        metrics.NoOpMeterProvider,
    )
    if provider is not cache.provider:
        from pymesh.telemetry._metrics import Instruments

        # The API's global default is a private proxy class: anything that is not an SDK
        # (or third-party) provider records nothing, so treat it as off.
        off = isinstance(provider, _NOOP_METER_PROVIDERS) or type(provider).__module__.startswith(
            "opentelemetry.metrics"
        )
        cache.value = (
            None if off else Instruments(provider.get_meter("pymesh", _version()))  # type: ignore[attr-defined]
        )
        cache.provider = provider
    return cache.value  # type: ignore[return-value]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pymesh")
    except Exception:  # not installed as a distribution (a source checkout)
        return "0"
