"""gRPC credentials from the mesh's certificate providers (client channels, servers).

gRPC's Python API cannot run a custom SAN check inside its own handshake, so a gRPC
sub-channel that wants Envoy's SAN semantics calls :func:`check_grpc_peer` (a short
TLS handshake with the cluster's context, then the SAN check) before it uses an
endpoint, and builds the channel with :func:`grpc_channel_credentials`.

:func:`verify_grpc_peer` is that pre-check for the mesh's own gRPC sub-channels: besides
the SANs it returns the name to give grpcio as ``grpc.ssl_target_name_override``.
grpcio (1.85) always verifies the server's host name on its own connections, against
DNS SANs, IP SANs, or the common name when the certificate has neither; it never looks
at URI (SPIFFE) SANs and its Python API cannot turn the check off. So pymesh picks a
name the *already verified* certificate carries (see :func:`grpc_target_name`), and
grpcio re-checks that name, plus the chain, on every connection it makes.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from pymesh.errors import TlsConfigError
from pymesh.security.contexts import ClientTls
from pymesh.security.providers import CertificateMaterial, FileWatcherProvider
from pymesh.security.san import Sans, san_matches
from pymesh.xds.resources.tls import SanType

if TYPE_CHECKING:
    from pymesh._mesh import Mesh

__all__ = [
    "GrpcPeer",
    "check_grpc_peer",
    "client_tls",
    "grpc_channel_credentials",
    "grpc_server_credentials",
    "grpc_target_name",
    "material_channel_credentials",
    "peer_certificate",
    "provider_server_credentials",
    "split_address",
    "verify_grpc_peer",
]


def client_tls(mesh: Mesh, cluster: str) -> ClientTls | None:
    """The cluster's current client TLS state; None when the cluster is plaintext.

    Raises TlsConfigError (naming cluster and provider) when the TLS config cannot be
    satisfied, and when the cluster has no config yet.
    """
    rt = mesh.clusters().get(cluster)
    if rt is None or rt.cluster is None:
        raise TlsConfigError(
            "cluster has no config yet", node_id=mesh.node_id, resource_name=cluster
        )
    tls = rt.cluster.tls
    return None if tls is None else mesh.security.client(cluster, tls)


def grpc_channel_credentials(mesh: Mesh, cluster: str) -> grpc.ChannelCredentials:
    """``grpc.ssl_channel_credentials`` with the cluster's current roots and identity.

    Raises TlsConfigError for plaintext clusters (use an insecure channel for those)
    and for unsatisfiable TLS configs: never plaintext for a TLS cluster. Build a new
    channel after a rotation to present the new certificate (check the materials'
    ``generation``). gRPC verifies the chain; the SAN check is :func:`check_grpc_peer`.
    """
    tls = client_tls(mesh, cluster)
    if tls is None:
        raise TlsConfigError(
            "cluster is plaintext (no UpstreamTlsContext)",
            node_id=mesh.node_id,
            resource_name=cluster,
        )
    roots = tls.roots.material() if tls.roots is not None else None
    ident = tls.identity.material() if tls.identity is not None else None
    return material_channel_credentials(ident, roots)


def material_channel_credentials(
    ident: CertificateMaterial | None, roots: CertificateMaterial | None
) -> grpc.ChannelCredentials:
    """``grpc.ssl_channel_credentials`` from one generation of identity and roots."""
    return grpc.ssl_channel_credentials(
        root_certificates=roots.ca_certificates if roots else None,
        private_key=ident.private_key if ident else None,
        certificate_chain=ident.cert_chain if ident else None,
    )


def check_grpc_peer(mesh: Mesh, cluster: str, host: str, port: int, timeout: float = 5.0) -> Sans:
    """Handshake with ``host:port`` using the cluster's context and check its SANs.

    Returns the peer's SANs; raises PeerIdentityError (wrong identity), TlsConfigError
    (unsatisfiable config) or OSError/ssl.SSLError (unreachable, handshake refused).
    No application byte is sent.
    """
    tls = client_tls(mesh, cluster)
    if tls is None:
        return ()
    return tls.check_peer(peer_certificate(tls, host, port, timeout))


def split_address(address: str) -> tuple[str, int]:
    """``("127.0.0.1", 50051)`` from ``"127.0.0.1:50051"`` (``"[::1]:50051"`` too)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"endpoint address {address!r} is not host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


def peer_certificate(tls: ClientTls, host: str, port: int, timeout: float) -> bytes | None:
    """The DER certificate ``host:port`` presents in a handshake with the cluster's current
    context (chain verified against its roots, client certificate presented, SNI = the
    context's ``sni``). Closes the connection at once: no application byte is sent.

    Raises OSError / ssl.SSLError when the endpoint is unreachable or the handshake fails.
    """
    ctx = tls.context()
    raw = socket.create_connection((host, port), timeout=timeout)
    with ctx.wrap_socket(raw, server_hostname=tls.sni) as s:
        return s.getpeercert(binary_form=True)


@dataclass(frozen=True, slots=True)
class GrpcPeer:
    """An endpoint's certificate that passed the cluster's SAN matchers.

    ``target_name`` is the name grpcio is told to verify (``ssl_target_name_override``).
    """

    sans: Sans
    target_name: str


def verify_grpc_peer(tls: ClientTls, address: str, timeout: float) -> GrpcPeer:
    """Handshake with ``address``, check its SANs, and choose grpcio's target name.

    Raises PeerIdentityError (SAN mismatch), TlsConfigError (no name grpcio can verify),
    OSError / ssl.SSLError (unreachable, handshake refused).
    """
    host, port = split_address(address)
    der = peer_certificate(tls, host, port, timeout)
    sans = tls.check_peer(der)
    assert der is not None  # check_peer refuses a missing certificate
    return GrpcPeer(sans, grpc_target_name(tls, der, sans, host))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _covers(san: str, name: str) -> bool:
    """Whether DNS SAN ``san`` covers ``name`` (exact, or a one-label wildcard)."""
    san, name = san.lower().rstrip("."), name.lower().rstrip(".")
    if san == name:
        return True
    head, _, rest = name.partition(".")
    return san.startswith("*.") and bool(head) and rest == san[2:]


def grpc_target_name(tls: ClientTls, der: bytes, sans: Sans, host: str) -> str:
    """The name of a verified peer certificate for grpcio's own host-name check.

    grpcio accepts a DNS SAN (case-insensitive, wildcards), an IP SAN, or the common
    name when the certificate has no DNS and no IP SAN. In order of preference:

    1. the cluster's ``sni`` when a DNS SAN covers it (grpcio then also sends it as SNI);
    2. a DNS SAN accepted by the cluster's SAN matchers (grpcio re-checks that identity);
    3. an IP SAN accepted by the matchers, preferring the endpoint's own address;
    4. the endpoint's address when an IP SAN equals it;
    5. any other DNS SAN, then any other IP SAN;
    6. the common name (only when there is no DNS/IP SAN, as grpcio).

    Raises TlsConfigError when none exists (e.g. a certificate whose only SAN is a
    SPIFFE URI and that has no common name): grpcio would refuse every connection.
    """
    matchers = tls.tls.san_matchers
    dns = [v for t, v in sans if t == "DNS"]
    ips = [v for t, v in sans if t == "IP_ADDRESS"]

    def accepted(san_type: SanType, value: str) -> bool:
        return not matchers or any(san_matches(m, san_type, value) for m in matchers)

    if tls.sni and not _is_ip(tls.sni) and any(_covers(d, tls.sni) for d in dns):
        return tls.sni
    good_dns = [d for d in dns if accepted("DNS", d)]
    if good_dns:
        return sorted(good_dns, key=lambda d: d.startswith("*."))[0]  # concrete names first
    endpoint_ip = next((ip for ip in ips if _is_ip(host) and _same_ip(ip, host)), None)
    good_ips = [ip for ip in ips if accepted("IP_ADDRESS", ip)]
    if good_ips:
        return endpoint_ip if endpoint_ip in good_ips else good_ips[0]
    if endpoint_ip is not None:
        return endpoint_ip
    if dns:
        return sorted(dns, key=lambda d: d.startswith("*."))[0]
    if ips:
        return ips[0]
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    if cn and not _is_ip(cn):
        return cn
    raise TlsConfigError(
        f"cluster {tls.cluster!r}: the peer certificate passed the SAN check but has no DNS "
        "SAN, no IP SAN and no common name; grpcio always verifies one of those on its own "
        "connections (its Python API cannot turn that check off), so a gRPC channel cannot "
        "use this endpoint. Issue the certificate with a DNS or IP SAN too",
        node_id=tls.node_id,
        resource_name=tls.cluster,
    )


def _same_ip(a: str, b: str) -> bool:
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


def grpc_server_credentials(mesh: Mesh, instance_name: str = "default") -> grpc.ServerCredentials:
    """Server credentials requiring client certificates, following rotations.

    From the mesh's bootstrap provider ``instance_name`` (needs certificate, key and CA).
    See :func:`provider_server_credentials`.
    """
    return provider_server_credentials(mesh.security.server(instance_name).provider)


def provider_server_credentials(provider: FileWatcherProvider) -> grpc.ServerCredentials:
    """mTLS server credentials from a provider (e.g. for ``ControlPlane``).

    Uses ``grpc.dynamic_ssl_server_credentials``: gRPC asks for the certificate config
    at each new handshake, so a rotated provider serves the new material to new
    connections. Client certificates are required and verified against the CA.
    """
    if not (provider.has_identity and provider.has_roots):
        raise TlsConfigError(
            f"certificate provider {provider.name!r}: serving mTLS needs "
            "certificate_file, private_key_file and ca_certificate_file"
        )
    first = provider.material()
    state = {"generation": first.generation}

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        m = provider.material()
        if m.generation == state["generation"]:
            return None  # unchanged: gRPC keeps the current config
        state["generation"] = m.generation
        return _server_config(m)

    return grpc.dynamic_ssl_server_credentials(
        _server_config(first), fetch, require_client_authentication=True
    )


def _server_config(m: CertificateMaterial) -> grpc.ServerCertificateConfiguration:
    assert m.private_key is not None and m.cert_chain is not None
    return grpc.ssl_server_certificate_configuration(
        [(m.private_key, m.cert_chain)], root_certificates=m.ca_certificates
    )
