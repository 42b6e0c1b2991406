"""What every call observer shares, whatever the protocol: the mesh attributes (listener,
route, cluster, endpoint, locality, attempts, retry reason, overflow), one CLIENT span
per logical call with one child span per attempt, trace context for each attempt, and
the call/attempt/retry metrics.

The HTTP observer (:mod:`pymesh.telemetry._request`) and the gRPC one
(:mod:`pymesh.telemetry._rpc`) only add their protocol's names: the span name and
attributes, how a status is written and when it is a failure.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, StatusCode

if TYPE_CHECKING:
    from pymesh._upstream import ClusterRuntime
    from pymesh.call import Plan
    from pymesh.telemetry._metrics import CallInstruments, Instruments

__all__ = ["CallObserver"]

Attrs = dict[str, Any]


class Attempt:
    """One attempt's metric attributes, start time and span."""

    __slots__ = ("attrs", "span", "start")

    def __init__(self, attrs: Attrs) -> None:
        self.attrs = attrs
        self.start = time.perf_counter()
        self.span: trace.Span | None = None


class CallObserver:
    """Spans and metrics of one logical call; not shared between calls or threads at once.

    Subclasses name the span and give the protocol attributes; ``defer=True`` delays
    creating the span (with its original start time) until the call is routed or ends,
    so a call that turns out not to be the mesh's (passthrough) leaves no trace at all.
    """

    __slots__ = (
        "_attempt",
        "_attempt_base",
        "_inst",
        "_meters",
        "_metric_attrs",
        "_pending",
        "_span",
        "_start",
        "_tracer",
        "attempts",
        "cluster",
        "local_reply",
        "retry_reason",
    )

    #: Attempt span attribute counting the tries before this one (absent on the first).
    _RESEND_ATTRIBUTE = "pymesh.resend_count"

    def __init__(
        self,
        t: trace.Tracer | None,
        inst: Instruments | None,
        listener: str,
        metric_attrs: Attrs,
        attempt_attrs: Attrs,
        span_name: str,
        span_attrs: Attrs | None,
        *,
        defer: bool = False,
    ) -> None:
        self._tracer = t
        self._inst = inst
        self._meters: CallInstruments | None = None if inst is None else self._instruments(inst)
        self._start = time.perf_counter()
        self._attempt: Attempt | None = None  # the attempt in flight (see detach_attempt)
        self.attempts = 0
        self.cluster: str | None = None
        self.retry_reason: str | None = None
        #: Envoy-style response flag when pymesh answered the call itself ("" if not).
        self.local_reply = ""
        # Attempt metrics carry these and the cluster (not the call's listener or route).
        self._attempt_base = attempt_attrs
        metric_attrs["pymesh.listener"] = listener
        self._metric_attrs = metric_attrs
        self._span: trace.Span | None = None
        self._pending: tuple[str, Attrs, int] | None = None
        if t is not None and span_attrs is not None:
            span_attrs["pymesh.listener"] = listener
            if defer:
                self._pending = (span_name, span_attrs, time.time_ns())
            else:
                self._span = t.start_span(span_name, kind=SpanKind.CLIENT, attributes=span_attrs)

    # -- what a protocol provides ------------------------------------------------------

    def _instruments(self, inst: Instruments) -> CallInstruments:
        """This protocol's call and attempt instruments."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------

    def _live_span(self) -> trace.Span | None:
        """The call span, started now (at the call's start time) if it was deferred."""
        pending = self._pending
        if pending is not None and self._tracer is not None:
            self._pending = None
            name, attrs, start_ns = pending
            self._span = self._tracer.start_span(
                name, kind=SpanKind.CLIENT, attributes=attrs, start_time=start_ns
            )
        return self._span

    def routed(self, route: str, cluster: str | None) -> None:
        """The route (its name, or its index in the virtual host) and cluster chosen."""
        self._metric_attrs["pymesh.route"] = route
        if cluster is not None:
            self.cluster = cluster
            self._metric_attrs["pymesh.cluster"] = cluster
        span = self._live_span()
        if span is not None:
            span.set_attribute("pymesh.route", route)
            if cluster is not None:
                span.set_attribute("pymesh.cluster", cluster)

    def planned(self, plan: Plan) -> None:
        """:meth:`routed` from a routing plan."""
        route = plan.decision.route
        self.routed(route.name or str(plan.decision.route_index), plan.cluster_name)

    def _begin_attempt(
        self, rt: ClusterRuntime, address: str, host: str, port: int
    ) -> Context | None:
        """An attempt starts: its metrics and span; the context the upstream must get."""
        n = self.attempts
        self.attempts = n + 1
        attempt = Attempt({**self._attempt_base, "pymesh.cluster": rt.name})
        self._attempt = attempt
        if self._meters is not None:
            self._meters.attempts.add(1, attempt.attrs)
        span = self._live_span()
        if span is None or self._tracer is None:
            return None
        attrs: Attrs = {
            "pymesh.cluster": rt.name,
            "pymesh.endpoint": address,
            "network.peer.address": host,
            "network.peer.port": port,
        }
        locality = rt.localities.get(address)  # compiled with the EDS update
        if locality is not None:
            attrs["pymesh.locality"] = locality
        if n:
            attrs[self._RESEND_ATTRIBUTE] = n
        # The last attempt's endpoint is the one that answered: mirror it on the parent.
        span.set_attribute("pymesh.endpoint", address)
        if locality is not None:
            span.set_attribute("pymesh.locality", locality)
        attempt.span = self._tracer.start_span(
            "pymesh attempt",
            context=trace.set_span_in_context(span),
            kind=SpanKind.INTERNAL,
            attributes=attrs,
        )
        return trace.set_span_in_context(attempt.span)

    def detach_attempt(self) -> Attempt | None:
        """The attempt just begun, handed to the caller: concurrent (hedged) attempts
        each end with their own handle (``attempt=`` of the protocol's attempt_done)."""
        attempt, self._attempt = self._attempt, None
        return attempt

    @property
    def attempt_open(self) -> bool:
        """An attempt began and has not ended (e.g. left open by an exception)."""
        attempt = self._attempt
        return attempt is not None and attempt.span is not None

    def _end_attempt(
        self,
        status: Attrs,
        span_status: Attrs,
        failed: bool,
        error: BaseException | None,
        retry_reason: str | None,
        attempt: Attempt | None = None,
    ) -> None:
        """The attempt (the current one, or the detached ``attempt``) ended with
        ``status`` (metric attributes) / ``span_status``."""
        if attempt is None:
            attempt, self._attempt = self._attempt, None
        if attempt is None:
            return
        meters = self._meters
        if meters is not None:
            attrs = {**attempt.attrs, **status}
            if error is not None:
                attrs["error.type"] = type(error).__name__
            meters.attempt_duration.record(time.perf_counter() - attempt.start, attrs)
            if retry_reason is not None and self._inst is not None:
                self._inst.retries.add(1, {**attempt.attrs, "pymesh.retry_reason": retry_reason})
        if retry_reason is not None:
            self.retry_reason = retry_reason
        span, attempt.span = attempt.span, None
        if span is not None:
            span.set_attributes(span_status)
            if retry_reason is not None:
                span.set_attribute("pymesh.retry_reason", retry_reason)
            if error is not None:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(StatusCode.ERROR, str(error))
            elif failed:
                span.set_status(StatusCode.ERROR)
            span.end()

    def _end_call(
        self,
        status: Attrs,
        span_status: Attrs,
        error_type: str | None,
        description: str | None,
    ) -> None:
        """The call ended: record its metrics and end its span."""
        local_reply = self.local_reply
        meters = self._meters
        if meters is not None:
            attrs = {**self._metric_attrs, **status}
            if local_reply:
                attrs["pymesh.local_reply"] = local_reply
            if error_type is not None:
                attrs["error.type"] = error_type
            if meters.calls is not None:
                meters.calls.add(1, attrs)
            meters.call_duration.record(time.perf_counter() - self._start, attrs)
        span = self._live_span()
        if span is None:
            return
        span.set_attributes(span_status)
        span.set_attribute("pymesh.attempts", self.attempts)
        if self.retry_reason is not None:
            span.set_attribute("pymesh.retry_reason", self.retry_reason)
        if local_reply:
            span.set_attribute("pymesh.local_reply", local_reply)
            if local_reply == "UO":
                span.set_attribute("pymesh.overflow", True)
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(StatusCode.ERROR, description)
        span.end()
