"""Per-call telemetry for gRPC: one CLIENT span per logical RPC (OpenTelemetry RPC
semantic conventions plus pymesh's mesh attributes), one child span per attempt, W3C
trace context injected into each attempt's metadata, and gRFC A66's client metrics.

The mesh channels call :func:`observe_rpc`; it returns None when neither an SDK tracer
provider nor an SDK meter provider is configured, and the channel then skips every
other hook. The call span is created lazily (with the call's start time) when the call
is routed or fails, so a passthrough call (unknown listener) leaves no trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Setter

from pymesh.telemetry._call import CallObserver
from pymesh.telemetry._providers import off, resolve

if TYPE_CHECKING:
    import grpc

    from pymesh._upstream import ClusterRuntime
    from pymesh.telemetry._metrics import CallInstruments, Instruments

__all__ = ["RpcObserver", "observe_rpc"]

Metadata = Sequence[tuple[str, str | bytes]]


class _MetadataSetter(Setter[list[tuple[str, str]]]):
    """Writes propagated fields as gRPC metadata tuples (keys are lower-case already)."""

    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


_SETTER = _MetadataSetter()


def observe_rpc(target: str, method: str, listener: str, authority: str) -> RpcObserver | None:
    """Start observing one logical RPC, or None when telemetry is off.

    ``method`` is the call's path (``/package.Service/Method``), ``target`` the channel's
    (``xds:///name``) and ``authority`` the name in it.
    """
    if off():
        return None
    t, inst = resolve()
    if t is None and inst is None:
        return None
    return RpcObserver(t, inst, target, method, listener, authority)


def _split_host_port(address: str) -> tuple[str, int | None]:
    """``host:port`` / ``[v6]:port`` / ``host`` into host and port."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = address.rpartition(":")
        if not sep or ":" in host:  # no port, or a bare IPv6 address
            host, port = address, ""
    return host, int(port) if port.isdigit() else None


def _code_error(exc: BaseException) -> grpc.StatusCode | None:
    """The status of a grpc RpcError (sync ``grpc.Call`` or aio ``AioRpcError``)."""
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        value = code()
    except Exception:  # a bare grpc.RpcError that is no call
        return None
    return value if hasattr(value, "value") and hasattr(value, "name") else None


def retry_reason(code: grpc.StatusCode) -> str:
    """The ``retry_on`` name of a gRPC status (``unavailable``, ``resource-exhausted``)."""
    return str(code.name).lower().replace("_", "-")


class RpcObserver(CallObserver):
    """Spans and metrics of one gRPC call; handed from thread to thread, never shared."""

    __slots__ = ()

    # gRFC A72's attempt span attribute for the number of earlier attempts of the call.
    _RESEND_ATTRIBUTE = "previous-rpc-attempts"

    def __init__(
        self,
        t: trace.Tracer | None,
        inst: Instruments | None,
        target: str,
        method: str,
        listener: str,
        authority: str,
    ) -> None:
        full = method.lstrip("/")  # "package.Service/Method", the span name and grpc.method
        metric_attrs: dict[str, Any] = {"grpc.method": full, "grpc.target": target}
        span_attrs: dict[str, Any] | None = None
        if t is not None:
            service, _, name = full.rpartition("/")
            host, port = _split_host_port(authority)
            span_attrs = {
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                "server.address": host,
            }
            if port is not None:
                span_attrs["server.port"] = port
        super().__init__(
            t, inst, listener, metric_attrs, dict(metric_attrs), full, span_attrs, defer=True
        )

    def _instruments(self, inst: Instruments) -> CallInstruments:
        return inst.grpc

    def attempt(self, rt: ClusterRuntime, address: str, metadata: Metadata | None) -> Any:
        """An attempt to ``address`` starts: its span and metrics; returns the metadata
        to send, with the attempt's trace context replacing any the caller set."""
        host, port = _split_host_port(address)
        ctx = self._begin_attempt(rt, address, host, port or 0)
        if ctx is None:
            return metadata
        fields: list[tuple[str, str]] = []
        propagate.inject(fields, context=ctx, setter=_SETTER)
        if not fields:
            return metadata
        names = {k for k, _ in fields}
        kept = [(k, v) for k, v in (metadata or ()) if k.lower() not in names]
        return (*kept, *fields)

    def attempt_done(
        self,
        code: grpc.StatusCode | None,
        error: BaseException | None = None,
        *,
        retried: bool = False,
        attempt: Any = None,
    ) -> None:
        """The attempt ended with ``code`` (None: an exception, ``error``); ``retried``
        when the retry policy sends another attempt because of it; ``attempt``: the
        handle of a detached (hedged) attempt, else the current one ends."""
        if code is None and error is not None:
            code = _code_error(error)
            if code is not None:
                error = None  # a status, not an exception of the client
        reason = retry_reason(code) if retried and code is not None else None
        if code is None:
            self._end_attempt({}, {}, True, error, reason, attempt)
            return
        self._end_attempt(
            {"grpc.status": code.name},
            {"rpc.grpc.status_code": code.value[0]},
            code.value[0] != 0,
            error,
            reason,
            attempt,
        )

    def finish(self, code: grpc.StatusCode | None, details: str | None = None) -> None:
        """The call ended with status ``code`` (None: unknown, the call was abandoned)."""
        if self.attempt_open:  # a streaming call's attempt ends with it
            self.attempt_done(code)
        if code is None:
            self._end_call({}, {}, "cancelled", details)
            return
        failed = code.value[0] != 0
        self._end_call(
            {"grpc.status": code.name},
            {"rpc.grpc.status_code": code.value[0]},
            code.name if failed else None,
            details if failed else None,
        )

    def error(self, exc: BaseException) -> None:
        """The call failed with ``exc``: a gRPC status (remote or local) or an exception."""
        code = _code_error(exc)
        if code is not None:
            details = getattr(exc, "details", None)
            text = details() if callable(details) else None
            self.finish(code, text if isinstance(text, str) else None)
            return
        if self.attempt_open:
            self.attempt_done(None, exc)
        self._end_call({}, {}, type(exc).__name__, str(exc))
