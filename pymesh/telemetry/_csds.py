"""The config dump in CSDS's ``ClientConfig`` shape (envoy.service.status.v3), as JSON.

Field names are the proto's (snake_case, as ``json_format`` with
``preserving_proto_field_name``), so ``json_format.ParseDict`` reads the result into a
``ClientConfig``; the resource bodies (``xds_config``) are omitted. A NACKed resource
keeps its last good ``version_info`` and ``last_updated`` and carries ``error_state``
(envoy.admin.v3.UpdateFailureState: ``details``, ``last_update_attempt`` and the rejected
``version_info``), as Envoy's and gRPC's CSDS report it.
"""

from __future__ import annotations

from typing import Any

from pymesh.bootstrap import Bootstrap

# CSDS ConfigStatus (how the config compares with what the server sent) and
# ClientResourceStatus (the xDS client's view), from the client's resource status.
_CONFIG_STATUS = {"ACKED": "SYNCED", "NACKED": "ERROR"}
_CLIENT_STATUS = {
    "REQUESTED": "REQUESTED",
    "ACKED": "ACKED",
    "NACKED": "NACKED",
    "DOES_NOT_EXIST": "DOES_NOT_EXIST",
}


def client_config(dump: dict[str, Any], bootstrap: Bootstrap) -> dict[str, Any]:
    """A CSDS ClientConfig dict built from the xDS client's ``config_dump()``."""
    node = bootstrap.node
    locality = {
        k: v
        for k, v in (
            ("region", node.locality.region),
            ("zone", node.locality.zone),
            ("sub_zone", node.locality.sub_zone),
        )
        if v
    }
    node_json: dict[str, Any] = {"id": node.id, "user_agent_name": "pymesh"}
    if node.cluster:
        node_json["cluster"] = node.cluster
    if locality:
        node_json["locality"] = locality
    configs = []
    for r in dump.get("resources", []):
        status = r["status"]
        entry: dict[str, Any] = {
            "type_url": r["type_url"],
            "name": r["name"],
            "version_info": r.get("version") or "",
            "config_status": _CONFIG_STATUS.get(status, "UNKNOWN"),
            "client_status": _CLIENT_STATUS.get(status, "UNKNOWN"),
        }
        if r.get("update_time"):
            entry["last_updated"] = r["update_time"]
        if r.get("last_error"):
            # envoy.admin.v3.UpdateFailureState: the last good version keeps serving
            # (version_info above); this is the rejected version, why, and when.
            error_state = {"details": r["last_error"]}
            if r.get("error_time"):
                error_state["last_update_attempt"] = r["error_time"]
            if r.get("error_version") is not None:
                error_state["version_info"] = r["error_version"]
            entry["error_state"] = error_state
        configs.append(entry)
    return {"node": node_json, "generic_xds_configs": configs}
