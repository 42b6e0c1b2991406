"""An ASGI service in the mesh: mTLS and RBAC from the control plane, enforced per request.

Run: python examples/asgi_rbac.py        (needs uvicorn: pip install '.[examples]')

It makes a small SPIFFE PKI (a CA, the server ``sa/orders``, callers ``sa/frontend`` and
``sa/batch``) and starts pymesh's embedded control plane with a mesh file whose
``inbound`` section says: STRICT mTLS, everyone in the trust domain may GET, only the
frontend may POST (Istio AuthorizationPolicy vocabulary). The server side is an ASGI app
under uvicorn with ``pymesh.asgi.XdsListener``: its server Listener (gRFC A36) gives the
TLS context (client certificates required, rotated from the bootstrap's certificate
providers) and the RBAC filters that ``RbacMiddleware`` applies to each request. Then
the policy changes on the control plane and the next requests follow it.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import pymesh
from pymesh.asgi import RbacMiddleware, XdsListener, uvicorn_config
from pymesh.server import ControlPlane, compile_mesh
from pymesh.testing import bootstrap_for

TRUST_DOMAIN = "spiffe://cluster.local/ns/shop/sa/"
TEMPLATE = "xds.istio.io/grpc/lds/inbound/%s"  # istiod's server Listener names


def mesh_file(port: int, batch_may_post: bool) -> dict[str, Any]:
    """The control plane's config (the same dict as a mesh file, docs/mesh-file.md)."""
    writers = ["cluster.local/ns/shop/sa/frontend"]
    if batch_may_post:
        writers.append("cluster.local/ns/shop/sa/batch")
    return {
        "services": {
            "orders": {
                "port": port,
                "endpoints": [f"127.0.0.1:{port}"],
                "inbound": {
                    "mtls": "STRICT",
                    "authorization": [
                        {
                            "name": "writers",
                            "rules": [
                                {
                                    "from": [{"source": {"principals": writers}}],
                                    "to": [{"operation": {"methods": ["POST"]}}],
                                }
                            ],
                        },
                        {
                            "name": "mesh-reads",
                            "rules": [
                                {
                                    "from": [{"source": {"principals": ["cluster.local/*"]}}],
                                    "to": [{"operation": {"methods": ["GET"]}}],
                                }
                            ],
                        },
                    ],
                },
            }
        }
    }


class Pki:
    """A CA issuing leaf certificates whose identity is a SPIFFE URI SAN."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example CA")])
        self.ca = self._cert(self.name, self.key.public_key(), None, ca=True)
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))

    def _cert(self, subject: x509.Name, public: Any, san: str | None, *, ca: bool) -> Any:
        now = datetime.datetime.now(datetime.timezone.utc)
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san is not None:
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]),
                critical=False,
            )
        return b.sign(self.key, hashes.SHA256())

    def issue(self, service: str) -> tuple[str, str]:
        """(certificate file, key file) for ``<trust domain>/sa/<service>``."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)])
        cert = self._cert(name, key.public_key(), TRUST_DOMAIN + service, ca=False)
        cert_file, key_file = self.dir / f"{service}.pem", self.dir / f"{service}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return str(cert_file), str(key_file)


async def orders_app(scope: Any, receive: Any, send: Any) -> None:
    """The application: it never sees a request the policy denies."""
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"orders: ok"})


def client(pki: Pki, service: str | None) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.check_hostname = False  # mesh identity is the SPIFFE SAN, not a host name
    if service is not None:
        ctx.load_cert_chain(*pki.issue(service))
    return httpx.Client(verify=ctx, timeout=10.0)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, ControlPlane(port=0) as cp:
        pki = Pki(Path(tmp))
        cert_file, key_file = pki.issue("orders")
        provider = {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": cert_file,
                "private_key_file": key_file,
                "ca_certificate_file": str(pki.ca_file),
                "refresh_interval": "60s",
            },
        }
        bootstrap = bootstrap_for(cp, "asgi-rbac-example")
        # What istio-agent writes: the workload certificate and the roots.
        bootstrap["certificate_providers"] = {"default": provider, "ROOTCA": provider}
        bootstrap["server_listener_resource_name_template"] = TEMPLATE
        with pymesh.Mesh(bootstrap=bootstrap) as mesh:
            listener = XdsListener(mesh, "127.0.0.1:0")  # port 0: a free port, reserved
            cp.set_snapshot(compile_mesh(mesh_file(listener.port, False), "v1"))
            server = uvicorn.Server(
                uvicorn_config(
                    RbacMiddleware(orders_app, listener),
                    ssl_context=listener.ssl_context(),  # waits for the Listener
                    log_level="warning",
                )
            )
            sock = listener.socket()
            thread = threading.Thread(
                target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
            )
            thread.start()
            while not server.started:
                if not thread.is_alive():
                    raise SystemExit("uvicorn did not start")
                time.sleep(0.01)
            url = f"https://127.0.0.1:{listener.port}/orders"
            try:
                with client(pki, "frontend") as c:
                    print(f"frontend GET  -> {c.get(url).status_code}")
                    print(f"frontend POST -> {c.post(url, content=b'{}').status_code}")
                with client(pki, "batch") as c:
                    print(f"batch GET     -> {c.get(url).status_code}")
                    r = c.post(url, content=b"{}")
                    print(f"batch POST    -> {r.status_code} {r.text!r}")
                    # The control plane now lets batch write too; no restart.
                    cp.set_snapshot(compile_mesh(mesh_file(listener.port, True), "v2"))
                    deadline = time.monotonic() + 30
                    while (status := c.post(url, content=b"{}").status_code) != 200:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.05)
                    print(f"batch POST after the policy update -> {status}")
                with client(pki, None) as c:
                    try:
                        c.get(url)
                        print("no client certificate -> served (unexpected)")
                    except httpx.TransportError:
                        print("no client certificate -> TLS handshake refused")
            finally:
                server.should_exit = True
                thread.join(10)
                sock.close()
                listener.close()


if __name__ == "__main__":
    main()
