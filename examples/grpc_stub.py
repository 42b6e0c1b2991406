"""gRPC through pymesh: a generated stub on a mesh channel, split 80/20 between versions.

Run: python examples/grpc_stub.py   (needs grpcio-tools: pip install 'pymesh[examples]')

The stub code is generated from examples/protos/echo.proto into a temporary directory at
start, so the example needs no build step. ``pymesh.grpc.insecure_channel`` returns a
``grpc.Channel``: generated stubs work on it unchanged.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from collections import Counter
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from grpc_tools import protoc  # type: ignore[import-untyped]

import pymesh
import pymesh.grpc
from pymesh.server import ControlPlane
from pymesh.testing import bootstrap_for, push_mesh

PROTOS = Path(__file__).resolve().parent / "protos"


def generate(out: str) -> tuple[ModuleType, ModuleType]:
    """Run protoc on echo.proto; return the (messages, stubs) modules."""
    status = protoc.main(
        ["protoc", f"-I{PROTOS}", f"--python_out={out}", f"--grpc_python_out={out}", "echo.proto"]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}")
    sys.path.insert(0, out)
    return importlib.import_module("echo_pb2"), importlib.import_module("echo_pb2_grpc")


def serve(name: str, pb2: Any, pb2_grpc: Any) -> tuple[grpc.Server, int]:
    """A real gRPC server on 127.0.0.1 (any free port) answering as ``name``."""

    class Echo(pb2_grpc.EchoServicer):  # type: ignore[misc]
        def Say(self, request: Any, context: grpc.ServicerContext) -> Any:
            return pb2.EchoReply(text=request.text, backend=name)

    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        pb2, pb2_grpc = generate(out)
        (v1, v1_port), (v2, v2_port) = (
            serve("echo-v1", pb2, pb2_grpc),
            serve("echo-v2", pb2, pb2_grpc),
        )
        try:
            with (
                ControlPlane(port=0) as cp,
                pymesh.Mesh(bootstrap=bootstrap_for(cp, "grpc-example"), seed=3) as mesh,
            ):
                push_mesh(
                    cp,
                    mesh,
                    {
                        "services": {
                            "echo": {
                                "port": 50051,
                                "protocol": "grpc",
                                "versions": {
                                    "v1": {"endpoints": [f"127.0.0.1:{v1_port}"]},
                                    "v2": {"endpoints": [f"127.0.0.1:{v2_port}"]},
                                },
                                "routes": [{"split": {"v1": 80, "v2": 20}}],
                            }
                        }
                    },
                )
                channel = pymesh.grpc.insecure_channel("xds:///echo:50051", mesh=mesh)
                try:
                    stub = pb2_grpc.EchoStub(channel)
                    replies = [stub.Say(pb2.EchoRequest(text="hi"), timeout=5) for _ in range(100)]
                finally:
                    channel.close()
                served = Counter(r.backend for r in replies)
                print(f"100 calls: {dict(sorted(served.items()))}")
                print(f"echoed: {replies[0].text!r}")
        finally:
            v1.stop(0)
            v2.stop(0)


if __name__ == "__main__":
    main()
