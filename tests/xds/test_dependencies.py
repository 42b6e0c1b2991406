"""DependencyManager against the scripted ADS server: complete configs only."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.message
import dns.rdatatype
import dns.rrset
import pytest

sys.path.insert(0, str(Path(__file__).parent / "client"))

from _ads_server import AdsServer
from _xds_builders import (
    aggregate_cluster,
    cla,
    dns_cluster,
    eds_cluster,
    listener,
    listener_inline,
    route_config,
)

from pymesh.bootstrap import load_bootstrap
from pymesh.errors import MeshError
from pymesh.xds.client import CDS, EDS, LDS, RDS, Backoff, XdsClient
from pymesh.xds.dependencies import DependencyManager, XdsConfig

TIMEOUT = 30.0


class Collector:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.configs: list[XdsConfig] = []
        self.errors: list[tuple[str, MeshError]] = []

    def on_config(self, config: XdsConfig) -> None:
        with self.cond:
            self.configs.append(config)
            self.cond.notify_all()

    def on_error(self, name: str, error: MeshError) -> None:
        with self.cond:
            self.errors.append((name, error))
            self.cond.notify_all()

    def wait_config(self, pred: Callable[[XdsConfig], bool] = lambda c: True) -> XdsConfig:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(pred(c) for c in self.configs), TIMEOUT)
            assert ok, f"no matching config in {self.configs}"
            return next(c for c in self.configs if pred(c))

    def wait_error(self) -> tuple[str, MeshError]:
        with self.cond:
            assert self.cond.wait_for(lambda: bool(self.errors), TIMEOUT)
            return self.errors[0]


@pytest.fixture
def server() -> Iterator[AdsServer]:
    s = AdsServer()
    yield s
    s.stop()


@pytest.fixture
def client(server: AdsServer) -> Iterator[XdsClient]:
    b = load_bootstrap(
        {
            "xds_servers": [
                {"server_uri": server.address, "channel_creds": [{"type": "insecure"}]}
            ],
            "node": {"id": "node-7"},
        }
    )
    c = XdsClient(b, resource_timeout=0.5, backoff=Backoff(base=0.2))
    yield c
    c.close()


def names(server: AdsServer, type_url: str, since: int = 0) -> Callable[[set[str]], Any]:
    """Wait until the latest request of ``type_url`` subscribes exactly ``expected``."""

    def wait(expected: set[str]) -> Any:
        return server.wait_request(
            lambda r: r.type_url == type_url and set(r.resource_names) == expected, since=since
        )

    return wait


def test_publishes_only_complete_configs(server: AdsServer, client: XdsClient) -> None:
    got = Collector()
    DependencyManager(client).watch_listener("svc", got.on_config, got.on_error)
    names(server, LDS)({"svc"})
    server.send(LDS, [listener("svc", "rc")], "1")
    names(server, RDS)({"rc"})
    server.send(RDS, [route_config("rc", "c1")], "1")
    names(server, CDS)({"c1"})
    server.send(CDS, [eds_cluster("c1", service_name="c1-eds")], "1")
    names(server, EDS)({"c1-eds"})
    # An unrelated EDS update and a CDS re-send: still no EDS for c1 → nothing published.
    mark = server.mark()
    n = server.send(CDS, [eds_cluster("c1", service_name="c1-eds")], "2")
    server.wait_request(lambda r: r.type_url == CDS and r.response_nonce == n, since=mark)
    assert got.configs == []
    server.send(EDS, [cla("c1-eds", [("127.0.0.1", 8080)])], "1")
    config = got.wait_config()
    assert config.version == 1
    assert config.listener.name == "svc" and config.route_config.name == "rc"
    c1 = config.clusters["c1"]
    assert c1.error is None and c1.cluster is not None
    assert c1.endpoints is not None
    assert [e.address for e in c1.endpoints.endpoints] == ["127.0.0.1:8080"]
    # An endpoint update republishes with a higher version.
    server.send(EDS, [cla("c1-eds", [("127.0.0.1", 9090)])], "2")
    config2 = got.wait_config(lambda c: c.version == 2)
    endpoints = config2.clusters["c1"].endpoints
    assert endpoints is not None and endpoints.endpoints[0].port == 9090
    assert got.errors == []


def test_missing_cluster_becomes_error_and_rest_works(server: AdsServer, client: XdsClient) -> None:
    got = Collector()
    DependencyManager(client).watch_listener("svc", got.on_config, got.on_error)
    names(server, LDS)({"svc"})
    rc = route_config("rc", weighted={"good": 80, "ghost": 20}, mirror="shadow")
    server.send(LDS, [listener_inline("svc", rc)], "1")
    names(server, CDS)({"good", "ghost", "shadow"})
    server.send(
        CDS, [dns_cluster("good", [("127.0.0.1", 1)], "STATIC"), eds_cluster("shadow")], "1"
    )
    names(server, EDS)({"shadow"})
    server.send(EDS, [cla("shadow", [("127.0.0.1", 2)])], "1")
    # "ghost" never arrives: after the does-not-exist timeout the config is published.
    config = got.wait_config()
    assert config.clusters["ghost"].error is not None
    assert "does not exist" in config.clusters["ghost"].error
    assert config.clusters["good"].error is None
    assert config.clusters["shadow"].error is None
    assert got.errors == []


def test_aggregate_clusters_and_cycles(server: AdsServer, client: XdsClient) -> None:
    got = Collector()
    DependencyManager(client).watch_listener("svc", got.on_config, got.on_error)
    names(server, LDS)({"svc"})
    server.send(LDS, [listener("svc", "rc")], "1")
    names(server, RDS)({"rc"})
    server.send(RDS, [route_config("rc", "agg")], "1")
    names(server, CDS)({"agg"})
    server.send(CDS, [aggregate_cluster("agg", ["inner", "static"])], "1")
    names(server, CDS)({"agg", "inner", "static"})
    server.send(
        CDS,
        [
            aggregate_cluster("agg", ["inner", "static"]),
            aggregate_cluster("inner", ["e1"]),
            dns_cluster("static", [("127.0.0.1", 3)], "STATIC"),
        ],
        "2",
    )
    names(server, CDS)({"agg", "inner", "static", "e1"})
    server.send(
        CDS,
        [
            aggregate_cluster("agg", ["inner", "static"]),
            aggregate_cluster("inner", ["e1"]),
            dns_cluster("static", [("127.0.0.1", 3)], "STATIC"),
            eds_cluster("e1"),
        ],
        "3",
    )
    assert got.configs == []
    server.send(EDS, [cla("e1", [("127.0.0.1", 4)])], "1")
    config = got.wait_config()
    assert config.clusters["agg"].leaf_clusters == ("e1", "static")
    assert config.clusters["inner"].leaf_clusters == ("e1",)
    assert config.clusters["e1"].endpoints is not None
    # a cycle agg -> inner -> agg is an error on the aggregate, not a hang
    server.send(
        CDS,
        [aggregate_cluster("agg", ["inner"]), aggregate_cluster("inner", ["agg"])],
        "4",
    )
    bad = got.wait_config(lambda c: c.clusters["agg"].error is not None)
    assert "cycle" in (bad.clusters["inner"].error or "")
    assert "agg" in (bad.clusters["agg"].error or "")
    # no longer referenced: static and e1 are unsubscribed
    names(server, CDS)({"agg", "inner"})
    names(server, EDS)(set())


def test_unsubscribes_clusters_no_longer_referenced(server: AdsServer, client: XdsClient) -> None:
    got = Collector()
    DependencyManager(client).watch_listener("svc", got.on_config, got.on_error)
    names(server, LDS)({"svc"})
    server.send(LDS, [listener("svc", "rc")], "1")
    names(server, RDS)({"rc"})
    server.send(RDS, [route_config("rc", "c1")], "1")
    names(server, CDS)({"c1"})
    server.send(CDS, [eds_cluster("c1")], "1")
    server.send(EDS, [cla("c1", [("127.0.0.1", 5)])], "1")
    got.wait_config()
    server.send(RDS, [route_config("rc", "c2")], "2")
    names(server, CDS)({"c2"})
    names(server, EDS)(set())
    server.send(CDS, [eds_cluster("c2")], "2")
    names(server, EDS)({"c2"})
    server.send(EDS, [cla("c2", [("127.0.0.1", 6)])], "2")
    config = got.wait_config(lambda c: "c2" in c.clusters)
    assert set(config.clusters) == {"c2"}
    assert config.version == 2


def test_listener_does_not_exist_reports_error(server: AdsServer, client: XdsClient) -> None:
    got = Collector()
    DependencyManager(client).watch_listener("nope", got.on_config, got.on_error)
    names(server, LDS)({"nope"})
    name, err = got.wait_error()
    assert name == "nope"
    assert err.resource_name == "nope" and err.node_id == "node-7"
    assert got.configs == []


def test_route_config_nack_without_last_good_reports_error(
    server: AdsServer, client: XdsClient
) -> None:
    got = Collector()
    DependencyManager(client).watch_listener("svc", got.on_config, got.on_error)
    names(server, LDS)({"svc"})
    server.send(LDS, [listener("svc", "rc")], "1")
    names(server, RDS)({"rc"})
    server.send(RDS, [route_config("rc", regex="a(")], "1")
    name, err = got.wait_error()
    assert name == "svc" and err.resource_name == "rc"
    assert "safe_regex" in err.message


def test_dns_cluster_resolves_literals_and_localhost(server: AdsServer, client: XdsClient) -> None:
    got = Collector()
    DependencyManager(client).watch_listener("svc", got.on_config, got.on_error)
    names(server, LDS)({"svc"})
    server.send(LDS, [listener_inline("svc", route_config("rc", "dns"))], "1")
    names(server, CDS)({"dns"})
    server.send(
        CDS, [dns_cluster("dns", [("localhost", 7000), ("10.1.2.3", 7001)], "STRICT_DNS")], "1"
    )
    config = got.wait_config()
    endpoints = config.clusters["dns"].endpoints
    assert endpoints is not None
    assert [e.address for e in endpoints.endpoints] == ["127.0.0.1:7000", "10.1.2.3:7001"]
    assert endpoints.endpoints[0].hostname == "localhost"


def test_cancel_unsubscribes_everything(server: AdsServer, client: XdsClient) -> None:
    got = Collector()
    cancel = DependencyManager(client).watch_listener("svc", got.on_config, got.on_error)
    names(server, LDS)({"svc"})
    server.send(LDS, [listener_inline("svc", route_config("rc", "c1"))], "1")
    names(server, CDS)({"c1"})
    cancel()
    names(server, LDS)(set())
    names(server, CDS)(set())


class DnsServer:
    """A tiny authoritative UDP DNS server on 127.0.0.1 answering A queries from a dict."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = dict(records)
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True, name="test-dns")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text()
            self.queries += 1
            if question.rdtype == dns.rdatatype.A and name in self.records:
                response.answer.append(dns.rrset.from_text(name, 1, "IN", "A", self.records[name]))
            try:
                self.sock.sendto(response.to_wire(), peer)
            except OSError:  # closed by the test's end while answering
                return

    def resolver(self) -> dns.asyncresolver.Resolver:
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.port = self.port
        r.lifetime = 5.0
        return r

    def close(self) -> None:
        self.sock.close()


def test_dns_cluster_queries_and_re_resolves(server: AdsServer, client: XdsClient) -> None:
    dns_server = DnsServer({"backend.test.": "10.0.0.1"})
    try:
        got = Collector()
        manager = DependencyManager(client, resolver=dns_server.resolver())
        manager.watch_listener("svc", got.on_config, got.on_error)
        names(server, LDS)({"svc"})
        server.send(LDS, [listener_inline("svc", route_config("rc", "dns"))], "1")
        names(server, CDS)({"dns"})
        cluster = dns_cluster("dns", [("backend.test.", 80)], "STRICT_DNS")
        cluster.dns_refresh_rate.FromMilliseconds(100)
        cluster.dns_lookup_family = cluster.V4_ONLY
        server.send(CDS, [cluster], "1")
        first = got.wait_config()
        endpoints = first.clusters["dns"].endpoints
        assert endpoints is not None
        assert [e.address for e in endpoints.endpoints] == ["10.0.0.1:80"]
        assert endpoints.endpoints[0].hostname == "backend.test."
        dns_server.records["backend.test."] = "10.0.0.2"
        second = got.wait_config(lambda c: c.version == 2)
        endpoints = second.clusters["dns"].endpoints
        assert endpoints is not None
        assert [e.address for e in endpoints.endpoints] == ["10.0.0.2:80"]
    finally:
        dns_server.close()


def test_dns_failure_without_result_is_cluster_error(server: AdsServer, client: XdsClient) -> None:
    dns_server = DnsServer({})
    try:
        got = Collector()
        manager = DependencyManager(client, resolver=dns_server.resolver())
        manager.watch_listener("svc", got.on_config, got.on_error)
        names(server, LDS)({"svc"})
        server.send(LDS, [listener_inline("svc", route_config("rc", "dns"))], "1")
        names(server, CDS)({"dns"})
        server.send(CDS, [dns_cluster("dns", [("nowhere.test.", 80)], "LOGICAL_DNS")], "1")
        config = got.wait_config()
        assert "nowhere.test." in (config.clusters["dns"].error or "")
    finally:
        dns_server.close()


def test_server_restart_keeps_config_without_republishing(
    server: AdsServer, client: XdsClient
) -> None:
    got = Collector()
    DependencyManager(client).watch_listener("svc", got.on_config, got.on_error)
    names(server, LDS)({"svc"})
    server.send(LDS, [listener("svc", "rc")], "1")
    names(server, RDS)({"rc"})
    server.send(RDS, [route_config("rc", "c1")], "1")
    names(server, CDS)({"c1"})
    server.send(CDS, [eds_cluster("c1")], "1")
    names(server, EDS)({"c1"})
    n = server.send(EDS, [cla("c1", [("127.0.0.1", 8080)])], "1")
    got.wait_config()
    server.wait_request(lambda r: r.response_nonce == n)  # the old stream is quiet now
    mark = server.mark()
    server.restart()
    for type_url, name in ((LDS, "svc"), (RDS, "rc"), (CDS, "c1"), (EDS, "c1")):
        req = names(server, type_url, since=mark)({name})
        assert req.version_info == "1" and req.response_nonce == ""
    # The restarted server sends the same resources: acknowledged, nothing republished.
    nonces = [
        server.send(LDS, [listener("svc", "rc")], "1"),
        server.send(RDS, [route_config("rc", "c1")], "1"),
        server.send(CDS, [eds_cluster("c1")], "1"),
        server.send(EDS, [cla("c1", [("127.0.0.1", 8080)])], "1"),
    ]
    for nonce in nonces:

        def acked(r: Any, n: str = nonce) -> bool:
            return bool(r.response_nonce == n)

        server.wait_request(acked, since=mark)
    assert [c.version for c in got.configs] == [1]
    assert got.errors == []


def test_listener_deleted_then_recreated_republishes(server: AdsServer, client: XdsClient) -> None:
    got = Collector()
    DependencyManager(client).watch_listener("svc", got.on_config, got.on_error)
    names(server, LDS)({"svc"})
    inline = listener_inline("svc", route_config("rc", "s"))
    server.send(LDS, [inline], "1")
    names(server, CDS)({"s"})
    server.send(CDS, [dns_cluster("s", [("127.0.0.1", 1)], "STATIC")], "1")
    got.wait_config()
    server.send(LDS, [], "2")  # SotW: the listener is gone
    name, err = got.wait_error()
    assert name == "svc" and "does not exist" in err.message
    server.send(LDS, [inline], "3")
    again = got.wait_config(lambda c: c.version == 2)
    assert again.clusters["s"].endpoints is not None


def test_on_demand_clusters_join_without_holding_the_listener_back(
    server: AdsServer, client: XdsClient
) -> None:
    # A cluster_header target subscribed on demand: the listener keeps publishing while
    # it is pending; it joins the config once resolved, and a missing one joins with its
    # error after the does-not-exist timeout. Both stay subscribed.
    got = Collector()
    handle = DependencyManager(client).watch_listener("svc", got.on_config, got.on_error)
    names(server, LDS)({"svc"})
    rc = route_config("rc", "c1")
    server.send(LDS, [listener_inline("svc", rc)], "1")
    names(server, CDS)({"c1"})
    server.send(CDS, [dns_cluster("c1", [("127.0.0.1", 1)], "STATIC")], "1")
    assert set(got.wait_config().clusters) == {"c1"}
    handle.add_cluster("extra")
    handle.add_cluster("ghost")
    handle.add_cluster("extra")  # once
    names(server, CDS)({"c1", "extra", "ghost"})
    server.send(
        CDS,
        [
            dns_cluster("c1", [("127.0.0.1", 1)], "STATIC"),
            dns_cluster("extra", [("127.0.0.1", 3)], "STATIC"),
        ],
        "2",
    )
    config = got.wait_config(lambda c: "extra" in c.clusters)
    assert config.clusters["extra"].error is None
    assert "ghost" not in config.clusters  # pending: not holding the others back
    config = got.wait_config(lambda c: "ghost" in c.clusters)
    assert "does not exist" in (config.clusters["ghost"].error or "")
    assert got.errors == []
