"""Real peers for conformance tests: HTTP and gRPC backends, and a real Envoy.

Everything binds 127.0.0.1 with OS-assigned ports. Waits are bounded and event- or
response-driven; the only polling is on Envoy's admin endpoint, against a deadline.
"""

from __future__ import annotations

import collections
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx

import pymesh
from pymesh.server import ROUTE_TYPE, ControlPlane, Snapshot
from pymesh.testing import bootstrap_for
from pymesh.testing.envoy import (  # re-exported for the conformance tests
    ENVOY_NODE,
    EnvoyProcess,
    envoy_listener_for,
    envoy_snapshot,
    free_port,
    start_envoy,
)

__all__ = [
    "ECHO_METHOD",
    "ENVOY_NODE",
    "EnvoyPair",
    "EnvoyProcess",
    "GrpcEchoBackend",
    "HttpBackend",
    "envoy_listener_for",
    "envoy_snapshot",
    "free_port",
    "make_spiffe_pki",
    "start_envoy",
]

ECHO_METHOD = "/pymesh.test.Echo/Echo"


# ------------------------------------------------------------------- Envoy and pymesh pair


class EnvoyPair:
    """One control plane serving Envoy (a socket listener on ``envoy_port`` for
    reviews:9080, node "envoy") and pymesh (the api_listener, node ``node_id``)."""

    def __init__(self, node_id: str, seed: int | None = None) -> None:
        self.cp = ControlPlane().start()
        self.envoy_port = free_port()
        self.envoy: Any = None
        self.mesh = pymesh.Mesh(bootstrap=bootstrap_for(self.cp, node_id), seed=seed)

    def start_envoy(self) -> None:
        """Start Envoy on the first call; wait until its listener is up."""
        if self.envoy is None:
            self.envoy = start_envoy(self.cp.port, "envoy")
        self.envoy.wait_listening([self.envoy_port])

    def serve_snapshot(self, snap: Snapshot) -> None:
        """Serve ``snap`` to pymesh and its socket-listener form to Envoy; returns once
        Envoy has acknowledged its routes."""
        self.cp.set_snapshot(snap)
        self.cp.set_snapshot(envoy_snapshot(snap, {"reviews:9080": self.envoy_port}), "envoy")
        self.start_envoy()
        self.cp.wait_for_ack(ROUTE_TYPE, snap.version, 30, "envoy")

    def clients(self) -> dict[str, httpx.Client]:
        """A client for reviews:9080 through each: {"envoy": ..., "pymesh": ...}."""
        return {
            "envoy": httpx.Client(
                base_url=f"http://127.0.0.1:{self.envoy_port}",
                headers={"host": "reviews:9080"},
                timeout=20,
            ),
            "pymesh": httpx.Client(
                base_url="http://reviews:9080",
                transport=pymesh.MeshTransport(self.mesh),
                timeout=20,
            ),
        }

    def close(self) -> None:
        self.mesh.close()
        if self.envoy is not None:
            self.envoy.stop()
        self.cp.stop()


# ---------------------------------------------------------------------------- HTTP backend


class HttpBackend:
    """A threaded HTTP server answering 200 with ``x-backend: <name>`` and body ``<name>``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits: collections.Counter[str] = collections.Counter()  # path -> count
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with backend._lock:
                    backend.hits[self.path] += 1
                body = backend.name.encode()
                self.send_response(200)
                self.send_header("x-backend", backend.name)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"http-{name}", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.hits.values())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> HttpBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- gRPC backend


class GrpcEchoBackend:
    """A gRPC server for ``/pymesh.test.Echo/Echo`` (raw bytes, no generated code).

    The reply is ``<name>:<request>``; trailing metadata carries ``x-backend``.
    """

    def __init__(self, name: str, credentials: grpc.ServerCredentials | None = None) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.count = 0

        def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.count += 1
            context.set_trailing_metadata((("x-backend", self.name),))
            return self.name.encode() + b":" + request

        handler = grpc.method_handlers_generic_handler(
            "pymesh.test.Echo",
            {
                "Echo": grpc.unary_unary_rpc_method_handler(
                    echo, request_deserializer=None, response_serializer=None
                )
            },
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(4))
        self._server.add_generic_rpc_handlers((handler,))
        if credentials is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.stop(0).wait(10)

    def __enter__(self) -> GrpcEchoBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- Envoy


def make_spiffe_pki(directory: Path, *services: str) -> dict[str, dict[str, Path]]:
    """A CA plus one cert per service with SAN ``spiffe://cluster.local/ns/default/sa/<s>``.

    Returns ``{service: {"cert": ..., "key": ..., "ca": ...}}`` (PEM files in directory).
    Leaf certs also carry IP 127.0.0.1, so they work as server certs on loopback.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))

    def build(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
        sans: list[x509.GeneralName],
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        issuer_name, issuer_key = issuer or (name, key)
        b = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        return path

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("pymesh test CA", ca_key, None, [])
    ca = write(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
    out = {}
    for svc in services:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(f"spiffe://cluster.local/ns/default/sa/{svc}"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        cert = build(svc, key, (ca_cert.subject, ca_key), sans)
        out[svc] = {
            "cert": write(directory / f"{svc}.pem", cert.public_bytes(serialization.Encoding.PEM)),
            "key": write(directory / f"{svc}-key.pem", key_pem(key)),
            "ca": ca,
        }
    return out
