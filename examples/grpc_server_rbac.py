"""A gRPC service in the mesh: its Listener (mTLS + RBAC) from xDS, gRFC A36 / A41.

Run: python examples/grpc_server_rbac.py

It makes a small SPIFFE PKI (a CA, the server ``sa/orders``, callers ``sa/frontend`` and
``sa/batch``), serves a mesh file whose ``orders`` service has an ``inbound`` section
(STRICT mTLS, "the frontend may call Orders, nobody may call Orders/Delete"), runs
``pymesh.grpc.server`` for it, and calls it through pymesh's own mesh channels with each
identity, and once with plain grpcio and no client certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
import threading
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import pymesh
import pymesh.grpc
from pymesh.server import ControlPlane, compile_mesh
from pymesh.testing import bootstrap_for

TRUST_DOMAIN = "spiffe://cluster.local/ns/default/sa/"


def issue(directory: Path, ca: tuple[Any, Any], service: str) -> dict[str, str]:
    """A leaf for ``sa/<service>`` (also IP 127.0.0.1) as file_watcher provider config."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [
        x509.UniformResourceIdentifier(TRUST_DOMAIN + service),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "certificate_file": directory / f"{service}.pem",
        "private_key_file": directory / f"{service}-key.pem",
        "ca_certificate_file": directory / "ca.pem",
    }
    paths["certificate_file"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["private_key_file"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {k: str(v) for k, v in paths.items()}


def make_ca(directory: Path) -> tuple[Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def place(_request: bytes, context: grpc.ServicerContext) -> bytes:
    sans = context.auth_context().get("x509_subject_alternative_name", [])
    caller = next((s.decode() for s in sans if s.startswith(b"spiffe://")), "?")
    return f"order placed for {caller.rsplit('/', 1)[-1]}".encode()


def mesh_for(cp: ControlPlane, files: dict[str, str], node: str, **extra: Any) -> pymesh.Mesh:
    boot: dict[str, Any] = bootstrap_for(cp, node_id=node)
    boot["certificate_providers"] = {"default": {"plugin_name": "file_watcher", "config": files}}
    boot.update(extra)
    return pymesh.Mesh(boot)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, ControlPlane() as cp:
        d = Path(tmp)
        ca = make_ca(d)
        files = {s: issue(d, ca, s) for s in ("orders", "frontend", "batch")}

        # The server: its Listener is named after its address by the bootstrap template.
        server_mesh = mesh_for(
            cp,
            files["orders"],
            "orders-server",
            server_listener_resource_name_template="xds.istio.io/grpc/lds/inbound/%s",
        )
        serving = threading.Event()
        server = pymesh.grpc.server(
            mesh=server_mesh, on_serving_mode=lambda _a, ok, _e: ok and serving.set()
        )
        handler = grpc.unary_unary_rpc_method_handler(place)
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "shop.Orders", {"Place": handler, "Delete": handler}
                ),
            )
        )
        port = server.add_xds_port("127.0.0.1:0")

        # What `pymesh serve` would serve: clients' routes to orders (mTLS to its SPIFFE id)
        # and the server's inbound Listener with the authorization policies.
        cp.set_snapshot(
            compile_mesh(
                {
                    "services": {
                        "orders": {
                            "port": port,
                            "protocol": "grpc",
                            "endpoints": [f"127.0.0.1:{port}"],
                            "traffic_policy": {"tls": {"mode": "ISTIO_MUTUAL"}},
                            "inbound": {
                                "mtls": "STRICT",
                                "authorization": [
                                    {
                                        "name": "frontend-orders",
                                        "action": "ALLOW",
                                        "rules": [
                                            {
                                                "from": [
                                                    {
                                                        "source": {
                                                            "principals": [
                                                                "cluster.local/ns/default/sa/frontend"
                                                            ]
                                                        }
                                                    }
                                                ],
                                                "to": [
                                                    {"operation": {"paths": ["/shop.Orders/*"]}}
                                                ],
                                            }
                                        ],
                                    },
                                    {
                                        "name": "no-deletes",
                                        "action": "DENY",
                                        "rules": [
                                            {
                                                "to": [
                                                    {
                                                        "operation": {
                                                            "paths": ["/shop.Orders/Delete"]
                                                        }
                                                    }
                                                ]
                                            }
                                        ],
                                    },
                                ],
                            },
                        }
                    }
                },
                "example",
            )
        )
        server.start()
        assert serving.wait(30), "the server did not get its Listener"
        print(f"orders serving on 127.0.0.1:{port}: {server.ports[0].listener_name}")

        # One client mesh per workload identity (each its own bootstrap and certificate).
        clients = {c: mesh_for(cp, files[c], f"{c}-client") for c in ("frontend", "batch")}
        for caller, method in (("frontend", "Place"), ("frontend", "Delete"), ("batch", "Place")):
            target = f"xds:///orders:{port}"
            with pymesh.grpc.insecure_channel(target, mesh=clients[caller]) as channel:
                call = channel.unary_unary(f"/shop.Orders/{method}")
                try:
                    reply = call(b"", timeout=20).decode()
                except grpc.RpcError as e:
                    reply = f"{e.code().name}: {e.details()}"
            print(f"{caller:8} {method:6} -> {reply}")

        ca_pem = Path(files["orders"]["ca_certificate_file"]).read_bytes()
        with grpc.secure_channel(
            f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca_pem)
        ) as plain:
            try:
                plain.unary_unary("/shop.Orders/Place")(b"", timeout=10)
                print("no client certificate -> accepted (unexpected)")
            except grpc.RpcError as e:
                print(f"no client certificate -> {e.code().name}")
        server.stop(None).wait(10)
        for mesh in (*clients.values(), server_mesh):
            mesh.close()


if __name__ == "__main__":
    main()
