"""Bootstrap a Mesh against an embedded ControlPlane and push config to it, waiting for ACKs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from pymesh._mesh import Mesh
from pymesh.server import ControlPlane, compile_mesh
from pymesh.server.snapshot import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Snapshot,
)

__all__ = ["bootstrap_for", "push_mesh", "push_snapshot"]

_TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)


def bootstrap_for(
    control_plane: ControlPlane | str,
    node_id: str = "pymesh-test",
    *,
    features: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A gRPC-format bootstrap dict pointing at ``control_plane`` (a ControlPlane, or a
    ``host:port`` such as a ``pymesh serve`` process's), insecure, xDS v3 plus
    ``features`` (e.g. ``xds_delta``, ``ignore_resource_deletion``)."""
    address = control_plane if isinstance(control_plane, str) else control_plane.address
    return {
        "xds_servers": [
            {
                "server_uri": address,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3", *features],
            }
        ],
        "node": {"id": node_id},
    }


def push_snapshot(
    control_plane: ControlPlane,
    mesh: Mesh,
    snapshot: Snapshot,
    *,
    timeout: float = 20.0,
) -> Snapshot:
    """Serve ``snapshot`` and block until ``mesh`` has ACKed it and applied it.

    The mesh subscribes to every listener in the snapshot first (listeners are otherwise
    subscribed on first request), so this assumes the bootstrap's default listener name
    template (``%s``): listener name = URL authority. Raises TimeoutError (naming any
    NACKs) when the mesh does not ACK every resource type of the snapshot in time, and
    the listener's MeshError when it cannot be applied.
    """
    control_plane.set_snapshot(snapshot)
    listeners = list(snapshot.get(LISTENER_TYPE))
    slots = [mesh.slot(name) for name in listeners]
    # Each type the snapshot holds is (eventually) subscribed by a mesh that uses it, and
    # the xDS client ACKs only after its watchers ran. An ACK of a type at this version
    # is not enough alone: the server pushes every type at once, so e.g. EDS at the new
    # version may be ACKed for the old subscription before the new clusters (and their
    # endpoints) are subscribed. So wait, too, until nothing the mesh subscribes is still
    # awaited and every resource it holds is at this version.
    deadline = time.monotonic() + timeout
    for type_url in _TYPES:
        if snapshot.get(type_url):
            left = max(0.0, deadline - time.monotonic())
            control_plane.wait_for_ack(type_url, snapshot.version, left, mesh.node_id)
    while not _settled(control_plane, mesh, snapshot.version):
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"the mesh did not settle on version {snapshot.version!r} within {timeout}s"
            )
        time.sleep(0.005)  # polls the mesh's own state; the wait is bounded above
    for slot in slots:
        mesh.wait_state(slot, max(0.0, deadline - time.monotonic()))
    return snapshot


def _settled(control_plane: ControlPlane, mesh: Mesh, version: str) -> bool:
    """Every resource the mesh subscribes is ACKed at ``version`` (or, for a type that
    snapshot left unchanged, the version that type was sent at; a listener state is
    published before its last piece is ACKed), or is known not to exist."""
    for r in mesh.config_dump()["resources"]:
        if r["status"] == "REQUESTED":
            return False
        if r["status"] == "ACKED" and r["version"] not in control_plane.versions_of(
            version, r["type_url"], mesh.node_id
        ):
            return False
    return True


def push_mesh(
    control_plane: ControlPlane,
    mesh: Mesh,
    config: Mapping[str, Any],
    *,
    version: str | None = None,
    timeout: float = 20.0,
) -> Snapshot:
    """Compile a mesh-file dict, serve it and wait until ``mesh`` ACKed and applied it.

    ``version`` overrides the snapshot's content-hash version. Returns the snapshot.
    Raises ConfigFileError for a bad config, TimeoutError when the mesh does not ACK.
    """
    snapshot = compile_mesh(config, "<push_mesh>")
    if version is not None:
        snapshot = dataclasses.replace(snapshot, version=version)
    return push_snapshot(control_plane, mesh, snapshot, timeout=timeout)
