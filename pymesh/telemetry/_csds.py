"""CSDS: the client's xDS config as envoy.service.status.v3 messages.

:func:`client_config_proto` builds a ``ClientConfig`` from the xDS client's resource
rows: one ``GenericXdsConfig`` per resource with its ``version_info``, ``config_status``
and ``client_status``, ``last_updated``, and, for a NACKed resource, ``error_state``
(envoy.admin.v3.UpdateFailureState: ``details``, ``last_update_attempt`` and the rejected
``version_info``) while the last good version keeps serving, as Envoy's and gRPC's CSDS
report it. With ``bodies`` the resource itself is in ``xds_config`` (an ``Any``).

:func:`client_config` is the same message as JSON (``json_format``, proto field names),
without bodies, for the config dump; :class:`CsdsServicer` serves the messages as the
real ``ClientStatusDiscoveryService`` (gRFC A40), which ``pymesh status --csds`` and
other CSDS tools read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import any_pb2, json_format  # type: ignore[import-untyped, unused-ignore]

from pymesh.bootstrap import Bootstrap

__all__ = ["CsdsServicer", "client_config", "client_config_proto"]

# CSDS ConfigStatus (how the config compares with what the server sent) and
# ClientResourceStatus (the xDS client's view), from the client's resource status.
_CONFIG_STATUS = {"ACKED": "SYNCED", "NACKED": "ERROR"}
_CLIENT_STATUS = {
    "REQUESTED": "REQUESTED",
    "ACKED": "ACKED",
    "NACKED": "NACKED",
    "DOES_NOT_EXIST": "DOES_NOT_EXIST",
}


def client_config_proto(
    resources: list[dict[str, Any]], bootstrap: Bootstrap, *, bodies: bool = False
) -> csds_pb2.ClientConfig:
    """A CSDS ``ClientConfig`` from the xDS client's resource rows (``config_dump()``'s
    ``resources``; with ``bodies``, rows that carry ``raw``, the resource's ``Any``)."""
    node = bootstrap.node
    config = csds_pb2.ClientConfig()
    config.node.id = node.id
    config.node.user_agent_name = "pymesh"
    if node.cluster:
        config.node.cluster = node.cluster
    if node.locality.region or node.locality.zone or node.locality.sub_zone:
        config.node.locality.region = node.locality.region
        config.node.locality.zone = node.locality.zone
        config.node.locality.sub_zone = node.locality.sub_zone
    for r in resources:
        status = r["status"]
        entry = config.generic_xds_configs.add(
            type_url=r["type_url"],
            name=r["name"],
            version_info=r.get("version") or "",
            config_status=_CONFIG_STATUS.get(status, "UNKNOWN"),
            client_status=_CLIENT_STATUS.get(status, "UNKNOWN"),
        )
        if r.get("update_time"):
            entry.last_updated.FromJsonString(r["update_time"])
        if r.get("last_error"):
            entry.error_state.details = r["last_error"]
            if r.get("error_time"):
                entry.error_state.last_update_attempt.FromJsonString(r["error_time"])
            if r.get("error_version") is not None:
                entry.error_state.version_info = r["error_version"]
        raw = r.get("raw")
        if bodies and raw is not None:
            entry.xds_config.CopyFrom(any_pb2.Any(type_url=raw[0], value=raw[1]))
    return config


def client_config(dump: dict[str, Any], bootstrap: Bootstrap) -> dict[str, Any]:
    """:func:`client_config_proto` as JSON (proto field names), without resource bodies."""
    message = client_config_proto(dump.get("resources", []), bootstrap)
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


class CsdsServicer(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    """``ClientStatusDiscoveryService`` for one client; ``config()`` gives its current
    ``ClientConfig`` (with resource bodies). Node matchers are not applied: the client
    has one node."""

    def __init__(self, config: Callable[[], csds_pb2.ClientConfig]) -> None:
        self._config = config

    def FetchClientStatus(self, request: Any, context: Any) -> Any:
        return csds_pb2.ClientStatusResponse(config=[self._config()])

    def StreamClientStatus(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        for _ in requests:
            yield csds_pb2.ClientStatusResponse(config=[self._config()])
