"""XdsClient against a scripted, real ADS server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from _ads_server import AdsServer
from _xds_builders import cla, eds_cluster, listener, route_config

from pymesh.bootstrap import load_bootstrap
from pymesh.errors import BootstrapError, MeshError
from pymesh.testing.envoy import free_port
from pymesh.xds.client import CDS, EDS, LDS, RDS, Backoff, XdsClient

TIMEOUT = 30.0


class Recorder:
    """A watcher recording every callback; tests wait on its condition."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: list[tuple[str, str, Any]] = []
        self.threads: set[str] = set()

    def _add(self, kind: str, name: str, value: Any) -> None:
        with self.cond:
            self.events.append((kind, name, value))
            self.threads.add(threading.current_thread().name)
            self.cond.notify_all()

    def on_resource(self, name: str, value: Any) -> None:
        self._add("resource", name, value)

    def on_error(self, name: str, error: MeshError) -> None:
        self._add("error", name, error)

    def on_does_not_exist(self, name: str) -> None:
        self._add("dne", name, None)

    def wait(self, pred: Callable[[tuple[str, str, Any]], bool], since: int = 0) -> Any:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(pred(e) for e in self.events[since:]), TIMEOUT)
            assert ok, f"no matching event in {self.events}"
            return next(e for e in self.events[since:] if pred(e))

    def count(self) -> int:
        with self.cond:
            return len(self.events)

    def kinds(self, name: str) -> list[str]:
        with self.cond:
            return [k for k, n, _ in self.events if n == name]


def _bootstrap(address: str, *features: str) -> Any:
    return load_bootstrap(
        {
            "xds_servers": [
                {
                    "server_uri": address,
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3", *features],
                }
            ],
            "node": {"id": "node-1", "cluster": "test"},
        }
    )


@pytest.fixture
def server() -> Iterator[AdsServer]:
    s = AdsServer()
    yield s
    s.stop()


def _client(server: AdsServer, *features: str, timeout: float = 15.0) -> XdsClient:
    return XdsClient(
        _bootstrap(server.address, *features),
        resource_timeout=timeout,
        backoff=Backoff(base=0.2, maximum=1.0),
    )


def is_ack(type_url: str, version: str, nonce: str) -> Callable[[Any], bool]:
    return lambda r: (
        r.type_url == type_url
        and r.version_info == version
        and r.response_nonce == nonce
        and not r.HasField("error_detail")
    )


def is_nack(type_url: str, nonce: str) -> Callable[[Any], bool]:
    return lambda r: (
        r.type_url == type_url and r.response_nonce == nonce and r.HasField("error_detail")
    )


def test_subscribe_ack_and_node(server: AdsServer) -> None:
    w = Recorder()
    with _client(server) as client:
        client.watch(LDS, "svc:80", w)
        first = server.wait_request(lambda r: r.type_url == LDS)
        assert list(first.resource_names) == ["svc:80"]
        assert first.version_info == "" and first.response_nonce == ""
        assert first.node.id == "node-1" and first.node.user_agent_name == "pymesh"
        nonce = server.send(LDS, [listener("svc:80", "rc")], "1")
        _, _, value = w.wait(lambda e: e[0] == "resource")
        assert value.name == "svc:80" and value.rds_name == "rc"
        ack = server.wait_request(is_ack(LDS, "1", nonce))
        assert list(ack.resource_names) == ["svc:80"]
        assert not ack.HasField("node")  # node only on the first request of a stream
        assert w.threads == {"pymesh-xds"}
        dump = client.config_dump()
        assert dump["node_id"] == "node-1" and dump["connected"] is True
        assert dump["types"][LDS] == {"version_info": "1", "nonce": nonce}
        [res] = dump["resources"]
        assert res["status"] == "ACKED" and res["version"] == "1" and res["update_time"]
        assert client.stats.acks[LDS] == 1 and client.stats.updates[LDS] == 1
        # the same resource again: ACKed, but watchers are not told twice
        n2 = server.send(LDS, [listener("svc:80", "rc")], "2")
        server.wait_request(is_ack(LDS, "2", n2))
        assert w.kinds("svc:80") == ["resource"]


def test_nack_names_resource_and_field_and_keeps_last_good(server: AdsServer) -> None:
    w = Recorder()
    with _client(server) as client:
        client.watch(RDS, "rc", w)
        server.wait_request(lambda r: r.type_url == RDS)
        n1 = server.send(RDS, [route_config("rc", "c1")], "1")
        server.wait_request(is_ack(RDS, "1", n1))
        n2 = server.send(RDS, [route_config("rc", "c2", regex="a(b")], "2")
        nack = server.wait_request(is_nack(RDS, n2))
        assert nack.version_info == "1"  # previous good version
        assert nack.error_detail.code == 3  # INVALID_ARGUMENT
        msg = nack.error_detail.message
        assert "resource 'rc'" in msg and "safe_regex" in msg
        _, _, err = w.wait(lambda e: e[0] == "error")
        assert isinstance(err, MeshError) and err.resource_name == "rc"
        [res] = client.config_dump()["resources"]
        assert res["status"] == "NACKED" and res["version"] == "1"
        assert "safe_regex" in res["last_error"]
        assert client.stats.nacks[RDS] == 1
        # a late watcher still gets the last good value
        w2 = Recorder()
        client.watch(RDS, "rc", w2)
        _, _, value = w2.wait(lambda e: e[0] == "resource")
        assert value.virtual_hosts[0].routes[0].action.cluster == "c1"
        assert [k for k, _, _ in w.events] == ["resource", "error"]


def test_partial_nack_applies_valid_resources(server: AdsServer) -> None:
    good, bad = Recorder(), Recorder()
    with _client(server) as client:
        client.watch(RDS, "good", good)
        client.watch(RDS, "bad", bad)
        server.wait_request(lambda r: r.type_url == RDS and len(r.resource_names) == 2)
        nonce = server.send(RDS, [route_config("good", "c1"), route_config("bad", regex="(")], "1")
        nack = server.wait_request(is_nack(RDS, nonce))
        assert nack.version_info == ""
        assert "resource 'bad'" in nack.error_detail.message
        assert "resource 'good'" not in nack.error_detail.message
        _, _, value = good.wait(lambda e: e[0] == "resource")
        assert value.name == "good"
        bad.wait(lambda e: e[0] == "error")
        statuses = {r["name"]: r["status"] for r in client.config_dump()["resources"]}
        assert statuses == {"good": "ACKED", "bad": "NACKED"}


def test_reconnect_resubscribes_with_last_versions(server: AdsServer) -> None:
    w = Recorder()
    with _client(server) as client:
        client.watch(LDS, "l", w)
        client.watch(CDS, "c", w)
        server.wait_request(lambda r: r.type_url == CDS)
        nl = server.send(LDS, [listener("l", "rc")], "L1")
        nc = server.send(CDS, [eds_cluster("c")], "C1")
        server.wait_request(is_ack(LDS, "L1", nl))
        server.wait_request(is_ack(CDS, "C1", nc))
        w.wait(lambda e: e[1] == "c" and e[0] == "resource")
        before = w.count()
        first_stream = server.wait_stream()
        mark = server.mark()  # every ACK is in: later requests come from the new stream
        server.restart()
        lds = server.wait_request(lambda r: r.type_url == LDS, since=mark)
        cds = server.wait_request(lambda r: r.type_url == CDS, since=mark)
        assert server.wait_stream() != first_stream
        assert (lds.version_info, lds.response_nonce) == ("L1", "")
        assert (cds.version_info, cds.response_nonce) == ("C1", "")
        assert lds.node.id == "node-1"
        # cached values kept serving; nothing was deleted or re-notified
        assert w.count() == before
        assert {r["status"] for r in client.config_dump()["resources"]} == {"ACKED"}
        # the same config again is an ACK without a new notification
        n2 = server.send(LDS, [listener("l", "rc")], "L1")
        server.wait_request(is_ack(LDS, "L1", n2), since=mark)
        assert w.count() == before
        assert client.stats.stream_failures >= 1 and client.stats.connected == 1


def test_does_not_exist_after_timeout(server: AdsServer) -> None:
    w = Recorder()
    with _client(server, timeout=0.3) as client:
        client.watch(CDS, "missing", w)
        server.wait_request(lambda r: r.type_url == CDS)
        w.wait(lambda e: e == ("dne", "missing", None))
        [res] = client.config_dump()["resources"]
        assert res["status"] == "DOES_NOT_EXIST"
        # the resource arriving later revives it
        server.send(CDS, [eds_cluster("missing")], "1")
        w.wait(lambda e: e[0] == "resource")


def test_no_does_not_exist_while_stream_down() -> None:
    # A port nobody listens on: the stream never comes up.
    port = free_port()
    w = Recorder()
    client = XdsClient(
        _bootstrap(f"127.0.0.1:{port}"),
        resource_timeout=0.05,
        backoff=Backoff(base=0.05, maximum=0.1),
    )
    with client:
        client.watch(CDS, "x", w)
        _, _, err = w.wait(lambda e: e[0] == "error")  # told it cannot connect
        assert "cannot connect" in err.message and err.resource_name == "x"
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # observe for 20x the timeout
            with w.cond:
                w.cond.wait(0.05)
        assert "dne" not in w.kinds("x")
        assert client.config_dump()["resources"][0]["status"] == "REQUESTED"
        assert client.stats.streams_started == 0


def test_lds_cds_deletion(server: AdsServer) -> None:
    a, b, eds = Recorder(), Recorder(), Recorder()
    with _client(server) as client:
        client.watch(CDS, "a", a)
        client.watch(CDS, "b", b)
        client.watch(EDS, "e1", eds)
        server.wait_request(lambda r: r.type_url == CDS and len(r.resource_names) == 2)
        server.send(CDS, [eds_cluster("a"), eds_cluster("b")], "1")
        server.send(EDS, [cla("e1", [("127.0.0.1", 1)])], "1")
        b.wait(lambda e: e[0] == "resource")
        a.wait(lambda e: e[0] == "resource")
        eds.wait(lambda e: e[0] == "resource")
        n2 = server.send(CDS, [eds_cluster("a")], "2")
        n3 = server.send(EDS, [], "2")  # EDS is not full-state: nothing deleted
        b.wait(lambda e: e == ("dne", "b", None))
        server.wait_request(is_ack(CDS, "2", n2))
        server.wait_request(is_ack(EDS, "2", n3))
        assert a.kinds("a") == ["resource"]
        assert eds.kinds("e1") == ["resource"]
        statuses = {r["name"]: r["status"] for r in client.config_dump()["resources"]}
        assert statuses == {"a": "ACKED", "b": "DOES_NOT_EXIST", "e1": "ACKED"}


def test_ignore_resource_deletion(server: AdsServer) -> None:
    w = Recorder()
    with _client(server, "ignore_resource_deletion") as client:
        client.watch(LDS, "l", w)
        server.wait_request(lambda r: r.type_url == LDS)
        server.send(LDS, [listener("l", "rc")], "1")
        w.wait(lambda e: e[0] == "resource")
        n = server.send(LDS, [], "2")
        server.wait_request(is_ack(LDS, "2", n))
        assert w.kinds("l") == ["resource"]
        assert client.stats.deletions_ignored == 1
        assert client.config_dump()["resources"][0]["status"] == "ACKED"


def test_cancel_watch_unsubscribes(server: AdsServer) -> None:
    w1, w2 = Recorder(), Recorder()
    with _client(server) as client:
        client.watch(CDS, "a", w1)
        client.watch(CDS, "b", w2)
        server.wait_request(lambda r: r.type_url == CDS and len(r.resource_names) == 2)
        mark = server.mark()
        client.cancel_watch(CDS, "b", w2)
        req = server.wait_request(lambda r: r.type_url == CDS, since=mark)
        assert list(req.resource_names) == ["a"]


def test_close_is_fast_and_leaves_no_thread(server: AdsServer) -> None:
    client = _client(server)
    client.watch(LDS, "l", Recorder())
    server.wait_request(lambda r: r.type_url == LDS)
    t0 = time.monotonic()
    client.close(timeout=1.0)
    assert time.monotonic() - t0 < 1.0
    assert not [t for t in threading.enumerate() if t.name == "pymesh-xds"]
    client.close()  # idempotent
    server.wait_no_stream()  # the connection really went away
    with pytest.raises(MeshError):
        client.start()


@pytest.mark.parametrize(
    ("uri", "creds", "field"),
    [
        ("xds:///foo", [{"type": "insecure"}], "server_uri"),
        (
            "127.0.0.1:1",
            [{"type": "tls", "config": {"ca_certificate_file": "/nonexistent/ca.pem"}}],
            "channel_creds",
        ),
    ],
)
def test_bad_server_config_fails_at_construction(uri: str, creds: Any, field: str) -> None:
    b = load_bootstrap({"xds_servers": [{"server_uri": uri, "channel_creds": creds}]})
    with pytest.raises(BootstrapError) as ei:
        XdsClient(b)
    assert field in ei.value.field


def _roundtrip(server: AdsServer, bootstrap: Any) -> None:
    w = Recorder()
    with XdsClient(bootstrap, backoff=Backoff(base=0.2, maximum=1.0)) as client:
        client.watch(CDS, "c", w)
        server.wait_request(lambda r: r.type_url == CDS)
        nonce = server.send(CDS, [eds_cluster("c")], "1")
        w.wait(lambda e: e[0] == "resource")
        server.wait_request(is_ack(CDS, "1", nonce))


def test_unix_socket_server_uri(tmp_path: Path) -> None:
    server = AdsServer(unix_path=str(tmp_path / "XDS"))
    try:
        assert server.address.startswith("unix:///")
        _roundtrip(server, _bootstrap(server.address))
    finally:
        server.stop()


def test_tls_channel_creds_with_client_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost")
    client_cert = ca.issue_cert("client.example")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    client_cert.cert_chain_pems[0].write_to_path(str(cert_file))
    client_cert.private_key_pem.write_to_path(str(key_file))
    creds = grpc.ssl_server_credentials(
        [(server_cert.private_key_pem.bytes(), server_cert.cert_chain_pems[0].bytes())],
        root_certificates=ca.cert_pem.bytes(),
        require_client_auth=True,
    )
    server = AdsServer(credentials=creds)
    try:
        bootstrap = load_bootstrap(
            {
                "xds_servers": [
                    {
                        "server_uri": f"localhost:{server.port}",
                        "channel_creds": [
                            {
                                "type": "tls",
                                "config": {
                                    "ca_certificate_file": str(ca_file),
                                    "certificate_file": str(cert_file),
                                    "private_key_file": str(key_file),
                                },
                            }
                        ],
                    }
                ],
                "node": {"id": "tls-node"},
            }
        )
        _roundtrip(server, bootstrap)
    finally:
        server.stop()


def test_work_handed_from_other_threads_runs_on_the_xds_thread_in_order(
    server: AdsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Watches and submitted calls from other threads queue for the xDS thread: each
    runs there, in the order queued, a failing one is reported (as the event loop
    reports a failed callback) and does not hold up the rest."""
    client = XdsClient(_bootstrap(server.address))
    ran: list[tuple[int, str]] = []
    done = threading.Event()

    def hop(i: int) -> None:
        ran.append((i, threading.current_thread().name))
        if i == 100:
            raise RuntimeError("hop 100 fails")

    try:
        for i in range(300):  # more than run without short GIL turns
            client.submit(lambda i=i: hop(i))
        client.submit(done.set)
        assert done.wait(TIMEOUT)
        assert [i for i, _ in ran] == list(range(300))
        assert {thread for _, thread in ran} == {"pymesh-xds"}
        assert "hop 100 fails" in caplog.text
    finally:
        client.close()
