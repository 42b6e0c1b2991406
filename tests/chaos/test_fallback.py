"""xDS fallback (gRFC A71) under live traffic: two real control planes, the primary
stopped mid-traffic and brought back on its port. Requests never fail: the cache serves
while the client moves to the secondary, takes its updates, and returns to the primary
as soon as it is reachable."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from _polling import wait_until
from _procs import Traffic

import pymesh
from pymesh.server import ControlPlane, compile_mesh
from pymesh.testing import EchoBackend

pytestmark = pytest.mark.timeout(300)


def _reviews(backend: EchoBackend) -> Any:
    return compile_mesh({"services": {"reviews": {"port": 9080, "endpoints": [backend.address]}}})


def test_fallback_to_the_secondary_and_back_with_no_failed_request() -> None:
    with EchoBackend("primary-config") as b1, EchoBackend("secondary-config") as b2:
        primary = ControlPlane(port=0).start()
        secondary = ControlPlane(port=0).start()
        port = primary.port
        primary.set_snapshot(_reviews(b1))
        secondary.set_snapshot(_reviews(b2))
        bootstrap = {
            "xds_servers": [
                {"server_uri": cp.address, "channel_creds": [{"type": "insecure"}]}
                for cp in (primary, secondary)
            ],
            "node": {"id": "fallback"},
        }
        try:
            with (
                pymesh.Mesh(bootstrap=bootstrap, seed=1, passthrough=False) as mesh,
                httpx.Client(transport=pymesh.MeshTransport(mesh)) as client,
                Traffic(lambda: client.get("http://reviews:9080/", timeout=30)) as traffic,
            ):
                traffic.wait_for(30)
                assert set(traffic.answered_by) == {"primary-config"}
                primary.stop()
                wait_until(
                    lambda: traffic.answered_by["secondary-config"] > 0,
                    "the client to take the secondary's config",
                )
                assert mesh.config_dump()["server_uri"] == secondary.address
                traffic.wait_for(30)
                primary = ControlPlane(port=port).start()
                primary.set_snapshot(_reviews(b1))
                before = traffic.answered_by["primary-config"]
                wait_until(
                    lambda: traffic.answered_by["primary-config"] > before,
                    "the client to return to the primary",
                    timeout=120,
                )
                assert mesh.config_dump()["server_uri"] == primary.address
                traffic.wait_for(30)
            assert not traffic.failures, traffic.failures
            assert mesh.xds_stats.does_not_exist == 0
        finally:
            primary.stop()
            secondary.stop()
