"""MeshInterceptor: mesh routing decisions for a channel the user built themselves.

An interceptor cannot change where the wrapped channel sends a call, so this one does
everything that does not need a destination: route matching (no route fails the call
with UNAVAILABLE), fault injection (A33), the route's request header mutations, the A31
deadline cap, and the route's retry policy (A44, through the call engine) for unary-unary calls, by
calling the wrapped channel again. Cluster choice, load balancing, circuit breaking and outlier
detection need :func:`pymesh.grpc.insecure_channel` instead.
"""

from __future__ import annotations

import collections
from typing import Any

import grpc

from pymesh._mesh import Mesh
from pymesh.call import Attempts, LocalReply, Reply, Ticket, run_sync
from pymesh.grpc._base import Prepared, reply_of
from pymesh.grpc._channel import MeshChannel
from pymesh.grpc._core import local_status, remaining
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
        planner = self._planner
        # The engine's attempts, picking no endpoint: the wrapped channel chooses it.
        a = planner.new_attempts(p, hedge=False)
        a.pick = False
        result = run_sync(a, _ContinuationIO(a, continuation, details, request))
        if isinstance(result, LocalReply):
            status = local_status(result, self.mesh.node_id)
            return LocalRpcError(status.code, status.details)
        result.release()
        assert result.reply is not None
        return result.reply.value

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


class _ContinuationIO:
    """The interceptor's attempts: each calls the wrapped channel again
    (pymesh.call.SyncIO; sequential only, so no hedging)."""

    __slots__ = ("a", "continuation", "details", "request")

    def __init__(self, a: Attempts, continuation: Any, details: Any, request: Any) -> None:
        self.a = a
        self.continuation = continuation
        self.details = details
        self.request = request

    def send(self, t: Ticket) -> Reply:
        details = self.details._replace(timeout=remaining(t.deadline))
        call = self.continuation(details, self.request)
        if call.exception() is None:
            return Reply(call, grpc_status=0)
        return reply_of(self.a, t, call.code(), call)

    def start(self, t: Ticket) -> Any:
        raise NotImplementedError("the interceptor does not hedge")

    collect = start

    def discard(self, t: Ticket) -> None:
        return None

    def cancel(self, t: Ticket) -> None:
        return None
