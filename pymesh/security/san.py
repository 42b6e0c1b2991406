"""Peer identity: a certificate's subject alternative names against the SAN matchers.

Envoy's rules (CertificateValidationContext): the peer is accepted when *any* of its SANs
matches *any* matcher of the SAN's type; an untyped ``match_subject_alt_names`` entry
(``ANY``) is tried against DNS, URI, email and IP SANs; an ``exact`` DNS matcher also
accepts a wildcard SAN (``*.example.com`` covers ``a.example.com``, one label only). With
no matchers, any certificate that chains to the trusted roots is accepted; the host
name is *not* checked (Envoy does not either: identity comes from the SAN matchers).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cryptography import x509

from pymesh.errors import TlsConfigError
from pymesh.xds.resources.tls import SanMatcher, SanType

__all__ = ["PeerIdentityError", "check_peer_identity", "peer_sans", "san_matches"]

Sans = tuple[tuple[SanType, str], ...]


class PeerIdentityError(TlsConfigError):
    """The peer's certificate has no SAN accepted by the cluster's SAN matchers.

    Raised right after the TLS handshake, before any request byte is sent. ``cluster``
    names the cluster; ``sans`` lists the SANs the peer presented as ``(type, value)``.
    """

    def __init__(
        self, message: str, *, cluster: str, sans: Sans, node_id: str | None = None
    ) -> None:
        self.cluster = cluster
        self.sans = sans
        super().__init__(message, node_id=node_id, resource_name=cluster)


def peer_sans(der: bytes) -> Sans:
    """The SANs of a DER certificate as ``(type, value)``; IPs in canonical text form."""
    cert = x509.load_der_x509_certificate(der)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out: list[tuple[SanType, str]] = []
    for name in ext:
        if isinstance(name, x509.DNSName):
            out.append(("DNS", name.value))
        elif isinstance(name, x509.UniformResourceIdentifier):
            out.append(("URI", name.value))
        elif isinstance(name, x509.IPAddress):
            out.append(("IP_ADDRESS", str(name.value)))
        elif isinstance(name, x509.RFC822Name):
            out.append(("EMAIL", name.value))
    return tuple(out)


def _dns_wildcard(san: str, wanted: str) -> bool:
    """``*.example.com`` covers exactly one leftmost label of ``wanted``."""
    if not san.startswith("*."):
        return False
    head, _, rest = wanted.partition(".")
    return bool(head) and rest.lower() == san[2:].lower()


def _ip_equal(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def san_matches(matcher: SanMatcher, san_type: SanType, value: str) -> bool:
    """Whether one SAN of the peer satisfies one matcher."""
    if matcher.san_type not in ("ANY", san_type):
        return False
    m = matcher.matcher
    if m.matches(value):
        return True
    if san_type == "DNS" and m.kind == "exact":
        return _dns_wildcard(value, m.value)
    if san_type == "IP_ADDRESS" and m.kind == "exact":
        return _ip_equal(value, m.value)  # "::1" and "0:0:0:0:0:0:0:1" are one address
    return False


def check_peer_identity(
    der: bytes | None,
    matchers: Sequence[SanMatcher],
    *,
    cluster: str,
    node_id: str | None = None,
) -> Sans:
    """Raise :class:`PeerIdentityError` unless the certificate satisfies ``matchers``.

    Returns the SANs seen. No matchers: every certificate is accepted (Envoy).
    """
    if der is None:
        raise PeerIdentityError(
            "the peer presented no certificate", cluster=cluster, sans=(), node_id=node_id
        )
    sans = peer_sans(der)
    if not matchers:
        return sans
    for san_type, value in sans:
        for m in matchers:
            if san_matches(m, san_type, value):
                return sans
    wanted = ", ".join(f"{m.san_type}:{m.matcher.kind}={m.matcher.value!r}" for m in matchers)
    seen = ", ".join(f"{t}:{v}" for t, v in sans) or "none"
    raise PeerIdentityError(
        f"peer certificate SANs [{seen}] match none of the cluster's SAN matchers [{wanted}]; "
        "connection closed before sending the request",
        cluster=cluster,
        sans=sans,
        node_id=node_id,
    )
