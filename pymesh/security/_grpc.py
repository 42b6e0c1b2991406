"""gRPC credentials from the mesh's certificate providers (client channels, servers).

gRPC's Python API cannot run a custom SAN check inside its own handshake, so a gRPC
sub-channel that wants Envoy's SAN semantics calls :func:`check_grpc_peer` (a short
TLS handshake with the cluster's context, then the SAN check) before it uses an
endpoint, and builds the channel with :func:`grpc_channel_credentials`.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import grpc

from pymesh.errors import TlsConfigError
from pymesh.security.contexts import ClientTls
from pymesh.security.providers import CertificateMaterial, FileWatcherProvider
from pymesh.security.san import Sans

if TYPE_CHECKING:
    from pymesh._mesh import Mesh

__all__ = [
    "check_grpc_peer",
    "client_tls",
    "grpc_channel_credentials",
    "grpc_server_credentials",
    "provider_server_credentials",
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
    ctx = tls.context()
    raw = socket.create_connection((host, port), timeout=timeout)
    with ctx.wrap_socket(raw, server_hostname=tls.sni) as s:
        return tls.check_peer(s.getpeercert(binary_form=True))


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
