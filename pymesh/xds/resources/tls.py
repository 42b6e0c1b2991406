"""UpstreamTlsContext → frozen dataclasses (certificate provider instances, SAN matchers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pymesh.xds.resources.matchers import StringMatcher

SanType = Literal["DNS", "URI", "IP_ADDRESS", "EMAIL", "ANY"]


@dataclass(frozen=True, slots=True)
class SanMatcher:
    """A match_typed_subject_alt_names entry (``ANY`` for untyped match_subject_alt_names)."""

    san_type: SanType
    matcher: StringMatcher


@dataclass(frozen=True, slots=True)
class CertificateProviderInstance:
    instance_name: str
    certificate_name: str = ""


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """What a client needs to open a TLS connection to a cluster's endpoints."""

    identity: CertificateProviderInstance | None = None  # client certificate (mTLS)
    validation: CertificateProviderInstance | None = None  # roots to trust
    san_matchers: tuple[SanMatcher, ...] = ()
    sni: str = ""
    alpn_protocols: tuple[str, ...] = ()
    min_version: str | None = None  # "TLSv1_2", "TLSv1_3"
    max_version: str | None = None
    cipher_suites: tuple[str, ...] = ()
    # Files given directly (Envoy style, not via providers): paths.
    certificate_file: str | None = None
    private_key_file: str | None = None
    trusted_ca_file: str | None = None
