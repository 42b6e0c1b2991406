"""MeshInterceptor: mesh routing decisions for a channel the user built themselves.

An interceptor cannot change where the wrapped channel sends a call, so this one does
everything that does not need a destination: route matching (no route fails the call
with UNAVAILABLE), fault injection (A33), the route's request header mutations, the A31
deadline cap, and the route's retry policy (A44) for unary-unary calls, by calling the
wrapped channel again. Cluster choice, load balancing, circuit breaking and outlier
detection need :func:`pymesh.grpc.insecure_channel` instead.
"""

from __future__ import annotations

import collections
from typing import Any

import grpc

from pymesh._mesh import Mesh
from pymesh.grpc._base import Prepared
from pymesh.grpc._channel import MeshChannel
from pymesh.grpc._core import attempts_of, remaining, should_retry
from pymesh.grpc._local import LocalRpcError

_Details = collections.namedtuple(
    "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
)


class _CallDetails(_Details, grpc.ClientCallDetails):  # type: ignore[misc]
    pass


class MeshInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """A client interceptor applying ``mesh``'s routes for ``target`` (``xds:///name``).

    ``grpc.intercept_channel(grpc.insecure_channel(addr), MeshInterceptor(mesh, target))``:
    the call still goes to ``addr``; see the module docstring for what is applied.
    """

    def __init__(self, mesh: Mesh, target: str) -> None:
        self.mesh = mesh
        # Used for planning only: it never opens a sub-channel here.
        self._planner = MeshChannel(target, mesh)

    def __repr__(self) -> str:
        return f"<pymesh.grpc.MeshInterceptor {self._planner.target}>"

    def _details(self, details: Any) -> tuple[Any, Any] | LocalRpcError:
        try:
            p = self._planner.prepare(details.method, details.timeout, details.metadata)
        except LocalRpcError as err:
            return err
        if not isinstance(p, Prepared):  # unknown listener, passthrough: send as is
            return None, details
        new = _CallDetails(
            details.method,
            remaining(p.deadline),
            p.metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )
        return p, new

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        planned = self._details(client_call_details)
        if isinstance(planned, LocalRpcError):
            return planned
        p, details = planned
        if p is None:
            return continuation(details, request)
        attempts = attempts_of(p.plan)
        attempt = 0
        while True:
            call = continuation(details, request)
            exc = call.exception()
            if exc is None or attempt + 1 >= attempts:
                return call
            code = call.code()
            if not should_retry(p.plan.decider, code) or not self._planner.backoff(p, attempt + 1):
                return call
            attempt += 1
            details = details._replace(timeout=remaining(p.deadline))

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        planned = self._details(client_call_details)
        if isinstance(planned, LocalRpcError):
            return planned
        return continuation(planned[1], request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        planned = self._details(client_call_details)
        if isinstance(planned, LocalRpcError):
            return planned
        return continuation(planned[1], request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        planned = self._details(client_call_details)
        if isinstance(planned, LocalRpcError):
            return planned
        return continuation(planned[1], request_iterator)
