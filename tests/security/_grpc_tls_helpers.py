"""mTLS gRPC backends for the mesh channel TLS tests (tests/grpc/test_grpc_tls*.py).

:class:`TlsGrpcBackend` is a real grpc server requiring client certificates; it records
every call with the client's URI SANs and certificate serial (from ``auth_context``).
:class:`AcceptCounter` is a raw TCP listener that counts connections: an endpoint that
must never be dialled.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from _sec_helpers import SPIFFE, Leaf, Pki
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SERVICE = "pymesh.test.Echo"
ECHO = f"/{SERVICE}/Echo"
SPLIT = f"/{SERVICE}/Split"
CHAT = f"/{SERVICE}/Chat"
TARGET = "xds:///echo:50051"
CLUSTER = "outbound|50051||echo"


@dataclass(frozen=True)
class Seen:
    """One call as the server saw it."""

    method: str
    client_uris: tuple[str, ...]
    client_serial: int | None


class TlsGrpcBackend:
    """A grpc server on 127.0.0.1:0 with ``grpc.ssl_server_credentials(...,
    require_client_auth=True)``; replies ``<name>:<request>``."""

    def __init__(self, pki: Pki, leaf: Leaf, name: str = "echo") -> None:
        self.name = name
        self.seen: list[Seen] = []
        self._cond = threading.Condition(threading.RLock())

        def record(method: str, context: grpc.ServicerContext) -> None:
            auth = context.auth_context()
            sans = [v.decode() for v in auth.get("x509_subject_alternative_name", [])]
            pems = auth.get("x509_pem_cert", [])
            serial = x509.load_pem_x509_certificate(pems[0]).serial_number if pems else None
            with self._cond:
                uris = tuple(s for s in sans if s.startswith("spiffe://"))
                self.seen.append(Seen(method, uris, serial))
                self._cond.notify_all()

        def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
            record("Echo", context)
            return self.name.encode() + b":" + request

        def split(request: bytes, context: grpc.ServicerContext) -> Any:
            record("Split", context)
            for i in range(int(request or b"2")):
                yield f"{self.name}:{i}".encode()

        def chat(requests: Any, context: grpc.ServicerContext) -> Any:
            record("Chat", context)
            for r in requests:
                yield self.name.encode() + b":" + r

        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": grpc.unary_unary_rpc_method_handler(echo),
                "Split": grpc.unary_stream_rpc_method_handler(split),
                "Chat": grpc.stream_stream_rpc_method_handler(chat),
            },
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(8))
        self._server.add_generic_rpc_handlers((handler,))
        creds = grpc.ssl_server_credentials(
            [(leaf.key_pem, leaf.cert_pem)],
            root_certificates=pki.ca_pem,
            require_client_auth=True,
        )
        self.port = self._server.add_secure_port("127.0.0.1:0", creds)
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def calls(self) -> int:
        with self._cond:
            return len(self.seen)

    def wait(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Block until ``predicate()`` holds (re-checked at every recorded call)."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def serials(self) -> set[int | None]:
        with self._cond:
            return {s.client_serial for s in self.seen}

    def close(self) -> None:
        self._server.stop(0).wait(10)


class AcceptCounter:
    """A TCP listener on 127.0.0.1:0 that accepts, counts and closes connections."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.accepted = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="accept-counter")
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)


def serial_of(leaf: Leaf) -> int:
    return x509.load_pem_x509_certificate(leaf.cert_pem).serial_number


def tls_service(address: str, sans: list[str] | None = None) -> dict[str, Any]:
    """Mesh file: gRPC service ``echo:50051`` at ``address`` with ISTIO_MUTUAL TLS."""
    tls: dict[str, Any] = {"mode": "ISTIO_MUTUAL"}
    if sans is not None:
        tls["subject_alt_names"] = sans
    return {
        "services": {
            "echo": {
                "port": 50051,
                "protocol": "grpc",
                "endpoints": [address],
                "traffic_policy": {"tls": tls},
            }
        }
    }


def uri_only_leaf(pki: Pki, service: str) -> Leaf:
    """A leaf whose only SAN is its SPIFFE URI and whose subject is empty (as Istio's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        pki._builder(x509.Name([]), key.public_key())
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SPIFFE + service)]),
            critical=True,  # RFC 5280: critical when the subject is empty
        )
        .sign(pki._key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Leaf(cert.public_bytes(serialization.Encoding.PEM), key_pem)
