"""Snapshot construction and consistency; SnapshotCache per node and watchers."""

from __future__ import annotations

import threading

import pytest
from _server_helpers import simple_snapshot
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Snapshot,
    SnapshotCache,
    SnapshotInconsistent,
)


def eds_cluster(name: str, service_name: str = "") -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.eds_cluster_config.service_name = service_name
    c.eds_cluster_config.eds_config.ads.SetInParent()
    return c


def route_to(*clusters: str) -> route_pb2.RouteConfiguration:
    r = route_components_pb2.Route()
    r.match.prefix = "/"
    if len(clusters) == 1:
        r.route.cluster = clusters[0]
    else:
        for c in clusters:
            r.route.weighted_clusters.clusters.add(name=c).weight.value = 1
    vh = route_components_pb2.VirtualHost(name="vh", domains=["*"], routes=[r])
    return route_pb2.RouteConfiguration(name="rc", virtual_hosts=[vh])


def test_resources_keyed_by_name_and_read_only() -> None:
    snap = simple_snapshot("v1", "a:80", "b:80")
    assert snap.version == "v1"
    assert list(snap.get(LISTENER_TYPE)) == ["a:80", "b:80"]
    assert list(snap.get(ROUTE_TYPE)) == ["a:80", "b:80"]
    assert dict(snap.get(CLUSTER_TYPE)) == {}
    with pytest.raises(TypeError):
        snap.get(LISTENER_TYPE)["c"] = None  # type: ignore[index, unused-ignore]
    snap.consistent()


def test_cla_is_keyed_by_cluster_name() -> None:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c1")
    snap = Snapshot.of("1", clusters=[eds_cluster("c1")], endpoints=[cla])
    assert list(snap.get(ENDPOINT_TYPE)) == ["c1"]
    snap.consistent()


def test_version_defaults_to_a_content_hash() -> None:
    a = Snapshot.of(clusters=[eds_cluster("c1")])
    b = Snapshot.of(clusters=[eds_cluster("c1")])
    c = Snapshot.of(clusters=[eds_cluster("c2")])
    assert a.version == b.version != c.version
    assert len(a.version) == 12


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate Cluster named 'c1'"):
        Snapshot.of("1", clusters=[eds_cluster("c1"), eds_cluster("c1")])


def test_missing_rds_route_config() -> None:
    snap = Snapshot.of("1", listeners=simple_snapshot("x", "l:80").get(LISTENER_TYPE).values())
    with pytest.raises(SnapshotInconsistent, match="listener 'l:80' uses route config 'l:80'"):
        snap.consistent()


def test_missing_cluster_of_a_route() -> None:
    snap = Snapshot.of("1", routes=[route_to("c1")])
    with pytest.raises(SnapshotInconsistent, match="cluster 'c1', which is missing"):
        snap.consistent()


def test_missing_weighted_cluster() -> None:
    snap = Snapshot.of(
        "1",
        routes=[route_to("c1", "c2")],
        clusters=[eds_cluster("c1")],
        endpoints=[endpoint_pb2.ClusterLoadAssignment(cluster_name="c1")],
    )
    with pytest.raises(SnapshotInconsistent, match="'c2'"):
        snap.consistent()


def test_missing_eds_endpoints_by_service_name() -> None:
    snap = Snapshot.of(
        "1",
        clusters=[eds_cluster("c1", service_name="svc")],
        endpoints=[endpoint_pb2.ClusterLoadAssignment(cluster_name="c1")],
    )
    with pytest.raises(SnapshotInconsistent, match="EDS cluster 'c1' needs endpoints 'svc'"):
        snap.consistent()


def test_non_eds_cluster_needs_no_endpoints() -> None:
    c = cluster_pb2.Cluster(name="static", type=cluster_pb2.Cluster.STATIC)
    Snapshot.of("1", clusters=[c]).consistent()


def test_cache_default_and_per_node() -> None:
    cache = SnapshotCache()
    assert cache.get_snapshot("n") is None
    default, special = simple_snapshot("d"), simple_snapshot("s")
    cache.set_snapshot(default)
    cache.set_snapshot(special, node_id="n1")
    assert cache.get_snapshot("n1") is special
    assert cache.get_snapshot("n2") is default
    cache.clear_snapshot("n1")
    assert cache.get_snapshot("n1") is default
    assert "default='d'" in repr(cache)


def test_cache_watchers_are_told_and_can_cancel() -> None:
    cache = SnapshotCache()
    seen: list[str | None] = []
    cancel = cache.watch(seen.append)
    cache.set_snapshot(simple_snapshot("1"))
    cache.set_snapshot(simple_snapshot("2"), node_id="n")
    cancel()
    cache.set_snapshot(simple_snapshot("3"))
    assert seen == [None, "n"]


def test_cache_is_thread_safe() -> None:
    cache = SnapshotCache()
    counts: list[int] = []
    lock = threading.Lock()

    def watcher(_node: str | None) -> None:
        with lock:
            counts.append(1)

    cache.watch(watcher)
    snaps = [simple_snapshot(str(i)) for i in range(50)]

    def writer(k: int) -> None:
        for s in snaps:
            cache.set_snapshot(s, node_id=f"n{k}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(counts) == 200
    assert all(cache.get_snapshot(f"n{k}") is snaps[-1] for k in range(4))
