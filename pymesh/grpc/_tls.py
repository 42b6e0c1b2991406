"""Upstream TLS for mesh gRPC sub-channels, from the cluster's UpstreamTlsContext (A29).

How a call to a TLS cluster reaches an endpoint:

1. Every attempt calls :func:`cluster_tls` for its pick. It looks up the cluster's
   :class:`~pymesh.security.ClientTls` (certificate providers, roots, SAN matchers) and
   passes it explicitly to ``subchannel`` (no side channel). A config that cannot be
   satisfied (unknown provider, unreadable key) fails the attempt there: UNAVAILABLE, no
   socket.
2. ``subchannel(address, tls)`` then hands out, instead of a plaintext channel, a *view* of
   the endpoint's :class:`TlsEndpoint` bound to that ClientTls (one view per cluster TLS
   config; a different config is a different view with its own channels).
3. A view's call first makes sure the endpoint was verified for the providers' current
   material generation: a TLS handshake with the cluster's context and the SAN check
   (:func:`~pymesh.security.verify_grpc_peer`), cached per (endpoint, config,
   generation). Only then is the real ``grpc`` secure channel of that generation built
   (certificate, key and roots of that generation; ``ssl_target_name_override`` = a
   name of the verified certificate) and the call sent. A failed check fails the call
   with UNAVAILABLE naming the cluster, the endpoint and the SANs seen; no RPC byte
   goes to that endpoint. Failures are remembered for :data:`RECHECK_AFTER` seconds.
4. A rotation (a provider loads new files) changes the generation: the next call
   verifies again and builds a new channel; the previous one is closed as soon as its
   last call ends. Everything closes with the endpoint's sub-channel (endpoint left,
   mesh channel closed).

The sync and aio halves are :mod:`pymesh.grpc._tls_sync` and :mod:`pymesh.grpc._tls_aio`.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from pymesh._mesh import Mesh
from pymesh._upstream import ClusterRuntime
from pymesh.call import Plan
from pymesh.errors import TlsConfigError
from pymesh.grpc._core import LocalStatus, no_upstream
from pymesh.grpc._local import LocalRpcError
from pymesh.security import ClientTls, PeerIdentityError
from pymesh.security._grpc import GrpcPeer, material_channel_credentials
from pymesh.security.providers import CertificateMaterial

__all__ = [
    "CHECK_ERRORS",
    "CHECK_TIMEOUT",
    "CLOSED",
    "RECHECK_AFTER",
    "Binding",
    "Inner",
    "TlsAioRpcError",
    "TlsEndpoint",
    "TlsRpcError",
    "cluster_tls",
    "refusal",
    "tls_options",
]

C = TypeVar("C")

#: Seconds a pre-check handshake may take when the call has no (shorter) deadline.
CHECK_TIMEOUT = 10.0
#: Seconds a failed pre-check is remembered: calls to that endpoint fail at once
#: (no new handshake per call) until then.
RECHECK_AFTER = 1.0

Generations = tuple[int, int]


def cluster_tls(
    mesh: Mesh, rt: ClusterRuntime, plan: Plan, *, enabled: bool
) -> ClientTls | LocalStatus | None:
    """The ClientTls an attempt to a pick of ``rt`` must use (None: plaintext), handed to
    ``subchannel`` explicitly; the status to fail the attempt with when the cluster's TLS
    config cannot be satisfied (never plaintext for a TLS cluster).

    ``enabled`` is False for channels built with the caller's own credentials.
    """
    if not enabled:
        return None
    try:
        return rt.client_tls(mesh.security)
    except TlsConfigError as exc:
        return no_upstream(
            plan,
            f"cluster {rt.name!r} requires upstream TLS, which cannot be set up: "
            f"{exc.message}; refusing plaintext",
            mesh.node_id,
        )


def tls_options(
    options: Iterable[tuple[str, Any]], authority: str, target_name: str
) -> tuple[tuple[str, Any], ...]:
    """Channel options of a verified TLS sub-channel.

    grpcio checks its connections' host name against ``target_name`` (a name of the
    certificate pymesh verified). It also refuses calls whose ``:authority`` is neither
    the channel target nor a name of the certificate, so the mesh authority the channel
    adds by default is dropped: these calls carry the endpoint address, as a plain
    ``grpc.secure_channel(address)`` does. A default authority the caller set is kept.
    """
    kept = tuple(
        (k, v)
        for k, v in options
        if k != "grpc.ssl_target_name_override"
        and not (k == "grpc.default_authority" and v == authority)
    )
    return (*kept, ("grpc.ssl_target_name_override", target_name))


# -- errors ------------------------------------------------------------------------------


class TlsRpcError(LocalRpcError):
    """A sync call refused because its endpoint failed the TLS pre-check (UNAVAILABLE).

    ``error`` is the cause: PeerIdentityError (wrong identity, with ``.sans``),
    TlsConfigError, or the OSError / ssl.SSLError of the handshake.
    """

    def __init__(self, status: LocalStatus, error: BaseException) -> None:
        super().__init__(status.code, status.details)
        self.error = error


class TlsAioRpcError(grpc.aio.AioRpcError):  # type: ignore[misc]
    """The asyncio twin of :class:`TlsRpcError`."""

    def __init__(self, status: LocalStatus, error: BaseException) -> None:
        super().__init__(
            status.code, grpc.aio.Metadata(), grpc.aio.Metadata(), status.details, None
        )
        self.error = error


def refusal(exc: BaseException, tls: ClientTls, address: str) -> LocalStatus:
    """The UNAVAILABLE status for an endpoint whose pre-check failed."""
    where = f"endpoint {address} of cluster {tls.cluster!r}"
    if isinstance(exc, PeerIdentityError):
        why = f"{where} failed the TLS identity check: {exc.message}"
    elif isinstance(exc, TlsConfigError):
        why = f"{where}: {exc.message}"
    else:
        why = f"TLS handshake with {where} failed ({type(exc).__name__}: {exc})"
    return LocalStatus(grpc.StatusCode.UNAVAILABLE, f"pymesh: {why} [xDS node id {tls.node_id}]")


#: What a pre-check may raise that fails the call (anything else is a bug: propagate).
CHECK_ERRORS = (TlsConfigError, OSError, ssl.SSLError, ValueError)

#: The status of a call whose endpoint's sub-channel closed under it.
CLOSED = LocalStatus(grpc.StatusCode.CANCELLED, "channel closed")


# -- per endpoint × cluster TLS config ------------------------------------------------------


@dataclass(eq=False)
class Inner(Generic[C]):
    """One real secure channel: one endpoint, one TLS config, one material generation."""

    channel: C
    generations: Generations
    peer: GrpcPeer
    active: int = 0
    retired: bool = False
    mcs: dict[tuple[str, str, Any, Any], Any] = field(default_factory=dict)

    def multicallable(self, kind: str, method: str, ser: Any, deser: Any) -> Any:
        """The real channel's multi-callable of ``kind`` for ``method`` (cached)."""
        key = (kind, method, ser, deser)
        mc = self.mcs.get(key)
        if mc is None:
            mc = getattr(self.channel, kind)(method, ser, deser, _registered_method=True)
            self.mcs[key] = mc
        return mc


@dataclass(frozen=True, slots=True)
class _Failure:
    generations: Generations
    until: float
    error: BaseException


class Binding(Generic[C]):
    """The verified channels of one endpoint for one cluster TLS config.

    Holds the current :class:`Inner` (fast path: no lock), remembers a failed check,
    counts calls per inner and closes a superseded inner when its last call ends.
    """

    def __init__(
        self,
        tls: ClientTls,
        address: str,
        make: Callable[[grpc.ChannelCredentials, str], C],
        close: Callable[[C], None],
    ) -> None:
        self.tls = tls
        self.address = address
        self._make = make
        self._close = close
        self.current: Inner[C] | None = None
        self._failure: _Failure | None = None
        self._lock = threading.Lock()  # bookkeeping only, never held during I/O
        #: Serialises sync pre-checks of this binding (one handshake, others wait).
        self.check_lock = threading.Lock()
        self._inners: list[Inner[C]] = []
        self.closed = False
        #: Superseded by a new TLS config of the cluster: channels built for a late call
        #: still arriving here close as soon as that call ends.
        self.orphaned = False

    def __repr__(self) -> str:
        gen = self.current.generations if self.current else None
        return f"<Binding {self.address} cluster={self.tls.cluster!r} generations={gen}>"

    def materials(self) -> tuple[CertificateMaterial | None, CertificateMaterial, Generations]:
        """The providers' current identity and roots, and their generations."""
        tls = self.tls
        ident = tls.identity.material() if tls.identity is not None else None
        assert tls.roots is not None  # ClientTls refuses configs without roots
        roots = tls.roots.material()
        return ident, roots, (ident.generation if ident else 0, roots.generation)

    def ready(self) -> Inner[C] | None:
        """The current inner when it is of the current material generation."""
        inner = self.current
        if inner is not None and inner.generations == self.materials()[2]:
            return inner
        return None

    def failed(self, generations: Generations) -> BaseException | None:
        """The error of a recent failed check of this generation (still remembered)."""
        f = self._failure
        if f is not None and f.generations == generations and time.monotonic() < f.until:
            return f.error
        return None

    def fail(self, generations: Generations, error: BaseException) -> None:
        self._failure = _Failure(generations, time.monotonic() + RECHECK_AFTER, error)

    def install(
        self,
        ident: CertificateMaterial | None,
        roots: CertificateMaterial,
        generations: Generations,
        peer: GrpcPeer,
    ) -> Inner[C] | None:
        """Build the channel of a verified generation; supersede the previous one.

        None when the endpoint's sub-channel was closed meanwhile (the mesh channel closed).
        """
        channel = self._make(material_channel_credentials(ident, roots), peer.target_name)
        inner: Inner[C] = Inner(channel, generations, peer)
        closing: list[Inner[C]] = []
        with self._lock:
            if self.closed:
                closing.append(inner)
            elif self.orphaned:
                inner.retired = True  # the caller's end() closes it
                self._inners.append(inner)
            else:
                old, self.current = self.current, inner
                self._inners.append(inner)
                self._failure = None
                if old is not None:
                    self._supersede(old, closing)
        for i in closing:
            self._close(i.channel)
        return None if self.closed else inner

    def _supersede(self, inner: Inner[C], closing: list[Inner[C]]) -> None:
        """Mark ``inner`` retired; when no call uses it, move it to ``closing`` (lock held;
        a busy one is closed by the last call's end())."""
        inner.retired = True
        if inner.active == 0:
            closing.append(inner)
            self._inners.remove(inner)

    def begin(self, inner: Inner[C]) -> None:
        with self._lock:
            inner.active += 1

    def end(self, inner: Inner[C]) -> None:
        with self._lock:
            inner.active -= 1
            done = inner.retired and inner.active == 0 and inner in self._inners
            if done:
                self._inners.remove(inner)
        if done:
            self._close(inner.channel)  # superseded by a rotation and now idle

    def retire(self) -> None:
        """Supersede every channel (the cluster's TLS config changed): close when idle."""
        closing: list[Inner[C]] = []
        with self._lock:
            self.current = None
            self.orphaned = True
            for inner in list(self._inners):
                self._supersede(inner, closing)
        for i in closing:
            self._close(i.channel)

    def take_all(self) -> list[C]:
        """Forget every channel and return them (the endpoint's sub-channel closes)."""
        with self._lock:
            self.closed = True
            self.current = None
            inners, self._inners = self._inners, []
        return [i.channel for i in inners]

    def channels(self) -> list[C]:
        with self._lock:
            return [i.channel for i in self._inners]


class TlsEndpoint(Generic[C]):
    """The sub-channel of one endpoint address that TLS clusters use (sync or aio).

    ``view(tls)`` is the channel for calls of one cluster TLS config; ``view(None)`` a
    plaintext channel for calls of plaintext clusters that share the address.
    """

    def __init__(
        self,
        address: str,
        make_secure: Callable[[grpc.ChannelCredentials, str], C],
        make_plain: Callable[[], C],
        close: Callable[[C], None],
        plain: C | None = None,
    ) -> None:
        self.address = address
        self._make_secure = make_secure
        self._make_plain = make_plain
        self._close_channel = close
        self._plain = plain
        self._lock = threading.Lock()
        self._views: dict[ClientTls, Any] = {}
        self._closed = False
        #: Called with every real channel created (sync: connectivity watchers).
        self.on_channel: Callable[[C], None] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address} views={len(self._views)}>"

    def _new_view(self, binding: Binding[C]) -> Any:
        raise NotImplementedError

    def _make(self, creds: grpc.ChannelCredentials, target_name: str) -> C:
        channel = self._make_secure(creds, target_name)
        if self.on_channel is not None:
            self.on_channel(channel)
        return channel

    def view(self, tls: ClientTls | None) -> Any:
        """The channel for calls of ``tls`` (a view), or the plaintext one (``None``)."""
        if tls is None:
            plain = self._plain
            if plain is None:
                with self._lock:
                    if self._plain is None:
                        self._plain = self._make_plain()
                        if self.on_channel is not None:
                            self.on_channel(self._plain)
                    plain = self._plain
            return plain
        v = self._views.get(tls)
        if v is None:
            stale: list[Any] = []
            with self._lock:
                v = self._views.get(tls)
                if v is None:
                    # A new TLS config of the same cluster supersedes the old one's channels.
                    for other, ov in list(self._views.items()):
                        if other.cluster == tls.cluster:
                            stale.append(ov)
                            del self._views[other]
                    v = self._new_view(Binding(tls, self.address, self._make, self._close_channel))
                    self._views[tls] = v
            for ov in stale:
                ov.binding.retire()
        return v

    def all_channels(self) -> list[C]:
        """Every live real channel (plaintext first), for connectivity and closing."""
        out: list[C] = [] if self._plain is None else [self._plain]
        for v in list(self._views.values()):
            out.extend(v.binding.channels())
        return out

    def take_all(self) -> list[C]:
        """Forget every real channel and return them, to be closed."""
        with self._lock:
            self._closed = True
            views, self._views = self._views, {}
            plain, self._plain = self._plain, None
        out: list[C] = [] if plain is None else [plain]
        for v in views.values():
            out.extend(v.binding.take_all())
        return out
