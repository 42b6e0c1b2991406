"""An ASGI service in the mesh: mTLS from the bootstrap's certificate provider, RBAC per request.

Run: python examples/asgi_rbac.py        (needs uvicorn: pip install '.[examples]')

It makes a small SPIFFE PKI (a CA, the server ``sa/orders``, callers ``sa/frontend`` and
``sa/batch``), serves an ASGI app with uvicorn behind ``mesh.server_ssl_context()``
(client certificates required, rotated from the provider) and
``pymesh.asgi.RbacMiddleware`` with the policy "everyone in the trust domain may GET,
only the frontend may POST", then calls it with each identity and without one.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
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
from pymesh.asgi import RbacMiddleware, uvicorn_config
from pymesh.security import RbacAuthorizer
from pymesh.server import ControlPlane
from pymesh.testing import bootstrap_for
from pymesh.xds.resources.matchers import HeaderMatcher, StringMatcher
from pymesh.xds.resources.rbac import (
    AuthenticatedRule,
    HeaderRule,
    RbacConfig,
    RbacPolicy,
    RbacRules,
)

TRUST_DOMAIN = "spiffe://cluster.local/ns/shop/sa/"


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


def policy() -> RbacAuthorizer:
    """Everyone in the trust domain may GET; only the frontend may POST."""
    method = lambda m: HeaderRule(HeaderMatcher(":method", StringMatcher("exact", m)))  # noqa: E731
    rules = RbacRules(
        "ALLOW",
        (
            (
                "frontend-writes",
                RbacPolicy(
                    (method("POST"),),
                    (AuthenticatedRule(StringMatcher("exact", TRUST_DOMAIN + "frontend")),),
                ),
            ),
            (
                "mesh-reads",
                RbacPolicy(
                    (method("GET"),),
                    (AuthenticatedRule(StringMatcher("prefix", TRUST_DOMAIN)),),
                ),
            ),
        ),
    )
    return RbacAuthorizer.from_config(RbacConfig(rules))


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
        bootstrap = bootstrap_for(cp, "asgi-rbac-example")
        bootstrap["certificate_providers"] = {
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": cert_file,
                    "private_key_file": key_file,
                    "ca_certificate_file": str(pki.ca_file),
                    "refresh_interval": "60s",
                },
            }
        }
        with pymesh.Mesh(bootstrap=bootstrap) as mesh:
            sock = socket.create_server(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            app = RbacMiddleware(orders_app, policy())
            server = uvicorn.Server(
                uvicorn_config(app, ssl_context=mesh.server_ssl_context(), log_level="warning")
            )
            thread = threading.Thread(
                target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
            )
            thread.start()
            while not server.started:
                if not thread.is_alive():
                    raise SystemExit("uvicorn did not start")
                time.sleep(0.01)
            url = f"https://127.0.0.1:{port}/orders"
            try:
                with client(pki, "frontend") as c:
                    print(f"frontend GET  -> {c.get(url).status_code}")
                    print(f"frontend POST -> {c.post(url, content=b'{}').status_code}")
                with client(pki, "batch") as c:
                    print(f"batch GET     -> {c.get(url).status_code}")
                    r = c.post(url, content=b"{}")
                    print(f"batch POST    -> {r.status_code} {r.text!r}")
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


if __name__ == "__main__":
    main()
