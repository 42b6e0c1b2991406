"""The config dump in CSDS's ``ClientConfig`` shape (envoy.service.status.v3), as JSON.

Field names are the proto's (snake_case, as ``json_format`` with
``preserving_proto_field_name``); the resource bodies (``xds_config``) are omitted.
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
            # The last good version keeps serving (version_info above); this is why the
            # newer one was rejected and when.
            entry["error_state"] = {
                "details": r["last_error"],
                "last_update_attempt": r.get("update_time"),
            }
        configs.append(entry)
    return {"node": node_json, "generic_xds_configs": configs}
