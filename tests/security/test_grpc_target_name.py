"""Which name of a verified peer certificate pymesh hands to grpcio's host-name check."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from _sec_helpers import SPIFFE, Pki
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pymesh.bootstrap import load_bootstrap
from pymesh.errors import TlsConfigError
from pymesh.security import ClientTls, MeshSecurity, peer_sans
from pymesh.security._grpc import grpc_target_name, split_address
from pymesh.xds.resources.matchers import StringMatcher
from pymesh.xds.resources.tls import SanMatcher, SanType, UpstreamTls


def _client(pki: Pki, tmp_path: Path, matchers: tuple[SanMatcher, ...], sni: str = "") -> ClientTls:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca_pem)
    boot = load_bootstrap(
        {
            "xds_servers": [{"server_uri": "127.0.0.1:1", "channel_creds": [{"type": "insecure"}]}],
            "node": {"id": "n"},
        }
    )
    security = MeshSecurity(boot, "n")
    return security.client(
        "c", UpstreamTls(san_matchers=matchers, sni=sni, trusted_ca_file=str(ca))
    )


def _der(pki: Pki, cn: str | None, sans: list[x509.GeneralName]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = pki._builder(subject, key.public_key())
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(pki._key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _exact(value: str, san_type: SanType = "ANY") -> SanMatcher:
    return SanMatcher(san_type, StringMatcher("exact", value))


URI = x509.UniformResourceIdentifier(SPIFFE + "echo")
LOOPBACK = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
OTHER_IP = x509.IPAddress(ipaddress.ip_address("10.0.0.7"))


@pytest.mark.parametrize(
    ("matchers", "sni", "cn", "sans", "host", "expected"),
    [
        # A DNS SAN the matchers accept: grpcio then re-checks that very identity.
        ((_exact("echo.svc"),), "", None, [URI, x509.DNSName("echo.svc")], "127.0.0.1", "echo.svc"),
        # The configured SNI, when a DNS SAN (here a wildcard) covers it.
        ((_exact(SPIFFE + "echo"),), "a.svc", None, [URI, x509.DNSName("*.svc")], "h", "a.svc"),
        # SPIFFE matcher + IP SANs: the endpoint's own address is preferred.
        ((_exact(SPIFFE + "echo"),), "", None, [URI, OTHER_IP, LOOPBACK], "127.0.0.1", "127.0.0.1"),
        # No DNS/IP SAN accepted, no endpoint IP: another DNS SAN of the certificate.
        ((_exact(SPIFFE + "echo"),), "", None, [URI, x509.DNSName("x.svc")], "127.0.0.1", "x.svc"),
        # Only a URI SAN: the common name (grpcio checks it only without DNS/IP SANs).
        ((), "", "echo", [URI], "127.0.0.1", "echo"),
    ],
)
def test_target_name_choice(
    pki: Pki,
    tmp_path: Path,
    matchers: tuple[SanMatcher, ...],
    sni: str,
    cn: str | None,
    sans: list[x509.GeneralName],
    host: str,
    expected: str,
) -> None:
    tls = _client(pki, tmp_path, matchers, sni)
    der = _der(pki, cn, sans)
    assert grpc_target_name(tls, der, peer_sans(der), host) == expected


def test_uri_only_certificate_without_common_name_is_refused(pki: Pki, tmp_path: Path) -> None:
    tls = _client(pki, tmp_path, (_exact(SPIFFE + "echo"),))
    der = _der(pki, None, [URI])
    with pytest.raises(TlsConfigError, match="no DNS SAN, no IP SAN and no common name") as info:
        grpc_target_name(tls, der, peer_sans(der), "127.0.0.1")
    assert info.value.resource_name == "c"


def test_split_address() -> None:
    assert split_address("127.0.0.1:50051") == ("127.0.0.1", 50051)
    assert split_address("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ValueError, match="host:port"):
        split_address("no-port")
