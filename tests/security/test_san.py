"""SAN matching rules (Envoy's CertificateValidationContext semantics)."""

from __future__ import annotations

import pytest
from _sec_helpers import SPIFFE, Pki
from cryptography import x509

from pymesh.security import PeerIdentityError, check_peer_identity, peer_sans
from pymesh.security.san import san_matches
from pymesh.xds.resources.matchers import StringMatcher
from pymesh.xds.resources.tls import SanMatcher


def _der(pki: Pki, service: str, dns: tuple[str, ...] = ()) -> bytes:
    from cryptography.hazmat.primitives import serialization

    pem = pki.issue(service, dns=dns).cert_pem
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def m(san_type: str, kind: str, value: str, ignore_case: bool = False) -> SanMatcher:
    return SanMatcher(san_type, StringMatcher.make(kind, value, ignore_case))  # type: ignore[arg-type]


def test_peer_sans_lists_every_type(pki: Pki) -> None:
    sans = peer_sans(_der(pki, "reviews", dns=("reviews.default.svc",)))
    assert sans == (
        ("URI", SPIFFE + "reviews"),
        ("IP_ADDRESS", "127.0.0.1"),
        ("DNS", "reviews.default.svc"),
    )


def test_no_matchers_accepts_any_chained_certificate(pki: Pki) -> None:
    assert check_peer_identity(_der(pki, "anyone"), [], cluster="c")[0][0] == "URI"


def test_no_certificate_is_refused() -> None:
    with pytest.raises(PeerIdentityError, match="no certificate"):
        check_peer_identity(None, [], cluster="c")


def test_any_of_the_matchers_and_any_of_the_sans(pki: Pki) -> None:
    der = _der(pki, "reviews")
    check_peer_identity(
        der,
        [m("URI", "exact", SPIFFE + "ratings"), m("IP_ADDRESS", "exact", "127.0.0.1")],
        cluster="c",
    )
    with pytest.raises(PeerIdentityError) as info:
        check_peer_identity(der, [m("URI", "exact", SPIFFE + "ratings")], cluster="c")
    assert info.value.cluster == "c"
    assert "ratings" in str(info.value) and "reviews" in str(info.value)


def test_dns_wildcard_and_ip_forms() -> None:
    exact = m("DNS", "exact", "a.example.com")
    assert san_matches(exact, "DNS", "*.example.com")
    assert not san_matches(exact, "DNS", "*.other.com")
    assert not san_matches(m("DNS", "exact", "a.b.example.com"), "DNS", "*.example.com")
    assert not san_matches(m("DNS", "prefix", "a."), "DNS", "*.example.com")
    assert san_matches(m("IP_ADDRESS", "exact", "0:0:0:0:0:0:0:1"), "IP_ADDRESS", "::1")
    assert san_matches(m("ANY", "exact", "x@example.com"), "EMAIL", "x@example.com")
    assert not san_matches(m("EMAIL", "exact", "x@example.com"), "DNS", "x@example.com")
    assert san_matches(m("URI", "exact", "SPIFFE://A/B", ignore_case=True), "URI", "spiffe://a/b")
