"""pymesh's gRPC channel and grpcio's own xds:/// channel, fed the same control-plane
config and calling the same real backends, must behave alike."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "grpc"))

from _backend import ECHO, ECHO2, HANG, Backend, bootstrap

import pymesh
import pymesh.grpc
from pymesh.server import ControlPlane, compile_mesh

TARGET = "xds:///echo:50051"

# Shared by both clients: the grpcio one runs it in a fresh interpreter (GRPC_XDS_BOOTSTRAP
# must be set before grpc initialises), pymesh's in this process.
CLIENT = r"""
import collections
import grpc

def run(channel, calls, tag):
    out = {}
    for label, method, metadata, timeout, n in calls:
        seen = collections.Counter()
        for i in range(n):
            md = [tuple(kv) for kv in metadata] + [("x-req-id", f"{tag}-{label}-{i}")]
            try:
                reply = channel.unary_unary(method)(
                    b"p", timeout=timeout, metadata=md, wait_for_ready=timeout > 5
                )
                seen[reply.split(b":")[0].decode()] += 1
            except grpc.RpcError as err:
                seen[err.code().name] += 1
        out[label] = dict(seen)
    return out
"""

MAIN = r"""
import json, sys
import grpc
with grpc.insecure_channel("xds:///echo:50051") as channel:
    print(json.dumps(run(channel, json.loads(sys.argv[1]), "g")))
"""

SPLIT_N = 300
CALLS: list[list[Any]] = [
    ["split", ECHO, [["x-case", "split"]], 20, SPLIT_N],
    ["jason", ECHO, [["x-user", "jason"]], 20, 10],
    ["echo2", ECHO2, [], 20, 10],
    ["jason-echo2", ECHO2, [["x-user", "jason"]], 20, 5],
    ["default", ECHO, [["x-user", "bob"]], 20, 10],
    ["retry-ok", ECHO, [["x-case", "retry"], ["x-fail-until", "2"]], 20, 10],
    ["retry-exhausted", ECHO, [["x-case", "retry"], ["x-fail-until", "9"]], 20, 5],
    ["abort-grpc", ECHO, [["x-case", "abort-grpc"]], 20, 5],
    ["abort-http", ECHO, [["x-case", "abort-http"]], 20, 5],
    ["delay", ECHO, [["x-case", "delay"]], 0.5, 2],
    ["hang", HANG, [], 0.5, 2],
]


def mesh_file(a: Backend, b: Backend, flaky: Backend) -> dict[str, Any]:
    def case(name: str) -> dict[str, Any]:
        return {"headers": {"x-case": name}}

    return {
        "services": {
            "echo": {
                "port": 50051,
                "protocol": "grpc",
                "versions": {
                    "v1": {"endpoints": [a.address]},
                    "v2": {"endpoints": [b.address]},
                    "flaky": {"endpoints": [flaky.address]},
                },
                "routes": [
                    {"match": case("split"), "split": {"v1": 70, "v2": 30}},
                    {
                        # grpcio 1.85 sometimes loses a retry attempt when the backoff is
                        # a millisecond or so (seen without pymesh: a plain channel with a
                        # service-config retry policy); 50 ms is reliable.
                        "match": case("retry"),
                        "split": "flaky",
                        "retries": {
                            "attempts": 3,
                            "on": "unavailable",
                            "backoff": {"base": "50ms", "max": "100ms"},
                        },
                    },
                    {"match": case("abort-grpc"), "fault": {"abort": {"grpc_status": 8}}},
                    {"match": case("abort-http"), "fault": {"abort": {"status": 403}}},
                    {"match": case("delay"), "fault": {"delay": {"fixed": "20s"}}},
                    {"match": {"headers": {"x-user": "jason"}}, "split": "v2"},
                    {"match": {"path": ECHO2}, "split": "v2"},
                    {"split": "v1"},
                ],
            }
        }
    }


def grpcio_results(cp: ControlPlane, tmp_path: Path) -> dict[str, dict[str, int]]:
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap(cp.address, "grpcio-parity")))
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(path)}
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT + MAIN, json.dumps(CALLS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, dict[str, int]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def pymesh_results(cp: ControlPlane) -> dict[str, dict[str, int]]:
    namespace: dict[str, Any] = {}
    exec(CLIENT, namespace)
    with (
        pymesh.Mesh(bootstrap(cp.address, "pymesh-parity"), seed=11) as mesh,
        pymesh.grpc.insecure_channel(TARGET, mesh) as channel,
    ):
        result: dict[str, dict[str, int]] = namespace["run"](channel, CALLS, "p")
    return result


@pytest.mark.timeout(240)
def test_grpcio_and_pymesh_agree(tmp_path: Path) -> None:
    with (
        Backend("a") as a,
        Backend("b") as b,
        Backend("flaky") as flaky,
        ControlPlane() as cp,
    ):
        cp.set_snapshot(compile_mesh(mesh_file(a, b, flaky), "parity"))
        native = grpcio_results(cp, tmp_path)
        ours = pymesh_results(cp)
        assert cp.nacks == []
        attempts = dict(flaky.attempts)

    # Routing by method and metadata: identical, call for call.
    for label in ("jason", "echo2", "jason-echo2", "default"):
        assert ours[label] == native[label], label
    assert native["jason"] == {"b": 10} and native["default"] == {"a": 10}

    # Weighted split 70/30: each within 5 sd of 30 %, and of each other.
    sd = math.sqrt(SPLIT_N * 0.3 * 0.7)
    for got in (native["split"], ours["split"]):
        assert sum(got.values()) == SPLIT_N
        assert abs(got.get("b", 0) - 0.3 * SPLIT_N) <= 5 * sd, got
    assert abs(native["split"].get("b", 0) - ours["split"].get("b", 0)) <= 5 * sd * math.sqrt(2)

    # Retries (A44): the same outcome and the same number of attempts per call.
    assert ours["retry-ok"] == native["retry-ok"] == {"flaky": 10}
    assert ours["retry-exhausted"] == native["retry-exhausted"] == {"UNAVAILABLE": 5}
    for tag in ("g", "p"):
        assert [attempts[f"{tag}-retry-ok-{i}"] for i in range(10)] == [3] * 10, tag
        assert [attempts[f"{tag}-retry-exhausted-{i}"] for i in range(5)] == [4] * 5, tag

    # Fault injection (A33) and deadlines.
    assert ours["abort-grpc"] == native["abort-grpc"] == {"RESOURCE_EXHAUSTED": 5}
    assert ours["abort-http"] == native["abort-http"] == {"PERMISSION_DENIED": 5}
    assert ours["delay"] == native["delay"] == {"DEADLINE_EXCEEDED": 2}
    assert ours["hang"] == native["hang"] == {"DEADLINE_EXCEEDED": 2}
