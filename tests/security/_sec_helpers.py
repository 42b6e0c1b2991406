"""Test PKI (SPIFFE URI SANs, made with cryptography) and an mTLS HTTP/1.1 backend.

The backend records, per accepted connection, whether the TLS handshake succeeded,
the client certificate's URI SANs, and how many bytes arrived after the handshake, so
tests can prove that no request byte reached a peer that pymesh refused.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from pymesh.security import peer_sans
from pymesh.server import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, Snapshot

SPIFFE = "spiffe://cluster.local/ns/default/sa/"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Leaf:
    cert_pem: bytes
    key_pem: bytes


class Pki:
    """A CA that issues leaf certificates with URI/IP/DNS SANs."""

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        self._valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pymesh test CA")])
        self.ca_cert = (
            self._builder(self._name, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._valid[0])
            .not_valid_after(self._valid[1])
        )

    def issue(self, service: str, *, dns: tuple[str, ...] = ()) -> Leaf:
        """A leaf for ``spiffe://cluster.local/ns/default/sa/<service>`` + IP 127.0.0.1."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(SPIFFE + service),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            *(x509.DNSName(d) for d in dns),
        ]
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)])
        cert = (
            self._builder(name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return Leaf(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def issue_custom(
        self, sans: list[x509.GeneralName], subject: list[tuple[x509.ObjectIdentifier, str]]
    ) -> Leaf:
        """A leaf with exactly these SANs (none: no SAN extension) and subject RDNs."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(oid, value) for oid, value in subject])
        b = self._builder(name, key.public_key()).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), True
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self._key, hashes.SHA256())
        return Leaf(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def write(self, directory: Path, leaf: Leaf, prefix: str = "") -> dict[str, str]:
        """Write cert/key/ca atomically (os.replace); returns file_watcher config paths."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "certificate_file": directory / f"{prefix}cert.pem",
            "private_key_file": directory / f"{prefix}key.pem",
            "ca_certificate_file": directory / f"{prefix}ca.pem",
        }
        for key, data in (
            ("certificate_file", leaf.cert_pem),
            ("private_key_file", leaf.key_pem),
            ("ca_certificate_file", self.ca_pem),
        ):
            atomic_write(paths[key], data)
        return {k: str(v) for k, v in paths.items()}


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def file_watcher(paths: dict[str, str], refresh: str = "600s") -> dict[str, object]:
    return {"plugin_name": "file_watcher", "config": {**paths, "refresh_interval": refresh}}


def server_context(pki: Pki, leaf: Leaf, directory: Path) -> ssl.SSLContext:
    """A server context requiring client certificates from ``pki``."""
    directory.mkdir(parents=True, exist_ok=True)
    chain = directory / "server-chain.pem"
    chain.write_bytes(leaf.key_pem + leaf.cert_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(chain))
    ctx.load_verify_locations(cadata=pki.ca_pem.decode())
    return ctx


@dataclass
class ConnRecord:
    handshake_ok: bool = False
    error: str = ""
    client_uris: tuple[str, ...] = ()
    bytes_after_handshake: int = 0
    requests: int = 0
    closed: bool = False  # the server finished with this connection (EOF, error)


@dataclass
class MtlsBackend:
    """An HTTP/1.1 server over TLS on 127.0.0.1:0 answering 200 with ``x-peer`` (the
    client's URI SAN). ``close_each`` answers ``Connection: close`` (one request per
    connection, so every request makes a new handshake)."""

    context: ssl.SSLContext
    close_each: bool = False
    records: list[ConnRecord] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="mtls-backend")
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def accepted(self) -> int:
        with self.cond:
            return len(self.records)

    def ok_requests(self) -> int:
        with self.cond:
            return sum(r.requests for r in self.records)

    def wait(self, predicate: object, timeout: float = 20.0) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)  # type: ignore[arg-type]

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            rec = ConnRecord()
            with self.cond:
                self.records.append(rec)
                self.cond.notify_all()
            threading.Thread(target=self._serve, args=(conn, rec), daemon=True).start()

    def _serve(self, conn: socket.socket, rec: ConnRecord) -> None:
        try:
            self._serve_one(conn, rec)
        finally:
            with self.cond:
                rec.closed = True
                self.cond.notify_all()

    def _serve_one(self, conn: socket.socket, rec: ConnRecord) -> None:
        conn.settimeout(20)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self.cond:
                rec.error = str(e)
                self.cond.notify_all()
            conn.close()
            return
        with tls:
            der = tls.getpeercert(True)
            uris = tuple(v for t, v in peer_sans(der) if t == "URI") if der else ()
            with self.cond:
                rec.handshake_ok, rec.client_uris = True, uris
                self.cond.notify_all()
            buf = b""
            while True:
                try:
                    data = tls.recv(65536)
                except (ssl.SSLError, OSError) as e:
                    with self.cond:
                        rec.error = rec.error or str(e)
                        self.cond.notify_all()
                    return
                if not data:
                    return
                with self.cond:
                    rec.bytes_after_handshake += len(data)
                buf += data
                while b"\r\n\r\n" in buf:  # GET requests only: no bodies
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    body = (uris[0] if uris else "").encode()
                    head = (
                        f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n"
                        f"x-peer: {uris[0] if uris else ''}\r\n"
                    )
                    if self.close_each:
                        head += "connection: close\r\n"
                    tls.sendall(head.encode() + b"\r\n" + body)
                    with self.cond:
                        rec.requests += 1
                        self.cond.notify_all()
                    if self.close_each:
                        return

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self._sock.close()
        self._thread.join(5)


def envoy_tls_files(files: dict[str, str], san: str | None = None) -> tls_pb2.CommonTlsContext:
    """A CommonTlsContext with ``files`` (``Pki.write``: certificate, key, CA) the way
    Envoy reads them; with ``san``, the peer's URI SAN must be exactly that."""
    validation = common_pb2.CertificateValidationContext(
        trusted_ca={"filename": files["ca_certificate_file"]}
    )
    if san is not None:
        validation.match_typed_subject_alt_names.append(
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(exact=san),
            )
        )
    return tls_pb2.CommonTlsContext(
        tls_certificates=[
            common_pb2.TlsCertificate(
                certificate_chain={"filename": files["certificate_file"]},
                private_key={"filename": files["private_key_file"]},
            )
        ],
        validation_context=validation,
    )


def with_upstream_tls(snap: Snapshot, files: dict[str, str], san: str, version: str) -> Snapshot:
    """``snap`` at ``version`` with every cluster originating mTLS with ``files`` and
    checking the server's URI SAN is ``san`` (an UpstreamTlsContext as Envoy reads it)."""
    utc = tls_pb2.UpstreamTlsContext(common_tls_context=envoy_tls_files(files, san))
    clusters = []
    for c in snap.get(CLUSTER_TYPE).values():
        c2 = type(c)()
        c2.CopyFrom(c)
        c2.transport_socket.name = "envoy.transport_sockets.tls"
        c2.transport_socket.typed_config.Pack(utc)
        clusters.append(c2)
    return Snapshot.of(
        version,
        listeners=snap.get(LISTENER_TYPE).values(),
        routes=snap.get(ROUTE_TYPE).values(),
        clusters=clusters,
        endpoints=snap.get(ENDPOINT_TYPE).values(),
    )
