"""Per-request telemetry: one CLIENT span per logical request, one child span per attempt,
trace context injected into each attempt, and the request/attempt metrics.

Transports (httpx now, gRPC later) call :func:`observe_request`; it returns None when
neither an SDK tracer provider nor an SDK meter provider is configured, and the
transport then skips every other call (the near-zero-cost path).

Spans: the request span (kind CLIENT, named after the HTTP method) carries the HTTP
semantic-convention attributes plus ``pymesh.*`` ones; every attempt gets a child span
(kind INTERNAL, ``pymesh attempt``) whose context is what the upstream receives in
``traceparent``, so a retried request shows each try and its endpoint. One attempt
span even for unretried requests keeps the shape the same for every request.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from pymesh.telemetry._providers import instruments, tracer

if TYPE_CHECKING:
    from pymesh._upstream import ClusterRuntime
    from pymesh.telemetry._metrics import Instruments
    from pymesh.xds.resources.endpoint import ClusterLoadAssignment, Endpoint

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
    t = tracer()
    inst = instruments()
    if t is None and inst is None:
        return None
    return RequestObserver(t, inst, method, str(url), url.host, url.port, listener)


# Endpoint address -> locality per ClusterLoadAssignment, built once per EDS update
# (assignments are immutable and replaced, so their id with an identity check is a key).
_LOCALITIES: dict[int, tuple[ClusterLoadAssignment, dict[str, str]]] = {}


def _locality(rt: ClusterRuntime, address: str) -> str | None:
    cla = rt.endpoints
    if cla is None:
        return None
    hit = _LOCALITIES.get(id(cla))
    if hit is None or hit[0] is not cla:
        if len(_LOCALITIES) > 1024:
            _LOCALITIES.clear()
        by_address = {
            ep.address: str(loc.locality) for loc in cla.localities for ep in loc.endpoints
        }
        hit = _LOCALITIES[id(cla)] = (cla, by_address)
    return hit[1].get(address)


class RequestObserver:
    """Spans and metrics of one request; not shared between requests or threads."""

    __slots__ = (
        "_attempt_attrs",
        "_attempt_span",
        "_attempt_start",
        "_inst",
        "_metric_attrs",
        "_span",
        "_start",
        "_tracer",
        "attempts",
        "cluster",
        "retry_reason",
    )

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
        self._tracer = t
        self._inst = inst
        self._start = time.perf_counter()
        self._attempt_start = 0.0
        self._attempt_span: trace.Span | None = None
        self._attempt_attrs: dict[str, Any] = {}
        self.attempts = 0
        self.cluster: str | None = None
        self.retry_reason: str | None = None
        self._metric_attrs: dict[str, Any] = {
            "http.request.method": method,
            "pymesh.listener": listener,
        }
        self._span: trace.Span | None = None
        if t is not None:
            attrs: dict[str, Any] = {
                "http.request.method": method,
                "url.full": url,
                "server.address": host,
                "pymesh.listener": listener,
            }
            if port is not None:
                attrs["server.port"] = port
            self._span = t.start_span(method, kind=SpanKind.CLIENT, attributes=attrs)

    def routed(self, route: str, cluster: str | None) -> None:
        """The route (its name, or its index in the virtual host) and cluster chosen."""
        self._metric_attrs["pymesh.route"] = route
        if cluster is not None:
            self.cluster = cluster
            self._metric_attrs["pymesh.cluster"] = cluster
        span = self._span
        if span is not None:
            span.set_attribute("pymesh.route", route)
            if cluster is not None:
                span.set_attribute("pymesh.cluster", cluster)

    def attempt(self, rt: ClusterRuntime, endpoint: Endpoint) -> list[tuple[bytes, bytes]]:
        """An attempt starts: its span, and the trace headers the upstream must get."""
        n = self.attempts
        self.attempts = n + 1
        self._attempt_start = time.perf_counter()
        self._attempt_attrs = {"pymesh.cluster": rt.name}
        if self._inst is not None:
            self._inst.attempts.add(1, self._attempt_attrs)
        span = self._span
        if span is None or self._tracer is None:
            return []
        attrs: dict[str, Any] = {
            "pymesh.cluster": rt.name,
            "pymesh.endpoint": endpoint.address,
            "network.peer.address": endpoint.host,
            "network.peer.port": endpoint.port,
        }
        locality = _locality(rt, endpoint.address)
        if locality is not None:
            attrs["pymesh.locality"] = locality
        if n:
            attrs["http.request.resend_count"] = n
        # The last attempt's endpoint is the one that answered: mirror it on the parent.
        span.set_attribute("pymesh.endpoint", endpoint.address)
        if locality is not None:
            span.set_attribute("pymesh.locality", locality)
        parent = trace.set_span_in_context(span)
        child = self._tracer.start_span(
            "pymesh attempt", context=parent, kind=SpanKind.INTERNAL, attributes=attrs
        )
        self._attempt_span = child
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(child))
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]

    def attempt_done(
        self,
        status: int | None,
        error: BaseException | None = None,
        retry_reason: str | None = None,
    ) -> None:
        """The attempt ended (response headers, or an error); ``retry_reason`` if retried."""
        if self._inst is not None:
            attrs = dict(self._attempt_attrs)
            if status is not None:
                attrs["http.response.status_code"] = status
            if error is not None:
                attrs["error.type"] = type(error).__name__
            self._inst.attempt_duration.record(time.perf_counter() - self._attempt_start, attrs)
            if retry_reason is not None:
                self._inst.retries.add(
                    1, {**self._attempt_attrs, "pymesh.retry_reason": retry_reason}
                )
        if retry_reason is not None:
            self.retry_reason = retry_reason
        span, self._attempt_span = self._attempt_span, None
        if span is not None:
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if retry_reason is not None:
                span.set_attribute("pymesh.retry_reason", retry_reason)
            if error is not None:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(StatusCode.ERROR, str(error))
            elif status is not None and status >= 500:
                span.set_status(StatusCode.ERROR)
            span.end()

    def finish(
        self,
        status: int | None,
        *,
        local_reply: str = "",
        error: BaseException | None = None,
    ) -> None:
        """The request ended: the response (or local reply) status, or the error raised."""
        if self._attempt_span is not None:  # an attempt left open by an exception
            self.attempt_done(None, error)
        error_type = type(error).__name__ if error is not None else None
        if error_type is None and status is not None and status >= 500:
            error_type = str(status)  # HTTP semconv: the status code as error.type
        if self._inst is not None:
            attrs = self._metric_attrs
            if status is not None:
                attrs["http.response.status_code"] = status
            if local_reply:
                attrs["pymesh.local_reply"] = local_reply
            if error_type is not None:
                attrs["error.type"] = error_type
            self._inst.requests.add(1, attrs)
            self._inst.request_duration.record(time.perf_counter() - self._start, attrs)
        span = self._span
        if span is None:
            return
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        span.set_attribute("pymesh.attempts", self.attempts)
        if self.retry_reason is not None:
            span.set_attribute("pymesh.retry_reason", self.retry_reason)
        if local_reply:
            span.set_attribute("pymesh.local_reply", local_reply)
            if local_reply == "UO":
                span.set_attribute("pymesh.overflow", True)
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(StatusCode.ERROR, str(error) if error is not None else None)
        span.end()
