"""grpcio's own xDS client against pymesh's control plane: zero NACKs, routes honoured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
from _peers import ECHO_METHOD, GrpcEchoBackend, make_spiffe_pki

from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
    compile_mesh,
)

NODE = "grpcio-client"

# Runs in a fresh interpreter: GRPC_XDS_BOOTSTRAP must be set before grpc initialises.
CLIENT = """
import collections, json, sys
import grpc

calls = json.loads(sys.argv[1])
out = {}
with grpc.insecure_channel("xds:///echo:50051") as channel:
    echo = channel.unary_unary(sys.argv[2])
    for label, metadata, n in calls:
        seen = collections.Counter()
        for i in range(n):
            reply = echo(b"hi", metadata=metadata, timeout=30, wait_for_ready=True)
            seen[reply.split(b":")[0].decode()] += 1
        out[label] = dict(seen)
print(json.dumps(out))
"""


def mesh(a: GrpcEchoBackend, b: GrpcEchoBackend) -> dict[str, Any]:
    return {
        "services": {
            "echo": {
                "port": 50051,
                "protocol": "grpc",
                "versions": {"v1": {"endpoints": [a.address]}, "v2": {"endpoints": [b.address]}},
                "routes": [
                    {"match": {"headers": {"x-user": "jason"}}, "split": "v2"},
                    {
                        "match": {"prefix": "/pymesh.test.Echo/", "headers": {"x-split": "yes"}},
                        "split": {"v1": 50, "v2": 50},
                        "timeout": "20s",
                        "retries": {"attempts": 2, "on": "unavailable,cancelled"},
                    },
                    {"split": "v1"},
                ],
            }
        }
    }


def write_bootstrap(path: Path, cp: ControlPlane) -> dict[str, str]:
    path.write_text(
        json.dumps(
            {
                "xds_servers": [
                    {
                        "server_uri": cp.address,
                        "channel_creds": [{"type": "insecure"}],
                        "server_features": ["xds_v3"],
                    }
                ],
                "node": {"id": NODE, "cluster": "pymesh-test"},
            }
        )
    )
    return {**os.environ, "GRPC_XDS_BOOTSTRAP": str(path)}


def run_client(env: dict[str, str], calls: list[list[Any]]) -> dict[str, dict[str, int]]:
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, json.dumps(calls), ECHO_METHOD],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, dict[str, int]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_grpcio_xds_client_follows_routes(tmp_path: Path) -> None:
    with (
        GrpcEchoBackend("a") as a,
        GrpcEchoBackend("b") as b,
        ControlPlane() as cp,
    ):
        snap = compile_mesh(mesh(a, b), "test")
        cp.set_snapshot(snap)
        env = write_bootstrap(tmp_path / "bootstrap.json", cp)
        calls = [
            ["jason", [["x-user", "jason"]], 20],
            ["default", [], 20],
            ["split", [["x-split", "yes"]], 100],
        ]
        seen = run_client(env, calls)
        assert seen["jason"] == {"b": 20}
        assert seen["default"] == {"a": 20}
        # 50/50 over 100 calls: both sides get a fair share (P(< 20) is about 1e-9).
        assert set(seen["split"]) == {"a", "b"}
        assert min(seen["split"].values()) >= 20, seen["split"]
        assert a.count == 20 + seen["split"]["a"]
        assert cp.nacks == []
        acked = {x.type_url for x in cp.acks if x.node_id == NODE and x.version == snap.version}
        assert acked == {LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE}


def test_grpcio_accepts_every_lb_policy(tmp_path: Path) -> None:
    """LEAST_REQUEST, RANDOM and MAGLEV go in load_balancing_policy with a gRPC fallback."""
    lbs = ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"]
    with GrpcEchoBackend("a") as a, ControlPlane() as cp:
        services: dict[str, Any] = {
            f"lb{i}": {
                "port": 50051,
                "endpoints": [a.address],
                "traffic_policy": {"lb": lb}
                | ({"hash_on": {"header": "x-user"}} if lb in ("RING_HASH", "MAGLEV") else {}),
            }
            for i, lb in enumerate(lbs)
        }
        services["echo"] = {"port": 50051, "routes": [{"split": {s: 1 for s in services}}]}
        snap = compile_mesh({"services": services}, "test")
        cp.set_snapshot(snap)
        env = write_bootstrap(tmp_path / "bootstrap.json", cp)
        seen = run_client(env, [["all", [["x-user", "u1"]], 30]])
        assert seen["all"] == {"a": 30}
        assert cp.nacks == []
        cp.wait_for_ack(CLUSTER_TYPE, snap.version, 30, node_id=NODE)


TLS_CLIENT = """
import json, sys
import grpc, grpc.experimental

creds = grpc.xds_channel_credentials(
    fallback_credentials=grpc.experimental.insecure_channel_credentials()
)
out = {}
for target in sys.argv[2:]:
    with grpc.secure_channel("xds:///" + target, creds) as channel:
        echo = channel.unary_unary(sys.argv[1])
        try:
            out[target] = echo(b"hi", timeout=20).decode()
        except grpc.RpcError as e:
            out[target] = e.code().name
print(json.dumps(out))
"""


def test_grpcio_istio_mutual_tls_checks_the_spiffe_id(tmp_path: Path) -> None:
    """tls: ISTIO_MUTUAL → real mTLS through grpcio's xDS credentials, SAN enforced."""
    pki = make_spiffe_pki(tmp_path, "echo", "client")
    server = pki["echo"]
    creds = grpc.ssl_server_credentials(
        [(server["key"].read_bytes(), server["cert"].read_bytes())],
        root_certificates=server["ca"].read_bytes(),
        require_client_auth=True,
    )
    with GrpcEchoBackend("tls", creds) as backend, ControlPlane() as cp:
        wrong = "spiffe://cluster.local/ns/default/sa/someone-else"
        snap = compile_mesh(
            {
                "services": {
                    "echo": {
                        "port": 50051,
                        "endpoints": [backend.address],
                        "traffic_policy": {"tls": {"mode": "ISTIO_MUTUAL"}},
                    },
                    "impostor": {
                        "port": 50051,
                        "endpoints": [backend.address],
                        "traffic_policy": {
                            "tls": {"mode": "ISTIO_MUTUAL", "subject_alt_names": [wrong]}
                        },
                    },
                }
            },
            "test",
        )
        cp.set_snapshot(snap)
        env = write_bootstrap(tmp_path / "bootstrap.json", cp)
        boot = json.loads(Path(env["GRPC_XDS_BOOTSTRAP"]).read_text())
        client = pki["client"]
        boot["certificate_providers"] = {
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": str(client["cert"]),
                    "private_key_file": str(client["key"]),
                    "ca_certificate_file": str(client["ca"]),
                    "refresh_interval": "600s",
                },
            }
        }
        Path(env["GRPC_XDS_BOOTSTRAP"]).write_text(json.dumps(boot))
        proc = subprocess.run(
            [sys.executable, "-c", TLS_CLIENT, ECHO_METHOD, "echo:50051", "impostor:50051"],
            env=env,
            capture_output=True,
            text=True,
            timeout=100,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        seen = json.loads(proc.stdout.strip().splitlines()[-1])
        assert seen["echo:50051"] == "tls:hi"
        # The server's SPIFFE id is not the one configured: the handshake is refused.
        assert seen["impostor:50051"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
        assert backend.count == 1
        assert cp.nacks == []
