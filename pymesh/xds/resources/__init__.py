"""The only place protobuf is parsed: xDS resources → frozen, validated dataclasses.

Each ``parse_*`` function takes a protobuf message and returns a dataclass or raises
:class:`pymesh.errors.ResourceInvalid` naming the field. :func:`decode` does the same
for an ``Any`` straight from a DiscoveryResponse.

What happens to each field (honoured, warned or NACKed) is decided by one table,
:data:`pymesh.xds.resources._fields.TABLE`, which the parsers consult for every set field
and from which docs/features.md is generated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pymesh.errors import ResourceInvalid
from pymesh.xds.resources.cluster import parse_cluster
from pymesh.xds.resources.endpoint import parse_cluster_load_assignment
from pymesh.xds.resources.listener import parse_lds_listener, parse_listener
from pymesh.xds.resources.route import parse_route_configuration

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "decode",
    "parse_cluster",
    "parse_cluster_load_assignment",
    "parse_listener",
    "parse_route_configuration",
    "resource_name",
]

_PREFIX = "type.googleapis.com/"
LISTENER_TYPE = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_TYPE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
#: The delta-xDS / xdstp wrapper some servers use in SotW responses too.
RESOURCE_WRAPPER_TYPE = _PREFIX + "envoy.service.discovery.v3.Resource"

# type URL → (message class, name field, parser)
_TYPES: dict[str, tuple[Any, str, Callable[[Any], object]]] = {
    LISTENER_TYPE: (listener_pb2.Listener, "name", parse_lds_listener),
    ROUTE_TYPE: (route_pb2.RouteConfiguration, "name", parse_route_configuration),
    CLUSTER_TYPE: (cluster_pb2.Cluster, "name", parse_cluster),
    ENDPOINT_TYPE: (
        endpoint_pb2.ClusterLoadAssignment,
        "cluster_name",
        parse_cluster_load_assignment,
    ),
}


def _message_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def _unwrap(type_url: str, any_msg: Any) -> tuple[str, Any, Any]:
    """(wrapper name, inner Any, decoded message); raises ResourceInvalid."""
    if type_url not in _TYPES:
        raise ResourceInvalid("", "type_url", f"unknown resource type {type_url}")
    cls = _TYPES[type_url][0]
    wrapper_name = ""
    if _message_name(any_msg.type_url) == _message_name(RESOURCE_WRAPPER_TYPE):
        res = discovery_pb2.Resource()
        try:
            res.ParseFromString(any_msg.value)
        except Exception as exc:  # protobuf DecodeError
            raise ResourceInvalid("", "", f"cannot decode the Resource wrapper: {exc}") from exc
        wrapper_name = res.name
        if not res.HasField("resource"):
            raise ResourceInvalid(wrapper_name, "resource", "the Resource wrapper is empty")
        any_msg = res.resource
    if _message_name(any_msg.type_url) != _message_name(type_url):
        raise ResourceInvalid(
            wrapper_name,
            "type_url",
            f"resource of type {any_msg.type_url} in a response for {type_url}",
        )
    msg = cls()
    try:
        msg.ParseFromString(any_msg.value)
    except Exception as exc:  # protobuf DecodeError
        raise ResourceInvalid(
            wrapper_name, "", f"cannot decode {_message_name(type_url)}: {exc}"
        ) from exc
    return wrapper_name, any_msg, msg


def decode(type_url: str, any_msg: Any) -> tuple[str, object]:
    """Unpack and parse one resource of a DiscoveryResponse.

    ``any_msg`` is a ``google.protobuf.Any`` holding the resource, or an
    ``envoy.service.discovery.v3.Resource`` wrapping it. Returns ``(name, dataclass)``;
    raises :class:`ResourceInvalid` (``resource_name`` ``""`` when even the name could
    not be read) if the resource must be NACKed.
    """
    wrapper_name, _, msg = _unwrap(type_url, any_msg)
    _, name_field, parser = _TYPES[type_url]
    name = getattr(msg, name_field) or wrapper_name
    if wrapper_name and getattr(msg, name_field) and wrapper_name != name:
        raise ResourceInvalid(
            wrapper_name,
            name_field,
            f"the resource is named {name!r} but its Resource wrapper {wrapper_name!r}",
        )
    if not getattr(msg, name_field):
        if not name:
            raise ResourceInvalid("", name_field, "resource name must not be empty")
        setattr(msg, name_field, name)
    return name, parser(msg)


def resource_name(type_url: str, any_msg: Any) -> str:
    """The resource's name, or ``""`` if it cannot be decoded (never raises)."""
    try:
        wrapper_name, _, msg = _unwrap(type_url, any_msg)
    except ResourceInvalid as exc:
        return exc.resource_name or ""
    return str(getattr(msg, _TYPES[type_url][1]) or wrapper_name)
