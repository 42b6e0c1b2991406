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


def via_aggregate(
    snap: Snapshot, leaves: list[str], *, connect_timeout_s: int | None = None
) -> Snapshot:
    """``snap`` plus an aggregate cluster "agg" over the clusters ``leaves`` (in priority
    order), with every route sent to it instead of its own clusters."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2

    agg = cluster_pb2.Cluster(name="agg", lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
    if connect_timeout_s is not None:
        agg.connect_timeout.FromSeconds(connect_timeout_s)
    agg.cluster_type.name = "envoy.clusters.aggregate"
    agg.cluster_type.typed_config.Pack(aggregate_pb2.ClusterConfig(clusters=leaves))

    def to_agg(rc: Any) -> None:
        for vh in rc.virtual_hosts:
            for route in vh.routes:
                route.route.ClearField("weighted_clusters")
                route.route.cluster = "agg"

    return Snapshot.of(
        None,
        listeners=snap.get(LISTENER_TYPE).values(),
        routes=_edited(snap.get(ROUTE_TYPE).values(), to_agg),
        clusters=[*snap.get(CLUSTER_TYPE).values(), agg],
        endpoints=snap.get(ENDPOINT_TYPE).values(),
    )


def stateful_session(
    cookie: str,
    *,
    ttl_s: int | None = None,
    path: str = "",
    strict: bool = False,
    attributes: tuple[tuple[str, str], ...] = (),
) -> Any:
    """A StatefulSession filter config with the cookie-based session state."""
    from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2
    from envoy.extensions.http.stateful_session.cookie.v3 import cookie_pb2

    state = cookie_pb2.CookieBasedSessionState()
    state.cookie.name = cookie
    if path:
        state.cookie.path = path
    if ttl_s is not None:
        state.cookie.ttl.FromSeconds(ttl_s)
    for name, value in attributes:
        state.cookie.attributes.add(name=name, value=value)
    session = stateful_session_pb2.StatefulSession(strict=strict)
    session.session_state.name = "envoy.http.stateful_session.cookie"
    session.session_state.typed_config.Pack(state)
    return session


def add_http_filter(lis: Any, name: str, config: Any) -> None:
    """Put the HTTP filter ``name`` (``config``) just before the router in ``lis``'s
    HttpConnectionManager: an api_listener's, or a socket listener's first filter's."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    holder = (
        lis.api_listener.api_listener
        if lis.HasField("api_listener")
        else lis.filter_chains[0].filters[0].typed_config
    )
    hcm = hcm_pb2.HttpConnectionManager()
    holder.Unpack(hcm)
    router = hcm.http_filters.pop()
    hcm.http_filters.add(name=name).typed_config.Pack(config)
    hcm.http_filters.append(router)
    holder.Pack(hcm)
