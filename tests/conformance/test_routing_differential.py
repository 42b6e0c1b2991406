"""Differential routing: the real Envoy and pymesh get the same xDS and the same requests.

For every generated route table (prefix/path/regex/path_separated_prefix, case
sensitivity, every header matcher kind incl. invert/present/range/missing-as-empty,
query parameters, runtime fraction, direct responses, virtual-host domain kinds), each
request must reach the same backend through both, or both must answer the same local
status. Seeds 0..7 run in CI; a larger range runs on demand, e.g.
``PYMESH_DIFF_SEEDS=1000:1200 pytest tests/conformance/test_routing_differential.py``.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _peers import HttpBackend, envoy_listener_for, free_port, start_envoy
from _routegen import GeneratedRequest, requests, route_config
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2

import pymesh
from pymesh.server import ControlPlane, Snapshot
from pymesh.server.config_file import http_connection_manager
from pymesh.testing import bootstrap_for

CLUSTERS = ["c0", "c1", "c2", "c3"]
ROUTE_NAME = "diff-routes"
PROBE_HOST = "probe.test"
AUTHORITY = "diff.test:8000"  # the listener pymesh looks up; vhosts match the Host header
_SEEDS = os.environ.get("PYMESH_DIFF_SEEDS", "0:8").split(":")
SEEDS = range(int(_SEEDS[0]), int(_SEEDS[-1]) if len(_SEEDS) > 1 else int(_SEEDS[0]) + 1)
REQUESTS_PER_SEED = 40


def _cluster(name: str) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.eds_cluster_config.eds_config.CopyFrom(
        config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(),
            resource_api_version=config_source_pb2.V3,
        )
    )
    c.connect_timeout.FromMilliseconds(1000)
    return c


def _cla(name: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    ep = cla.endpoints.add().lb_endpoints.add().endpoint
    ep.address.socket_address.address = "127.0.0.1"
    ep.address.socket_address.port_value = port
    return cla


def _api_listener() -> listener_pb2.Listener:
    hcm = any_pb2.Any()
    hcm.Pack(http_connection_manager(ROUTE_NAME))
    return listener_pb2.Listener(
        name=AUTHORITY, api_listener=api_listener_pb2.ApiListener(api_listener=hcm)
    )


class Rig:
    """Backends, control plane, Envoy and a pymesh client, shared by every seed."""

    def __init__(self) -> None:
        self.backends = {name: HttpBackend(name) for name in CLUSTERS}
        self.cp = ControlPlane().start()
        self.envoy_port = free_port()
        self.seed = -1
        self.apply(0)
        self.envoy = start_envoy(self.cp.port, "envoy")
        self.envoy.wait_listening([self.envoy_port])
        self.mesh = pymesh.Mesh(bootstrap=bootstrap_for(self.cp, "pymesh-diff"))
        self.via_mesh = httpx.Client(transport=pymesh.MeshTransport(self.mesh), timeout=10)
        self.via_envoy = httpx.Client(timeout=10)

    def apply(self, seed: int) -> None:
        self.apply_routes(f"seed-{seed}", route_config(seed, ROUTE_NAME, CLUSTERS))
        self.seed = seed

    def apply_routes(self, version: str, rc: route_pb2.RouteConfiguration) -> None:
        # A probe virtual host answering the version: Envoy ACKs RDS before its worker
        # threads have the new table, so readiness is observed, not assumed from the ACK.
        probe = rc.virtual_hosts.add(name="probe", domains=[PROBE_HOST])
        route = probe.routes.add(name="probe")
        route.match.prefix = "/"
        route.direct_response.status = 200
        route.direct_response.body.inline_string = version
        common: dict[str, Any] = {
            "routes": [rc],
            "clusters": [_cluster(n) for n in CLUSTERS],
            "endpoints": [_cla(n, b.port) for n, b in self.backends.items()],
        }
        self.cp.set_snapshot(Snapshot.of(version, listeners=[_api_listener()], **common))
        self.cp.set_snapshot(
            Snapshot.of(
                version, listeners=[envoy_listener_for(ROUTE_NAME, self.envoy_port)], **common
            ),
            node_id="envoy",
        )
        if hasattr(self, "envoy"):
            self.wait_serving(version)
        self.seed = -1

    def wait_serving(self, version: str, timeout: float = 30.0) -> None:
        """Until both Envoy and pymesh answer the probe host with ``version``."""
        deadline = time.monotonic() + timeout
        for client, base in (
            (self.via_envoy, f"http://127.0.0.1:{self.envoy_port}"),
            (self.via_mesh, f"http://{AUTHORITY}"),
        ):
            while client.get(base + "/", headers={"host": PROBE_HOST}).text != version:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{base} did not apply {version} within {timeout}s")
                time.sleep(0.01)  # polling a peer's observable state against a deadline

    def outcome(self, client: httpx.Client, base: str, req: GeneratedRequest) -> str:
        resp = client.get(base + req.path, headers={"host": req.host, **req.headers})
        backend = resp.headers.get("x-backend")
        if backend:
            return f"cluster {backend}"
        return f"local {resp.status_code}"

    def close(self) -> None:
        self.via_mesh.close()
        self.via_envoy.close()
        self.mesh.close()
        self.envoy.stop()
        self.cp.stop()
        for b in self.backends.values():
            b.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    r.wait_serving("seed-0")
    yield r
    r.close()


def test_generator_exercises_routes(rig: Rig) -> None:
    """The CI seeds reach clusters, local answers and non-matches alike (else the
    comparison proves little)."""
    kinds = set()
    for seed in SEEDS:
        rig.apply(seed)
        for req in requests(seed, REQUESTS_PER_SEED):
            kinds.add(rig.outcome(rig.via_mesh, f"http://{AUTHORITY}", req).split()[0])
    assert kinds == {"cluster", "local"}


def _compare(rig: Rig, seed: int) -> tuple[int, list[str]]:
    if rig.seed != seed:
        rig.apply(seed)
    mismatches = []
    routed = 0
    for req in requests(seed, REQUESTS_PER_SEED):
        envoy = rig.outcome(rig.via_envoy, f"http://127.0.0.1:{rig.envoy_port}", req)
        mesh = rig.outcome(rig.via_mesh, f"http://{AUTHORITY}", req)
        routed += envoy.startswith("cluster")
        if envoy != mesh:
            mismatches.append(f"seed {seed}: {req.describe()}: envoy {envoy}, pymesh {mesh}")
    return routed, mismatches


@pytest.mark.parametrize("seed", SEEDS)
def test_same_cluster_as_envoy(rig: Rig, seed: int) -> None:
    _, mismatches = _compare(rig, seed)
    assert not mismatches, "\n".join(mismatches)
    assert not rig.cp.nacks, rig.cp.nacks


WEIGHTS = {"c0": 70, "c1": 20, "c2": 10}


def test_weighted_split_matches_envoy(rig: Rig) -> None:
    """70/20/10 over 1000 requests each: both within 4.5 sigma of the weights and of
    each other (binomial bounds)."""
    rc = route_pb2.RouteConfiguration(name=ROUTE_NAME)
    vh = rc.virtual_hosts.add(name="split", domains=["diff.test"])
    route = vh.routes.add(name="split")
    route.match.prefix = "/"
    for name, weight in WEIGHTS.items():
        route.route.weighted_clusters.clusters.add(name=name).weight.value = weight
    rig.apply_routes("weighted", rc)
    n = 1000
    req = GeneratedRequest("diff.test", "/split")
    counts: dict[str, Counter[str]] = {"envoy": Counter(), "pymesh": Counter()}
    for _ in range(n):
        counts["envoy"][rig.outcome(rig.via_envoy, f"http://127.0.0.1:{rig.envoy_port}", req)] += 1
        counts["pymesh"][rig.outcome(rig.via_mesh, f"http://{AUTHORITY}", req)] += 1
    for name, weight in WEIGHTS.items():
        p = weight / 100
        sigma = math.sqrt(n * p * (1 - p))
        got = {who: c[f"cluster {name}"] for who, c in counts.items()}
        for who, k in got.items():
            assert abs(k - n * p) <= 4.5 * sigma, (who, name, k, n * p, counts)
        # Two independent binomials: the difference has sigma * sqrt(2).
        assert abs(got["envoy"] - got["pymesh"]) <= 4.5 * sigma * math.sqrt(2), counts
