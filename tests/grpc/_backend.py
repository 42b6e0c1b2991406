"""Real gRPC backends and a control plane for the mesh channel tests (no generated code)."""

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
HANG = f"/{SERVICE}/Hang"


class Backend:
    """A gRPC server with all four call types; replies name the backend.

    ``fail_first`` makes the first N Echo/Collect calls fail with ``fail_code``.
    ``Hang`` blocks until the client gives up (or the backend closes).
    """

    def __init__(
        self,
        name: str,
        *,
        fail_first: int = 0,
        fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        workers: int = 16,
    ) -> None:
        self.name = name
        self.fail_first = fail_first
        self.fail_code = fail_code
        self.calls: dict[str, int] = {}
        self.metadata: list[dict[str, Any]] = []
        self.compressions: list[str | None] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.hanging = threading.Semaphore(0)

        def count(method: str, context: grpc.ServicerContext) -> int:
            md = {k: v for k, v in context.invocation_metadata()}
            with self._lock:
                n = self.calls.get(method, 0) + 1
                self.calls[method] = n
                self.metadata.append(md)
            return n

        def maybe_fail(n: int, context: grpc.ServicerContext) -> None:
            if n <= self.fail_first:
                context.abort(self.fail_code, f"{self.name}: failing call {n}")

        def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
            maybe_fail(count("Echo", context), context)
            context.set_trailing_metadata((("x-backend", self.name),))
            return self.name.encode() + b":" + request

        def split(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            count("Split", context)
            for i in range(int(request or b"3")):
                yield f"{self.name}:{i}".encode()

        def collect(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            n = count("Collect", context)
            parts = list(requests)
            maybe_fail(n, context)
            return self.name.encode() + b":" + b",".join(parts)

        def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            count("Chat", context)
            for r in requests:
                yield self.name.encode() + b":" + r

        def hang(request: bytes, context: grpc.ServicerContext) -> bytes:
            count("Hang", context)
            self.hanging.release()
            done = threading.Event()
            context.add_callback(done.set)  # the client cancelled or its deadline passed
            while not done.wait(0.05) and not self._closing.is_set():
                pass
            return b"late"

        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": grpc.unary_unary_rpc_method_handler(echo),
                "Split": grpc.unary_stream_rpc_method_handler(split),
                "Collect": grpc.stream_unary_rpc_method_handler(collect),
                "Chat": grpc.stream_stream_rpc_method_handler(chat),
                "Hang": grpc.unary_unary_rpc_method_handler(hang),
            },
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(workers))
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, method: str = "Echo") -> int:
        with self._lock:
            return self.calls.get(method, 0)

    def close(self) -> None:
        self._closing.set()
        self._server.stop(0).wait(10)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bootstrap(cp_address: str, node: str = "test") -> dict[str, Any]:
    return {
        "xds_servers": [
            {
                "server_uri": cp_address,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node},
    }
