"""Per-request telemetry for HTTP: one CLIENT span per logical request, one child span per
attempt, trace context injected into each attempt, and the request/attempt metrics.

The httpx transports call :func:`observe_request`; it returns None when neither an SDK
tracer provider nor an SDK meter provider is configured, and the transport then skips
every other call (the near-zero-cost path).

Spans: the request span (kind CLIENT, named after the HTTP method) carries the HTTP
semantic-convention attributes plus ``pymesh.*`` ones; every attempt gets a child span
(kind INTERNAL, ``pymesh attempt``) whose context is what the upstream receives in
``traceparent``, so a retried request shows each try and its endpoint. One attempt
span even for unretried requests keeps the shape the same for every request.
The mesh attributes and the span/metric mechanics are shared with gRPC calls
(:class:`pymesh.telemetry._call.CallObserver`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import propagate, trace

from pymesh.telemetry._call import Attempt, CallObserver
from pymesh.telemetry._providers import off, resolve

if TYPE_CHECKING:
    from pymesh._upstream import ClusterRuntime
    from pymesh.telemetry._metrics import CallInstruments, Instruments
    from pymesh.xds.resources.endpoint import Endpoint

__all__ = ["RequestObserver", "observe_request"]


class UrlLike(Protocol):
    """What a request URL must offer (``httpx.URL`` does): ``str()`` is ``url.full``."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int | None: ...


def observe_request(method: str, url: UrlLike, listener: str) -> RequestObserver | None:
    """Start observing one logical request, or None when telemetry is off.

    ``url`` is only read when telemetry is on, so the off path builds no strings.
    """
    if off():
        return None
    t, inst = resolve()
    if t is None and inst is None:
        return None
    return RequestObserver(t, inst, method, str(url), url.host, url.port, listener)


class RequestObserver(CallObserver):
    """Spans and metrics of one HTTP request; not shared between requests or threads."""

    __slots__ = ()

    _RESEND_ATTRIBUTE = "http.request.resend_count"

    def __init__(
        self,
        t: trace.Tracer | None,
        inst: Instruments | None,
        method: str,
        url: str,
        host: str,
        port: int | None,
        listener: str,
    ) -> None:
        span_attrs: dict[str, Any] | None = None
        if t is not None:
            span_attrs = {"http.request.method": method, "url.full": url, "server.address": host}
            if port is not None:
                span_attrs["server.port"] = port
        super().__init__(t, inst, listener, {"http.request.method": method}, {}, method, span_attrs)

    def _instruments(self, inst: Instruments) -> CallInstruments:
        return inst.http

    def attempt(self, rt: ClusterRuntime, endpoint: Endpoint) -> list[tuple[bytes, bytes]]:
        """An attempt starts: its span, and the trace headers the upstream must get."""
        ctx = self._begin_attempt(rt, endpoint.address, endpoint.host, endpoint.port)
        if ctx is None:
            return []
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=ctx)
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]

    def attempt_done(
        self,
        status: int | None,
        error: BaseException | None = None,
        retry_reason: str | None = None,
        *,
        attempt: Attempt | None = None,
    ) -> None:
        """The attempt ended (response headers, or an error); ``retry_reason`` if retried.
        ``attempt``: a handle from :meth:`detach_attempt` (hedged attempts run at once)."""
        attrs = {} if status is None else {"http.response.status_code": status}
        failed = status is not None and status >= 500
        self._end_attempt(attrs, attrs, failed, error, retry_reason, attempt)

    def finish(
        self,
        status: int | None,
        *,
        local_reply: str = "",
        error: BaseException | None = None,
    ) -> None:
        """The request ended: the response (or local reply) status, or the error raised."""
        if self.attempt_open:  # an attempt left open by an exception
            self.attempt_done(None, error)
        error_type = type(error).__name__ if error is not None else None
        if error_type is None and status is not None and status >= 500:
            error_type = str(status)  # HTTP semconv: the status code as error.type
        if local_reply:
            self.local_reply = local_reply
        attrs = {} if status is None else {"http.response.status_code": status}
        self._end_call(attrs, attrs, error_type, str(error) if error is not None else None)
