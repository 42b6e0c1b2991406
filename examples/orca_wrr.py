"""Servers report their load (ORCA); clients balance by it (weighted round robin).

Run: python examples/orca_wrr.py

Three gRPC servers on 127.0.0.1 report application utilizations 0.2, 0.5 and 1.0 with
pymesh.orca's interceptor; pymesh's embedded control plane gives their cluster Envoy's
client_side_weighted_round_robin; a pymesh.grpc channel then sends each server a share
in inverse proportion to its utilization (weight = qps / utilization: 10 : 4 : 2).
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent import futures

import grpc

import pymesh
import pymesh.grpc
from pymesh import orca
from pymesh.server import ControlPlane
from pymesh.testing import bootstrap_for, push_mesh

METHOD = "/example.Orca/Call"


def serve(name: str, utilization: float) -> tuple[grpc.Server, str]:
    """A gRPC server whose every answer carries its ORCA load report."""
    metrics = orca.ServerMetricsRecorder()  # or orca.server_metrics_recorder(), process-wide
    metrics.set_application_utilization(utilization)
    metrics.set_qps(100.0)

    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        rec = orca.call_metrics_recorder()  # this call's own metrics, if it has any
        assert rec is not None
        rec.set_request_cost("bytes", len(request))
        return name.encode()

    server = grpc.server(
        futures.ThreadPoolExecutor(4), interceptors=[orca.OrcaServerInterceptor(metrics)]
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "example.Orca", {"Call": grpc.unary_unary_rpc_method_handler(call)}
            ),
        )
    )
    orca.OrcaService(metrics).add_to_server(server)  # out-of-band reports too
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def main() -> None:
    servers = {name: serve(name, u) for name, u in (("a", 0.2), ("b", 0.5), ("c", 1.0))}
    try:
        with (
            ControlPlane(port=0) as cp,
            pymesh.Mesh(bootstrap=bootstrap_for(cp, "orca-example"), seed=1) as mesh,
        ):
            push_mesh(
                cp,
                mesh,
                {
                    "services": {
                        "work": {
                            "port": 50051,
                            "protocol": "grpc",
                            "endpoints": [address for _, address in servers.values()],
                            "traffic_policy": {
                                "lb": "CLIENT_SIDE_WEIGHTED_ROUND_ROBIN",
                                # Short periods for a demo (defaults: 10 s and 1 s).
                                "weighted_round_robin": {
                                    "blackout_period": "500ms",
                                    "weight_update_period": "100ms",
                                },
                            },
                        }
                    }
                },
            )
            with pymesh.grpc.insecure_channel("xds:///work:50051", mesh) as channel:
                call = channel.unary_unary(METHOD)
                # Until the weights are known (blackout), plain round robin.
                warm_until = time.monotonic() + 1.0
                while time.monotonic() < warm_until:
                    call(b"warm-up", timeout=5)
                served = Counter(call(b"hello", timeout=5).decode() for _ in range(320))
                print(f"320 calls: {dict(sorted(served.items()))}")
    finally:
        for server, _ in servers.values():
            server.stop(0).wait(5)


if __name__ == "__main__":
    main()
