"""SSL contexts built from a cluster's UpstreamTls and the certificate providers.

One :class:`ssl.SSLContext` per (cluster TLS config, material generation): built once,
swapped atomically (one attribute) when a provider loads a new generation. New
connections use the new certificates; open connections keep theirs.

Client contexts use ``CERT_REQUIRED`` with ``check_hostname=False``: the peer must chain
to the trusted roots, and its identity is checked by the SAN matchers
(:mod:`pymesh.security.san`) right after the handshake, as Envoy does.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass

from pymesh.bootstrap import Bootstrap
from pymesh.errors import TlsConfigError
from pymesh.security.providers import CertificateMaterial, FileWatcherProvider, create_provider
from pymesh.security.san import Sans, check_peer_identity
from pymesh.xds.resources.tls import CertificateProviderInstance, UpstreamTls

__all__ = ["ClientTls", "MeshSecurity", "ServerTls"]

_VERSIONS = {
    "TLSv1_0": ssl.TLSVersion.TLSv1,
    "TLSv1_1": ssl.TLSVersion.TLSv1_1,
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True, slots=True)
class _Built:
    generations: tuple[int, ...]
    context: ssl.SSLContext


class MeshSecurity:
    """A Mesh's certificate providers and the contexts built from them.

    Providers are created on first use from the bootstrap's ``certificate_providers``
    (by instance name); files given directly in an UpstreamTlsContext get an implicit
    ``file_watcher`` of their own, so they rotate the same way.
    """

    def __init__(self, bootstrap: Bootstrap, node_id: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.node_id = node_id
        self._lock = threading.Lock()  # guards creation only
        self._providers: dict[str, FileWatcherProvider] = {}
        self._clients: dict[tuple[str, UpstreamTls], ClientTls] = {}
        self._servers: dict[str, ServerTls] = {}

    def __repr__(self) -> str:
        return f"<MeshSecurity providers={sorted(self._providers)} clients={len(self._clients)}>"

    def provider(self, instance_name: str) -> FileWatcherProvider:
        """The provider instance ``instance_name`` (TlsConfigError when unknown/broken)."""
        p = self._providers.get(instance_name)
        if p is not None:
            return p
        with self._lock:
            p = self._providers.get(instance_name)
            if p is None:
                cfg = self.bootstrap.certificate_providers.get(instance_name)
                if cfg is None:
                    known = ", ".join(sorted(self.bootstrap.certificate_providers)) or "none"
                    raise TlsConfigError(
                        f"certificate provider instance {instance_name!r} is not in the "
                        f"bootstrap's certificate_providers (known: {known})",
                        node_id=self.node_id,
                    )
                p = create_provider(instance_name, cfg.plugin_name, cfg.config)
                self._providers[instance_name] = p
        return p

    def _file_provider(
        self, cert: str | None, key: str | None, ca: str | None
    ) -> FileWatcherProvider:
        name = f"<files {cert or ''}|{key or ''}|{ca or ''}>"
        p = self._providers.get(name)
        if p is None:
            config = {
                k: v
                for k, v in (
                    ("certificate_file", cert),
                    ("private_key_file", key),
                    ("ca_certificate_file", ca),
                )
                if v
            }
            with self._lock:
                p = self._providers.setdefault(name, FileWatcherProvider(name, config))
        return p

    def client(self, cluster: str, tls: UpstreamTls) -> ClientTls:
        """The client TLS state of ``cluster``; built (and validated) on first use.

        Raises TlsConfigError naming the cluster and the provider when the config cannot
        be satisfied: unknown provider, unreadable or invalid files, no trust roots.
        """
        key = (cluster, tls)
        c = self._clients.get(key)
        if c is None:
            c = ClientTls(self, cluster, tls)
            c.context()  # fail now, not on the first connection
            with self._lock:
                c = self._clients.setdefault(key, c)
        return c

    def server(
        self, instance_name: str = "default", roots_instance: str | None = None
    ) -> ServerTls:
        """Server-side TLS (mTLS) from provider ``instance_name``; client certificates
        are verified with ``roots_instance``'s CA (default: the same provider's)."""
        key = (
            instance_name
            if roots_instance in (None, instance_name)
            else (f"{instance_name}|{roots_instance}")
        )
        s = self._servers.get(key)
        if s is None:
            roots = (
                self.provider(roots_instance)
                if roots_instance not in (None, instance_name)
                else None
            )
            s = ServerTls(self.provider(instance_name), roots=roots, node_id=self.node_id)
            with self._lock:
                s = self._servers.setdefault(key, s)
        return s

    def close(self) -> None:
        """Remove the providers' private key copies."""
        for p in list(self._providers.values()):
            p.close()


class ClientTls:
    """What a connection to one TLS cluster needs: the current context, SNI, SAN check."""

    def __init__(self, security: MeshSecurity, cluster: str, tls: UpstreamTls) -> None:
        self.cluster = cluster
        self.tls = tls
        self.node_id = security.node_id
        self.sni: str | None = tls.sni or None
        self.identity: FileWatcherProvider | None = None
        self.roots: FileWatcherProvider | None = None
        try:
            if tls.identity is not None:
                self.identity = self._instance(security, tls.identity, "identity")
                if not self.identity.has_identity:
                    raise TlsConfigError(
                        f"identity provider {tls.identity.instance_name!r} has no "
                        "certificate_file/private_key_file"
                    )
            elif tls.certificate_file or tls.private_key_file:
                self.identity = security._file_provider(
                    tls.certificate_file, tls.private_key_file, None
                )
            if tls.validation is not None:
                self.roots = self._instance(security, tls.validation, "validation")
                if not self.roots.has_roots:
                    raise TlsConfigError(
                        f"validation provider {tls.validation.instance_name!r} has no "
                        "ca_certificate_file"
                    )
            elif tls.trusted_ca_file:
                self.roots = security._file_provider(None, None, tls.trusted_ca_file)
        except TlsConfigError as e:
            raise self._error(e.message) from e
        if self.roots is None:
            # A29: without a validation context there is nothing to verify the peer
            # against; pymesh does not fall back to the system store or to no checks.
            raise self._error(
                "UpstreamTlsContext has no validation context (no CA provider instance "
                "or trusted_ca); refusing to connect without verifying the peer"
            )
        self._built: _Built | None = None
        self._build_lock = threading.Lock()

    def __repr__(self) -> str:
        gen = self._built.generations if self._built else None
        return f"<ClientTls cluster={self.cluster!r} generations={gen}>"

    def _instance(
        self, security: MeshSecurity, inst: CertificateProviderInstance, role: str
    ) -> FileWatcherProvider:
        try:
            return security.provider(inst.instance_name)
        except TlsConfigError as e:
            raise TlsConfigError(f"{role} provider: {e.message}") from e

    def _error(self, message: str) -> TlsConfigError:
        return TlsConfigError(
            f"cluster {self.cluster!r}: {message}",
            node_id=self.node_id,
            resource_name=self.cluster,
        )

    def _materials(self) -> tuple[CertificateMaterial | None, CertificateMaterial]:
        ident = self.identity.material() if self.identity is not None else None
        assert self.roots is not None
        return ident, self.roots.material()

    def context(self) -> ssl.SSLContext:
        """The context for a new connection (rebuilt only when a provider rotated)."""
        ident, roots = self._materials()
        gens = (ident.generation if ident else 0, roots.generation)
        built = self._built
        if built is not None and built.generations == gens:
            return built.context
        with self._build_lock:
            built = self._built
            if built is None or built.generations != gens:
                built = _Built(gens, self._build(ident, roots))
                self._built = built  # atomic swap: later connections use it
        return built.context

    def _build(
        self, ident: CertificateMaterial | None, roots: CertificateMaterial
    ) -> ssl.SSLContext:
        tls = self.tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # identity = SAN matchers, checked after the handshake
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            assert roots.ca_certificates is not None
            ctx.load_verify_locations(cadata=roots.ca_certificates.decode("ascii"))
            if ident is not None:
                assert ident.chain_file is not None
                ctx.load_cert_chain(ident.chain_file)
            if tls.min_version:
                ctx.minimum_version = _VERSIONS[tls.min_version]
            if tls.max_version:
                ctx.maximum_version = _VERSIONS[tls.max_version]
            if tls.cipher_suites:
                ctx.set_ciphers(":".join(tls.cipher_suites))
            if tls.alpn_protocols:
                ctx.set_alpn_protocols(list(tls.alpn_protocols))
        except (ssl.SSLError, OSError, KeyError, ValueError) as e:
            raise self._error(f"cannot build the TLS context: {e}") from e
        return ctx

    def check_peer(self, der: bytes | None) -> Sans:
        """Raise PeerIdentityError unless the peer certificate passes the SAN matchers."""
        return check_peer_identity(
            der, self.tls.san_matchers, cluster=self.cluster, node_id=self.node_id
        )


class ServerTls:
    """Server-side mTLS: requires and verifies client certificates.

    The certificate and key come from ``provider``; the roots that verify clients from
    ``roots`` (a DownstreamTlsContext's validation instance), else from ``provider``.
    :meth:`ssl_context` returns one context that keeps serving current material: its
    ``sni_callback`` (called on every handshake, SNI or not) switches the connection to
    the context of the providers' current generations.
    """

    def __init__(
        self,
        provider: FileWatcherProvider,
        *,
        roots: FileWatcherProvider | None = None,
        node_id: str | None = None,
    ) -> None:
        ca = roots if roots is not None else provider
        if not (provider.has_identity and ca.has_roots):
            raise TlsConfigError(
                f"certificate provider {provider.name!r}"
                + (f" (roots: {ca.name!r})" if roots is not None else "")
                + ": serving mTLS needs certificate_file, private_key_file and "
                "ca_certificate_file",
                node_id=node_id,
            )
        self.provider = provider
        self.roots = roots
        self._built: _Built | None = None
        self._lock = threading.Lock()
        self._front: ssl.SSLContext | None = None

    def _materials(self) -> tuple[CertificateMaterial, CertificateMaterial | None]:
        return self.provider.material(), (self.roots.material() if self.roots is not None else None)

    def current(self) -> ssl.SSLContext:
        """A context for the providers' current generations."""
        m, r = self._materials()
        gens = (m.generation,) if r is None else (m.generation, r.generation)
        built = self._built
        if built is not None and built.generations == gens:
            return built.context
        with self._lock:
            built = self._built
            if built is None or built.generations != gens:
                built = _Built(gens, _server_context(m, r))
                self._built = built
        return built.context

    def ssl_context(self) -> ssl.SSLContext:
        """One context for a server socket that follows rotations (see class docs)."""
        if self._front is None:
            front = _server_context(*self._materials())

            def swap(sslobj: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _c: object) -> None:
                sslobj.context = self.current()

            front.sni_callback = swap
            self._front = front
        return self._front


def _server_context(
    m: CertificateMaterial, roots: CertificateMaterial | None = None
) -> ssl.SSLContext:
    ca = (roots if roots is not None else m).ca_certificates
    assert m.chain_file is not None and ca is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(m.chain_file)
    ctx.load_verify_locations(cadata=ca.decode("ascii"))
    return ctx
