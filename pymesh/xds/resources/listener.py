"""Listener (api_listener HttpConnectionManager) → frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymesh.xds.resources.route import RouteConfiguration

ROUTER_TYPE = "envoy.extensions.filters.http.router.v3.Router"
FAULT_TYPE = "envoy.extensions.filters.http.fault.v3.HTTPFault"


@dataclass(frozen=True, slots=True)
class HttpFilter:
    """One entry of HCM http_filters. ``config`` is the parsed filter config
    (:class:`~pymesh.xds.resources.fault.FaultConfig`,
    :class:`~pymesh.xds.resources.rbac.RbacConfig`,
    :class:`~pymesh.xds.resources.session.StatefulSession`) or None for the router."""

    name: str
    type_name: str  # full proto message name, e.g. ROUTER_TYPE
    config: Any = None
    is_optional: bool = False


@dataclass(frozen=True, slots=True)
class Listener:
    """An api_listener with an HttpConnectionManager.

    Exactly one of ``rds_name`` (RDS) and ``route_config`` (inline) is set.
    """

    name: str
    rds_name: str | None = None
    route_config: RouteConfiguration | None = None
    http_filters: tuple[HttpFilter, ...] = ()
    max_stream_duration: float | None = None  # HCM common_http_protocol_options
    unsupported: tuple[str, ...] = ()


def parse_listener(msg: Any) -> Listener:
    """Parse an LDS resource (an api_listener holding an HttpConnectionManager).

    ``msg`` is a ``listener_pb2.Listener`` message. Raises
    :class:`pymesh.errors.ResourceInvalid` (field path and a reason) when the resource
    must be NACKed; set-but-unsupported fields are listed in ``unsupported`` and logged.
    """
    # Imported here: the parser modules import this module's dataclasses.
    from pymesh.xds.resources._parse_listener import parse

    return parse(msg)


def parse_lds_listener(msg: Any) -> Any:
    """Parse any LDS resource: an api_listener (:func:`parse_listener`, a client's) or,
    without one, a server's listening socket (gRFC A36,
    :class:`~pymesh.xds.resources.server_listener.ServerListener`)."""
    if msg.HasField("api_listener"):
        return parse_listener(msg)
    from pymesh.xds.resources._parse_server_listener import parse as parse_server

    return parse_server(msg)
