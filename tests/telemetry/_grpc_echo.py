"""A real gRPC echo server for the telemetry tests: records each call's metadata, can fail
the first calls with UNAVAILABLE, and streams replies one at a time on demand."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

SERVICE = "pymesh.test.Echo"
ECHO = f"/{SERVICE}/Echo"
SPLIT = f"/{SERVICE}/Split"
COLLECT = f"/{SERVICE}/Collect"
CHAT = f"/{SERVICE}/Chat"
TARGET = "xds:///echo:50051"
CLUSTER = "outbound|50051||echo"


class GrpcEcho:
    """Echo (unary), Split (server streaming: ``n`` replies, each once ``release()``d
    when ``gated``), Collect (client streaming) and Chat (bidi) on 127.0.0.1 with an
    OS-assigned port. The first ``fail_first`` Echo/Collect calls fail UNAVAILABLE."""

    def __init__(self, *, fail_first: int = 0, gated: bool = False) -> None:
        self.fail_first = fail_first
        self.metadata: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._gate = threading.Semaphore(0) if gated else None

        def record(context: grpc.ServicerContext) -> int:
            with self._lock:
                self.metadata.append(dict(context.invocation_metadata()))
                return len(self.metadata)

        def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
            if record(context) <= self.fail_first:
                context.abort(grpc.StatusCode.UNAVAILABLE, "failing on purpose")
            return b"echo:" + request

        def split(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            record(context)
            for i in range(int(request or b"2")):
                if self._gate is not None and not self._gate.acquire(timeout=30):
                    return
                yield str(i).encode()

        def collect(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            parts = list(requests)
            if record(context) <= self.fail_first:
                context.abort(grpc.StatusCode.UNAVAILABLE, "failing on purpose")
            return b",".join(parts)

        def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            record(context)
            for r in requests:
                yield b"chat:" + r

        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": grpc.unary_unary_rpc_method_handler(echo),
                "Split": grpc.unary_stream_rpc_method_handler(split),
                "Collect": grpc.stream_unary_rpc_method_handler(collect),
                "Chat": grpc.stream_stream_rpc_method_handler(chat),
            },
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(8))
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def release(self) -> None:
        """Let a gated stream send its next reply."""
        assert self._gate is not None
        self._gate.release()

    def close(self) -> None:
        self._server.stop(0).wait(10)

    def __enter__(self) -> GrpcEcho:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def echo_mesh(backend: GrpcEcho, **route: Any) -> dict[str, Any]:
    """A mesh file with one gRPC service ``echo:50051`` and one named route."""
    svc: dict[str, Any] = {
        "port": 50051,
        "protocol": "grpc",
        "endpoints": [backend.address],
        "routes": [{"name": "all", **route}],
    }
    return {"services": {"echo": svc}}
