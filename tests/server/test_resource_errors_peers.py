"""Real clients accept responses that carry ``resource_errors`` (xRFC TP3): Envoy over SotW
ADS and grpcio's own xDS client subscribe to names the snapshot lacks and still ACK, with
zero NACKs, while the resources that do exist keep working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import duration_pb2

from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
    Snapshot,
    compile_mesh,
)
from pymesh.server.config_file import http_connection_manager
from pymesh.testing import EchoBackend
from pymesh.testing.envoy import (
    ENVOY_NODE,
    EnvoyProcess,
    envoy_listener_for,
    envoy_snapshot,
    free_port,
    start_envoy,
)

TIMEOUT = 30.0
ALL_TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)


@pytest.fixture
def backend() -> Iterator[EchoBackend]:
    with EchoBackend("web") as b:
        yield b


def _missing_route_listener(port: int) -> listener_pb2.Listener:
    """A socket listener whose HCM fetches the missing route config ``missing-route``.

    Its RDS source never times out (``initial_fetch_timeout: 0s``), so the listener stays
    warming for as long as the route config is missing: no race with Envoy's 15 s timer.
    """
    hcm = http_connection_manager("missing-route")
    hcm.rds.config_source.initial_fetch_timeout.CopyFrom(duration_pb2.Duration(seconds=0))
    lis = envoy_listener_for("missing-route", port)
    lis.filter_chains[0].filters[0].typed_config.Pack(hcm)
    return lis


def _missing_eds_cluster() -> cluster_pb2.Cluster:
    """An EDS cluster whose endpoints ``missing-eds`` are missing (no fetch timeout)."""
    cluster = cluster_pb2.Cluster(
        name="missing-eds", type=cluster_pb2.Cluster.EDS, connect_timeout={"seconds": 1}
    )
    eds = cluster.eds_cluster_config.eds_config
    eds.ads.SetInParent()
    eds.resource_api_version = config_source_pb2.V3
    eds.initial_fetch_timeout.CopyFrom(duration_pb2.Duration(seconds=0))
    return cluster


def _dynamic(envoy: EnvoyProcess) -> dict[str, Any]:
    status, body = envoy.admin_get("/config_dump")
    assert status == 200, body
    out: dict[str, Any] = {}
    for c in json.loads(body)["configs"]:
        out.update(c)
    return out


def test_envoy_sotw_acks_responses_with_resource_errors(backend: EchoBackend) -> None:
    port, missing_port = free_port(), free_port()
    mesh = compile_mesh({"services": {"web": {"port": 80, "endpoints": [backend.address]}}})
    with ControlPlane() as cp:
        good = envoy_snapshot(mesh, {"web:80": port})
        cp.set_snapshot(good, node_id=ENVOY_NODE)
        with start_envoy(cp.port) as envoy, httpx.Client(timeout=10) as client:
            for t in ALL_TYPES:
                cp.wait_for_ack(t, good.version, TIMEOUT, node_id=ENVOY_NODE)
            envoy.wait_listening([port], TIMEOUT)
            # Dangling on purpose (set_snapshot would refuse it): the cache takes it as is.
            broken = Snapshot.of(
                "with-missing",
                listeners=[
                    *good.get(LISTENER_TYPE).values(),
                    _missing_route_listener(missing_port),
                ],
                routes=good.get(ROUTE_TYPE).values(),
                clusters=[*good.get(CLUSTER_TYPE).values(), _missing_eds_cluster()],
                endpoints=good.get(ENDPOINT_TYPE).values(),
            )
            cp.cache.set_snapshot(broken, node_id=ENVOY_NODE)
            # Envoy subscribes to both missing names and ACKs the responses naming them as
            # NOT_FOUND. (Envoy 1.40 does not act on resource_errors: the listener and the
            # cluster keep warming, and CDS is ACKed only once the cluster has warmed.)
            cp.wait_for_ack(LISTENER_TYPE, broken.version, TIMEOUT, node_id=ENVOY_NODE)
            cp.wait_for_ack(
                ROUTE_TYPE, broken.version, TIMEOUT, ENVOY_NODE, not_found=["missing-route"]
            )
            cp.wait_for_ack(
                ENDPOINT_TYPE, broken.version, TIMEOUT, ENVOY_NODE, not_found=["missing-eds"]
            )
            dump = _dynamic(envoy)
            warming = [lis["name"] for lis in dump["dynamic_listeners"] if "warming_state" in lis]
            assert warming == ["envoy-missing-route"]
            assert [c["cluster"]["name"] for c in dump["dynamic_warming_clusters"]] == [
                "missing-eds"
            ]
            r = client.get(f"http://127.0.0.1:{port}/", headers={"host": "web"})
            assert (r.status_code, r.headers["x-backend"]) == (200, "web")

            # The missing resources appear: both warm, and every type is ACKed, errors gone.
            fixed = Snapshot.of(
                "fixed",
                listeners=broken.get(LISTENER_TYPE).values(),
                routes=[
                    *good.get(ROUTE_TYPE).values(),
                    route_pb2.RouteConfiguration(name="missing-route"),
                ],
                clusters=broken.get(CLUSTER_TYPE).values(),
                endpoints=[
                    *good.get(ENDPOINT_TYPE).values(),
                    endpoint_pb2.ClusterLoadAssignment(cluster_name="missing-eds"),
                ],
            )
            cp.set_snapshot(fixed, node_id=ENVOY_NODE)
            for t in ALL_TYPES:
                cp.wait_for_ack(t, fixed.version, TIMEOUT, ENVOY_NODE, not_found=[])
            envoy.wait_listening([port, missing_port], TIMEOUT)
        assert cp.nacks == []


GRPC_CLIENT = """
import json, sys
import grpc

out = {}
for target, timeout in json.loads(sys.argv[2]):
    with grpc.insecure_channel("xds:///" + target) as channel:
        try:
            out[target] = channel.unary_unary(sys.argv[1])(b"hi", timeout=timeout).decode()
        except grpc.RpcError as e:
            out[target] = e.code().name + ": " + (e.details() or "")
print(json.dumps(out))
"""


class _GrpcEcho:
    """A generic gRPC server answering ``/t.Echo/Echo`` with ``ok``."""

    def __init__(self) -> None:
        handler = grpc.method_handlers_generic_handler(
            "t.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"ok")}
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


def test_grpcio_acks_responses_with_resource_errors(tmp_path: Path) -> None:
    echo = _GrpcEcho()
    node = "grpcio-errors"
    try:
        with ControlPlane() as cp:
            snap = compile_mesh(
                {"services": {"echo": {"port": 50051, "endpoints": [f"127.0.0.1:{echo.port}"]}}}
            )
            cp.set_snapshot(snap)
            boot = tmp_path / "bootstrap.json"
            boot.write_text(
                json.dumps(
                    {
                        "xds_servers": [
                            {
                                "server_uri": cp.address,
                                "channel_creds": [{"type": "insecure"}],
                                "server_features": ["xds_v3"],
                            }
                        ],
                        "node": {"id": node},
                    }
                )
            )
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    GRPC_CLIENT,
                    "/t.Echo/Echo",
                    # grpcio 1.85 ignores resource_errors and waits out its 15 s timer for
                    # the missing listener; 3 s is enough to subscribe and ACK.
                    json.dumps([["echo:50051", 30], ["nope:1", 3]]),
                ],
                env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(boot)},
                capture_output=True,
                text=True,
                timeout=100,
            )
            assert proc.returncode == 0, proc.stderr[-4000:]
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            assert out["echo:50051"] == "ok"
            assert out["nope:1"].startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")), out
            for t in ALL_TYPES:
                cp.wait_for_ack(t, snap.version, TIMEOUT, node_id=node, not_found=[])
            # The response naming the missing listener as NOT_FOUND was ACKed too.
            cp.wait_for_ack(LISTENER_TYPE, snap.version, TIMEOUT, node, not_found=["nope:1"])
            assert cp.nacks == []
    finally:
        echo.server.stop(0)
