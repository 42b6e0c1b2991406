"""XdsClient version bookkeeping against a scripted, real ADS server on 127.0.0.1:
unsupported-field warnings once per resource version, and the rejected version of a NACK."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _ads_server import AdsServer
from _xds_builders import eds_cluster

from pymesh.bootstrap import load_bootstrap
from pymesh.errors import MeshError
from pymesh.xds.client import CDS, Backoff, XdsClient

TIMEOUT = 30.0


class Watcher:
    """Records callbacks; tests wait on its condition."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: list[tuple[str, Any]] = []

    def _add(self, kind: str, value: Any) -> None:
        with self.cond:
            self.events.append((kind, value))
            self.cond.notify_all()

    def on_resource(self, name: str, value: Any) -> None:
        self._add("resource", value)

    def on_error(self, name: str, error: MeshError) -> None:
        self._add("error", error)

    def on_does_not_exist(self, name: str) -> None:
        self._add("dne", None)

    def wait(self, n: int) -> list[tuple[str, Any]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.events) >= n, TIMEOUT), self.events
            return list(self.events)


@pytest.fixture
def server() -> Iterator[AdsServer]:
    s = AdsServer()
    yield s
    s.stop()


def _client(server: AdsServer) -> XdsClient:
    bootstrap = load_bootstrap(
        {
            "xds_servers": [
                {
                    "server_uri": server.address,
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3"],
                }
            ],
            "node": {"id": "node-versions"},
        }
    )
    return XdsClient(bootstrap, backoff=Backoff(base=0.2, maximum=1.0))


def _answered(type_url: str, nonce: str) -> Callable[[Any], bool]:
    return lambda r: r.type_url == type_url and r.response_nonce == nonce


def _cluster(name: str, timeout_s: int = 1, *, lrs: bool = True) -> Any:
    c = eds_cluster(name)
    c.connect_timeout.FromSeconds(timeout_s)  # changed between versions: a real update
    if lrs:
        c.lrs_server.self.SetInParent()  # set but unsupported: warned
    return c


def _lrs_warnings(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pymesh.xds"
        and r.levelno == logging.WARNING
        and f"Cluster {name!r}" in r.getMessage()
        and "lrs_server" in r.getMessage()
    ]


def test_warned_once_per_version_and_nack_keeps_rejected_version(
    server: AdsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pymesh.xds")
    w = Watcher()
    with _client(server) as client:
        client.watch(CDS, "vc", w)
        server.wait_request(lambda r: r.type_url == CDS)

        n = server.send(CDS, [_cluster("vc", 1)], "1")
        ack = server.wait_request(_answered(CDS, n))
        assert ack.version_info == "1" and not ack.HasField("error_detail")
        [first] = _lrs_warnings(caplog, "vc")
        assert "version '1'" in first and "field lrs_server" in first

        # The same version again (as after a reconnect): no new warning.
        n = server.send(CDS, [_cluster("vc", 1)], "1")
        server.wait_request(_answered(CDS, n))
        assert len(_lrs_warnings(caplog, "vc")) == 1

        # A new version that still carries the field: one more warning, naming it.
        n = server.send(CDS, [_cluster("vc", 2)], "2")
        server.wait_request(_answered(CDS, n))
        logs = _lrs_warnings(caplog, "vc")
        assert len(logs) == 2 and "version '2'" in logs[1]
        [good] = [r for r in client.config_dump()["resources"] if r["name"] == "vc"]
        assert good["status"] == "ACKED" and good["error_version"] is None

        # Version 3 is invalid: NACKed, nothing of it warned, version 2 keeps serving.
        bad = _cluster("vc", 3)
        bad.connect_timeout.Clear()
        bad.connect_timeout.SetInParent()  # zero: rejected
        n = server.send(CDS, [bad], "3")
        nack = server.wait_request(_answered(CDS, n))
        assert nack.HasField("error_detail") and nack.version_info == "2"
        assert len(_lrs_warnings(caplog, "vc")) == 2
        [res] = [r for r in client.config_dump()["resources"] if r["name"] == "vc"]
        assert res["status"] == "NACKED"
        assert res["version"] == "2" and res["update_time"] == good["update_time"]
        assert res["error_version"] == "3" and "connect_timeout" in res["last_error"]
        assert res["error_time"] is not None and res["error_time"].endswith("Z")
        assert res["error_time"] >= res["update_time"]
        events = w.wait(3)
        assert [k for k, _ in events] == ["resource", "resource", "error"]
        assert events[1][1].connect_timeout == 2.0  # the value still served

        # Version 2 re-sent (the control plane rolled back): it is what was warned last,
        # so it stays quiet, and the error state is cleared.
        n = server.send(CDS, [_cluster("vc", 2)], "2")
        server.wait_request(_answered(CDS, n))
        assert len(_lrs_warnings(caplog, "vc")) == 2
        [res] = [r for r in client.config_dump()["resources"] if r["name"] == "vc"]
        assert res["status"] == "ACKED" and res["version"] == "2"
        assert res["last_error"] is None and res["error_version"] is None
        assert res["error_time"] is None


def test_rejected_version_without_a_good_one(server: AdsServer) -> None:
    w = Watcher()
    with _client(server) as client:
        client.watch(CDS, "never-good", w)
        server.wait_request(lambda r: r.type_url == CDS)
        bad = _cluster("never-good", lrs=False)
        bad.connect_timeout.Clear()
        bad.connect_timeout.SetInParent()
        n = server.send(CDS, [bad], "7")
        server.wait_request(_answered(CDS, n))
        [(kind, err)] = w.wait(1)
        assert kind == "error" and "connect_timeout" in str(err)
        [res] = client.config_dump()["resources"]
        assert res["status"] == "NACKED"
        assert res["version"] == "" and res["update_time"] is None  # nothing ever accepted
        assert res["error_version"] == "7" and res["error_time"]
