"""Unsupported-field warnings: once per (resource, version, field), bounded memory."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from _resbuild import eds_cluster

from pymesh.errors import ResourceInvalid
from pymesh.xds.resources import _warnings, parse_cluster
from pymesh.xds.resources._warnings import WarnedFields, collecting


def _warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pymesh.xds" and r.levelno == logging.WARNING and text in r.getMessage()
    ]


def test_once_per_version_and_field() -> None:
    w = WarnedFields()
    assert w.first_time("s", "Cluster", "c", "1", "lrs_server")
    assert not w.first_time("s", "Cluster", "c", "1", "lrs_server")
    assert w.first_time("s", "Cluster", "c", "1", "health_checks")
    # A new version warns again, once.
    assert w.first_time("s", "Cluster", "c", "2", "lrs_server")
    assert not w.first_time("s", "Cluster", "c", "2", "lrs_server")
    # Other resources, kinds and sources are separate.
    assert w.first_time("s", "Cluster", "d", "2", "lrs_server")
    assert w.first_time("s", "Listener", "c", "2", "lrs_server")
    assert w.first_time("t", "Cluster", "c", "2", "lrs_server")


def test_indices_are_one_field() -> None:
    w = WarnedFields()
    assert w.first_time("s", "RouteConfiguration", "rc", "1", "virtual_hosts[0].cors")
    assert not w.first_time("s", "RouteConfiguration", "rc", "1", "virtual_hosts[7].cors")
    assert w.first_time("s", "RouteConfiguration", "rc", "1", 'a[0].per_filter["x"].y')
    assert not w.first_time("s", "RouteConfiguration", "rc", "1", 'a[1].per_filter["z"].y')


def test_superseded_versions_are_forgotten() -> None:
    w = WarnedFields()
    for version in map(str, range(100)):
        assert w.first_time("s", "Cluster", "c", version, "lrs_server")
    assert len(w) == 1  # one entry per resource, however many versions went by
    # Going back to an old version is a new version for the log.
    assert w.first_time("s", "Cluster", "c", "5", "lrs_server")


def test_lru_bound() -> None:
    w = WarnedFields(max_resources=3)
    for name in ("a", "b", "c"):
        assert w.first_time("s", "Cluster", name, "1", "f")
    assert not w.first_time("s", "Cluster", "a", "1", "f")  # "a" is now the most recent
    assert w.first_time("s", "Cluster", "d", "1", "f")  # evicts "b", the least recent
    assert len(w) == 3
    assert not w.first_time("s", "Cluster", "a", "1", "f")
    assert not w.first_time("s", "Cluster", "c", "1", "f")
    assert w.first_time("s", "Cluster", "b", "1", "f")  # forgotten, so it warns again


def _cluster_with_lrs(name: str) -> Any:
    c = eds_cluster(name)
    c.lrs_server.self.SetInParent()
    return c


def test_collecting_logs_once_per_version(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pymesh.xds"):
        for version in ("1", "1", "2", "2", "1"):
            with collecting("test-collecting", version):
                out = parse_cluster(_cluster_with_lrs("collect-c"))
            assert out.unsupported == ("lrs_server",)
    logs = _warnings_about(caplog, "'collect-c'")
    assert len(logs) == 3, logs
    assert [("version '1'" in m, "version '2'" in m) for m in logs] == [
        (True, False),
        (False, True),
        (True, False),
    ]
    for m in logs:
        assert m.startswith("Cluster 'collect-c' version ")
        assert "field lrs_server is set but not supported by pymesh" in m
        assert "it is ignored" in m


def test_rejected_resource_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    bad = _cluster_with_lrs("rejected-c")
    bad.connect_timeout.Clear()
    bad.connect_timeout.SetInParent()  # a zero timeout: NACK
    with caplog.at_level(logging.WARNING, logger="pymesh.xds"):
        with pytest.raises(ResourceInvalid, match="connect_timeout"), collecting("t-rej", "3"):
            parse_cluster(bad)
        assert _warnings_about(caplog, "'rejected-c'") == []
        # Version 3 was never accepted, so when it arrives valid it warns.
        with collecting("t-rej", "3"):
            parse_cluster(_cluster_with_lrs("rejected-c"))
    [msg] = _warnings_about(caplog, "'rejected-c'")
    assert "version '3'" in msg and "lrs_server" in msg


def test_direct_parse_warns_once_per_resource(caplog: pytest.LogCaptureFixture) -> None:
    _warnings.reset()
    with caplog.at_level(logging.WARNING, logger="pymesh.xds"):
        parse_cluster(_cluster_with_lrs("direct-c"))
        parse_cluster(_cluster_with_lrs("direct-c"))
        parse_cluster(_cluster_with_lrs("direct-d"))
    assert len(_warnings_about(caplog, "'direct-c'")) == 1
    [msg] = _warnings_about(caplog, "'direct-d'")
    assert msg.startswith("Cluster 'direct-d': field lrs_server")  # no version outside a client


def test_every_logged_warning_is_counted_per_field(caplog: pytest.LogCaptureFixture) -> None:
    source = "t-counts"
    with caplog.at_level(logging.WARNING, logger="pymesh.xds"):
        for version in ("1", "1", "2"):  # the re-sent version 1 is neither logged nor counted
            with collecting(source, version):
                parse_cluster(_cluster_with_lrs("count-a"))
        with collecting(source, "1"):
            parse_cluster(_cluster_with_lrs("count-b"))
        with collecting("t-counts-other", "1"):
            parse_cluster(_cluster_with_lrs("count-a"))
    assert len(_warnings_about(caplog, "'count-a'")) == 3
    assert _warnings.counts(source) == {("Cluster", "lrs_server"): 3}
    assert _warnings.counts("t-counts-other") == {("Cluster", "lrs_server"): 1}
    assert _warnings.counts()[("Cluster", "lrs_server")] >= 4  # every source
    assert _warnings.counts_dump(source) == [{"type": "Cluster", "field": "lrs_server", "count": 3}]


def test_counts_strip_indices_and_reset() -> None:
    from _resbuild import route_config

    from pymesh.xds.resources import parse_route_configuration

    rc = route_config()
    rc.virtual_hosts.add(name="vh2", domains=["b"]).cors.SetInParent()
    rc.virtual_hosts[0].cors.SetInParent()
    with collecting("t-index", "1"):
        parse_route_configuration(rc)
    # One warning for the resource version (indices stripped), counted once.
    assert _warnings.counts("t-index") == {("RouteConfiguration", "virtual_hosts[].cors"): 1}
    _warnings.reset()
    assert _warnings.counts("t-index") == {}
