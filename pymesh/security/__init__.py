"""mTLS from xDS: certificate providers, SSL contexts, SAN (SPIFFE) checks, gRPC creds.

See docs/security.md. The pieces:

- :mod:`~pymesh.security.providers`: bootstrap ``certificate_providers`` (``file_watcher``).
- :mod:`~pymesh.security.contexts`: :class:`MeshSecurity` (``mesh.security``) builds one
  :class:`ssl.SSLContext` per cluster TLS config and material generation.
- :mod:`~pymesh.security.san`: Envoy's SAN matching; :class:`PeerIdentityError`.
- :mod:`~pymesh.security._rbac`: the RBAC engine (gRFC A41): :class:`RbacAuthorizer`,
  :class:`RbacRoutes`, :class:`RbacRequest`, :class:`PeerCertificate`, :class:`RbacDecision`.
- gRPC: :func:`grpc_channel_credentials`, :func:`check_grpc_peer`,
  :func:`grpc_server_credentials`.
"""

from pymesh.security._grpc import (
    check_grpc_peer,
    client_tls,
    grpc_channel_credentials,
    grpc_server_credentials,
    provider_server_credentials,
)
from pymesh.security._rbac import (
    PeerCertificate,
    RbacAuthorizer,
    RbacDecision,
    RbacRequest,
    RbacRoutes,
)
from pymesh.security.contexts import ClientTls, MeshSecurity, ServerTls
from pymesh.security.providers import CertificateMaterial, FileWatcherProvider, create_provider
from pymesh.security.san import PeerIdentityError, check_peer_identity, peer_sans

__all__ = [
    "CertificateMaterial",
    "ClientTls",
    "FileWatcherProvider",
    "MeshSecurity",
    "PeerCertificate",
    "PeerIdentityError",
    "RbacAuthorizer",
    "RbacDecision",
    "RbacRequest",
    "RbacRoutes",
    "ServerTls",
    "check_grpc_peer",
    "check_peer_identity",
    "client_tls",
    "create_provider",
    "grpc_channel_credentials",
    "grpc_server_credentials",
    "peer_sans",
    "provider_server_credentials",
]
