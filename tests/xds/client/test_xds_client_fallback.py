"""gRFC A71 fallback with scripted, real ADS servers: the second server is used only
while the first cannot be reached."""

from __future__ import annotations

from typing import Any

from _ads_server import AdsServer
from _xds_builders import eds_cluster
from test_xds_client import Recorder, is_ack

from pymesh.bootstrap import load_bootstrap
from pymesh.testing.envoy import free_port
from pymesh.xds.client import CDS, Backoff, XdsClient


def _bootstrap(*addresses: str) -> Any:
    return load_bootstrap(
        {
            "xds_servers": [
                {"server_uri": a, "channel_creds": [{"type": "insecure"}]} for a in addresses
            ],
            "node": {"id": "fallback-node"},
        }
    )


def _dead_address() -> str:
    return f"127.0.0.1:{free_port()}"  # closed again: connections are refused


def test_unreachable_primary_at_start_falls_back_to_the_secondary() -> None:
    secondary = AdsServer()
    w = Recorder()
    try:
        client = XdsClient(
            _bootstrap(_dead_address(), secondary.address),
            resource_timeout=600,
            backoff=Backoff(base=0.1, maximum=0.5),
        )
        with client:
            client.watch(CDS, "c", w)
            secondary.wait_request(lambda r: r.type_url == CDS)
            n = secondary.send(CDS, [eds_cluster("c")], "1")
            w.wait(lambda e: e[0] == "resource")
            secondary.wait_request(is_ack(CDS, "1", n))
            assert client.config_dump()["server_uri"] == secondary.address
            assert "error" not in w.kinds("c")  # one server answered: no connect error
    finally:
        secondary.stop()


def test_reachable_primary_is_used_and_the_secondary_never_dialled() -> None:
    primary, secondary = AdsServer(), AdsServer()
    w = Recorder()
    try:
        with XdsClient(_bootstrap(primary.address, secondary.address)) as client:
            client.watch(CDS, "c", w)
            primary.wait_request(lambda r: r.type_url == CDS)
            primary.send(CDS, [eds_cluster("c")], "1")
            w.wait(lambda e: e[0] == "resource")
            assert client.config_dump()["server_uri"] == primary.address
        assert secondary.requests == []
    finally:
        primary.stop()
        secondary.stop()
