"""Real gRPC backends and a control plane for the mesh channel tests (no generated code)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

SERVICE = "pymesh.test.Echo"
ECHO = f"/{SERVICE}/Echo"
ECHO2 = f"/{SERVICE}/Echo2"
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
        #: attempts seen per ``x-req-id`` (calls carrying ``x-fail-until: N`` fail N times)
        self.attempts: dict[str, int] = {}
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

        def per_id_failure(context: grpc.ServicerContext) -> None:
            md = dict(context.invocation_metadata())
            rid = md.get("x-req-id")
            if not isinstance(rid, str):
                return
            with self._lock:
                n = self.attempts[rid] = self.attempts.get(rid, 0) + 1
            if n <= int(md.get("x-fail-until", "0")):
                context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name}: {rid} attempt {n}")

        def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
            maybe_fail(count("Echo", context), context)
            per_id_failure(context)
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
                "Echo2": grpc.unary_unary_rpc_method_handler(echo),
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


def edit_routes(snap: Any, fn: Any, suffix: str = "-edited") -> Any:
    """A copy of ``snap`` with ``fn(route_config)`` applied to every RouteConfiguration
    (for fields the mesh file has no key for: hash policies, max_stream_duration...)."""
    from pymesh.server import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, Snapshot

    routes = []
    for rc in snap.get(ROUTE_TYPE).values():
        copy = type(rc)()
        copy.CopyFrom(rc)
        fn(copy)
        routes.append(copy)
    return Snapshot.of(
        snap.version + suffix,
        listeners=snap.get(LISTENER_TYPE).values(),
        routes=routes,
        clusters=snap.get(CLUSTER_TYPE).values(),
        endpoints=snap.get(ENDPOINT_TYPE).values(),
    )


def all_routes(rc: Any) -> Iterator[Any]:
    for vh in rc.virtual_hosts:
        yield from vh.routes


TARGET = "xds:///echo:50051"


def echo_service(**service: Any) -> dict[str, Any]:
    """A mesh file with one gRPC service ``echo:50051``."""
    return {"services": {"echo": {"port": 50051, "protocol": "grpc", **service}}}


def serve(cp: Any, service: dict[str, Any]) -> Any:
    from pymesh.server import compile_mesh

    snap = compile_mesh(service, "test")
    cp.set_snapshot(snap)
    return snap
