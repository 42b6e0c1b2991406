"""What the sync and aio mesh channels share: target parsing, per-call planning, status
mapping and deadlines. No I/O and no waiting here; attempts are pymesh.call's."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from pymesh._mesh import ListenerState, Mesh
from pymesh.call import LocalReply, Plan, plan_by_path, plan_request
from pymesh.routing import RequestInfo
from pymesh.xds.resources.route import RouteAction

MetadataValue = str | bytes
Metadata = Sequence[tuple[str, MetadataValue]]

_CODES: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}

# Headers gRPC owns; never forwarded as metadata (grpcio rejects or overrides them).
_RESERVED = frozenset({"content-type", "te", "host", "user-agent", "grpc-timeout"})

# gRFC A33 / the gRPC HTTP-to-status mapping for an HTTP fault abort status.
_HTTP_TO_GRPC = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}


def status_code(value: int) -> grpc.StatusCode:
    """The grpc.StatusCode for a numeric status (UNKNOWN for out-of-range values)."""
    return _CODES.get(value, grpc.StatusCode.UNKNOWN)


def parse_xds_target(target: str) -> tuple[str | None, str]:
    """``(xds_authority, name)`` of an ``xds:///name`` or ``xds://xds_authority/name``
    target. The listener is looked up from ``name`` (:meth:`Mesh.listener_name`, with
    the federation authority's template when there is one, gRFC A47), and ``name`` is
    the ``:authority`` used for virtual-host matching, as in grpcio's xDS resolver."""
    if not target.startswith("xds:"):
        raise ValueError(
            f"pymesh.grpc needs an xds: target such as 'xds:///svc:50051'; got {target!r}"
        )
    rest = target[4:]
    authority = ""
    if rest.startswith("//"):
        authority, _, name = rest[2:].partition("/")
    else:
        name = rest.lstrip("/")
    if not name:
        raise ValueError(f"xds target {target!r} names no service")
    return authority or None, name


@dataclass(frozen=True, slots=True)
class LocalStatus:
    """A call answered by pymesh itself (no route, fault abort, overflow, ...)."""

    code: grpc.StatusCode
    details: str
    delay: float = 0.0
    #: A cluster_header target to subscribe and wait for before planning again
    #: (LocalReply.wait_cluster); the call fails with this status if it does not come.
    wait_cluster: str | None = None


def local_status(reply: LocalReply, node_id: str) -> LocalStatus:
    """Map a planner LocalReply to the gRPC status a gRPC client would see (A33, A54)."""
    details = reply.body.decode("utf-8", "replace").strip()
    if reply.grpc_status is not None:
        code = status_code(reply.grpc_status)
    elif reply.flags == "FI":
        code = _HTTP_TO_GRPC.get(reply.status, grpc.StatusCode.UNKNOWN)
    else:
        # Direct responses and redirects are not gRPC actions: gRPC fails such calls.
        code = grpc.StatusCode.UNAVAILABLE
        details = f"pymesh: matched route has no gRPC action ({details or reply.status})"
    if code is not grpc.StatusCode.OK and reply.flags != "FI":
        details = f"{details} [xDS node id {node_id}]"
    return LocalStatus(code, details, reply.delay, reply.wait_cluster)


def deadline_cap(action: RouteAction, state: ListenerState) -> float | None:
    """A31's cap on a call's timeout on this route (None: none): the route's
    grpc_timeout_header_max, else its max_stream_duration, else the listener's."""
    cap = action.grpc_timeout_header_max
    if cap is None:
        cap = action.max_stream_duration
    if cap is None:
        cap = state.config.listener.max_stream_duration
    return cap if cap is not None and cap > 0 else None


def grpc_deadline(
    plan: Plan, state: ListenerState, timeout: float | None, start: float
) -> float | None:
    """The call's monotonic deadline: the caller's, capped by A31's max_stream_duration.

    The route ``timeout`` is Envoy's and gRPC ignores it, so pymesh does too.
    """
    cap = deadline_cap(plan.action, state)
    if cap is not None and (timeout is None or cap < timeout):
        timeout = cap
    return None if timeout is None else start + timeout


_GRPC_ONLY: dict[str, str] = {"content-type": "application/grpc"}


def request_info(authority: str, method: str, metadata: Metadata | None) -> RequestInfo:
    """Routing view of a call: POST, the target authority, the method, text metadata
    (names lower-case, repeated keys joined with ","), content-type application/grpc."""
    if not metadata:
        # Shared and never mutated: routing only reads headers.
        return RequestInfo("POST", authority, method, _GRPC_ONLY, True)
    joined: dict[str, str] = {}
    for key, value in metadata:
        k = key.lower()
        if k.endswith("-bin") or not isinstance(value, str):
            continue  # A28: binary headers never take part in matching
        prev = joined.get(k)
        joined[k] = value if prev is None else f"{prev},{value}"
    joined["content-type"] = "application/grpc"
    return RequestInfo("POST", authority, method, joined, True)


def text_headers(metadata: Metadata | None) -> list[tuple[str, str]]:
    """The text metadata as a header list (only built when a route mutates headers)."""
    return [
        (k.lower(), v)
        for k, v in (metadata or ())
        if isinstance(v, str) and not k.lower().endswith("-bin")
    ]


def outgoing_metadata(plan: Plan, original: Metadata | None) -> Metadata | None:
    """The metadata to send: the caller's, after the route's header mutations."""
    edited = plan.headers
    if edited is None:  # no mutation applied
        return original or None
    binary = [(k, v) for k, v in (original or ()) if k.lower().endswith("-bin")]
    out: list[tuple[str, MetadataValue]] = [
        (k, v) for k, v in edited if k not in _RESERVED and not k.startswith(":")
    ]
    out.extend(binary)
    return tuple(out) or None


def plan_call(
    mesh: Mesh,
    state: ListenerState,
    authority: str,
    method: str,
    metadata: Metadata | None,
    channel_id: int,
) -> Plan | LocalStatus:
    """Route one call; a Plan to send upstream or the LocalStatus to fail it with."""
    fast = plan_by_path(state, authority, method, None)
    if fast is not None:
        return fast  # the method name alone decides the route (no metadata read)
    info = request_info(authority, method, metadata)
    plan = plan_request(state, info, lambda: text_headers(metadata), mesh.rng, None, channel_id)
    if isinstance(plan, LocalReply):
        return local_status(plan, mesh.node_id)
    return plan


def remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (None: no deadline)."""
    return None if deadline is None else deadline - time.monotonic()


def no_upstream(plan: Plan, why: str, node_id: str) -> LocalStatus:
    return LocalStatus(
        grpc.StatusCode.UNAVAILABLE,
        f"pymesh: {why} (cluster {plan.cluster_name!r}) [xDS node id {node_id}]",
    )


DEADLINE = LocalStatus(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
