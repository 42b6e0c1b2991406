"""pymesh's client speaking incremental (delta) ADS to pymesh's own control plane
(bootstrap server feature ``xds_delta``): routing, edits, an unknown host, a deleted
listener, and a reconnect that resends nothing (initial_resource_versions)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _polling import wait_until

import pymesh
from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ControlPlane,
    Snapshot,
    compile_mesh,
)
from pymesh.testing import EchoBackend, bootstrap_for
from pymesh.xds.client import LDS


def _reviews(*backends: EchoBackend) -> Snapshot:
    return compile_mesh(
        {"services": {"reviews": {"port": 9080, "endpoints": [b.address for b in backends]}}}
    )


def _delta_bootstrap(cp: ControlPlane) -> dict[str, Any]:
    return bootstrap_for(cp, "delta-client", features=("xds_delta",))


@pytest.fixture
def backends() -> Iterator[list[EchoBackend]]:
    bs = [EchoBackend(f"d{i}").start() for i in range(2)]
    yield bs
    for b in bs:
        b.close()


def test_delta_client_routes_follows_edits_and_deletions(backends: list[EchoBackend]) -> None:
    b0, b1 = backends
    with ControlPlane(port=0) as cp:
        snap = _reviews(b0)
        cp.set_snapshot(snap)
        with (
            pymesh.Mesh(
                bootstrap=bootstrap_for(cp, "delta-client", features=("xds_delta",)), seed=1
            ) as mesh,
            httpx.Client(transport=pymesh.MeshTransport(mesh)) as client,
        ):
            assert client.get("http://reviews:9080/", timeout=30).headers["x-backend"] == "d0"
            dump = mesh.config_dump()
            assert dump["protocol"] == "delta"
            # Per-resource versions (the server's content hashes), not the snapshot's.
            assert {r["version"] for r in dump["resources"]} - {snap.version}
            # An edit: only the endpoints change, and only they are sent.
            updates = dict(mesh.xds_stats.updates)
            edited = _reviews(b1)
            cp.set_snapshot(edited)
            cp.wait_for_ack(ENDPOINT_TYPE, edited.version, 30, "delta-client")
            assert client.get("http://reviews:9080/", timeout=30).headers["x-backend"] == "d1"
            changed = {
                t.rsplit(".", 1)[-1]
                for t, n in mesh.xds_stats.updates.items()
                if n != updates.get(t)
            }
            assert changed == {"ClusterLoadAssignment"}
            # An unknown host: the server's NOT_FOUND makes it pass through at once.
            with pytest.raises(pymesh.UnknownHostError):
                pymesh.MeshTransport(mesh, passthrough=False).handle_request(
                    httpx.Request("GET", "http://nowhere.example:9080/")
                )
            # The listener deleted: requests fail with the typed error, not stale config.
            gone = Snapshot.of(
                "gone",
                clusters=edited.get(CLUSTER_TYPE).values(),
                endpoints=edited.get(ENDPOINT_TYPE).values(),
            )
            cp.set_snapshot(gone)
            cp.wait_for_ack(LISTENER_TYPE, "gone", 30, "delta-client")
            with pytest.raises(pymesh.ResourceDoesNotExistError) as info:
                client.get("http://reviews:9080/", timeout=30)
            assert info.value.type_url == LDS
        assert mesh.xds_stats.nacks == {}


def test_delta_reconnect_resends_nothing_the_client_has(backends: list[EchoBackend]) -> None:
    with ControlPlane(port=0) as cp:
        port = cp.port
        cp.set_snapshot(_reviews(backends[0]))
        with (
            pymesh.Mesh(
                bootstrap=bootstrap_for(cp, "delta-client", features=("xds_delta",)), seed=1
            ) as mesh,
            httpx.Client(transport=pymesh.MeshTransport(mesh)) as client,
        ):
            assert client.get("http://reviews:9080/", timeout=30).status_code == 200
            decoded = mesh.xds_stats.decodes_skipped
            updates = dict(mesh.xds_stats.updates)
            streams = mesh.xds_stats.streams_started
            cp.stop()
            with ControlPlane(port=port) as again:
                again.set_snapshot(_reviews(backends[0]))
                wait_until(
                    lambda: (
                        mesh.xds_stats.streams_started > streams and mesh.xds_stats.connected == 1
                    ),
                    "the mesh to reconnect",
                )
                assert client.get("http://reviews:9080/", timeout=30).status_code == 200
                # An edit after the reconnect: its answer comes after whatever the new
                # server sent for the stream's first requests.
                edited = _reviews(backends[1])
                again.set_snapshot(edited)
                again.wait_for_ack(ENDPOINT_TYPE, edited.version, 60, "delta-client")
                assert client.get("http://reviews:9080/", timeout=30).headers["x-backend"] == "d1"
            # initial_resource_versions told the new server what the client holds: only
            # the edited endpoints were sent again (nothing unchanged was re-sent).
            assert mesh.xds_stats.decodes_skipped == decoded
            assert {t: n - updates.get(t, 0) for t, n in mesh.xds_stats.updates.items()} == {
                t: int(t == ENDPOINT_TYPE) for t in updates
            }
