"""Edit a compiled mesh snapshot's protobufs, for xDS fields the mesh file does not expose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Snapshot,
    compile_mesh,
)


def _edited(messages: Any, edit: Callable[[Any], None] | None) -> list[Any]:
    out = []
    for msg in messages:
        copy = type(msg)()
        copy.CopyFrom(msg)
        if edit is not None:
            edit(copy)
        out.append(copy)
    return out


def edited_mesh(
    config: dict[str, Any],
    *,
    route: Callable[[Any], None] | None = None,
    cluster: Callable[[Any], None] | None = None,
    endpoints: Callable[[Any], None] | None = None,
    listener: Callable[[Any], None] | None = None,
) -> Snapshot:
    """``compile_mesh(config)`` with ``route(rc)`` / ``cluster(c)`` / ``endpoints(cla)``
    / ``listener(lis)`` applied to copies of each RouteConfiguration / Cluster /
    ClusterLoadAssignment / Listener."""
    snap = compile_mesh(config)
    return Snapshot.of(
        None,
        listeners=_edited(snap.get(LISTENER_TYPE).values(), listener),
        routes=_edited(snap.get(ROUTE_TYPE).values(), route),
        clusters=_edited(snap.get(CLUSTER_TYPE).values(), cluster),
        endpoints=_edited(snap.get(ENDPOINT_TYPE).values(), endpoints),
    )
