"""The protocol-neutral half of an xDS-driven gRPC server (gRFC A36).

One :class:`XdsPort` per listening address: it reserves the port, watches the Listener
named by the bootstrap's ``server_listener_resource_name_template`` (and the
RouteConfigurations its chains name), validates it against the address and publishes one
immutable :class:`ServingConfig` (or None: not serving). The sync and aio servers
(:mod:`pymesh.grpc._server`) bind a grpcio server when a config with new transport
security arrives, and unbind it when the Listener goes away; their interceptors call
:func:`authorize` on each call, which reads the published config through one attribute.

Why one grpcio server per transport security: grpcio fixes a port's credentials (and
whether client certificates are required) when the port is added, while A36 learns them
from the Listener, which is named after the port. So the port is reserved first (a bound,
never-listening socket with SO_REUSEPORT), and grpcio binds it only once the Listener
says how: that is also A36's preferred "not serving" (nothing listens).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import random
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc

from pymesh._mesh import Mesh
from pymesh.bootstrap import _PATH_SAFE
from pymesh.errors import BootstrapError, MeshError, ResourceInvalid, TlsConfigError, XdsDataError
from pymesh.routing._request import RequestInfo
from pymesh.security._rbac import (
    NON_FORWARDING,
    PeerCertificate,
    RbacAuthorizer,
    RbacRequest,
    RbacRoutes,
    peer_certificate_from_pem,
)
from pymesh.security.san import Sans, peer_sans, san_matches
from pymesh.xds.client import LDS, RDS
from pymesh.xds.resources.route import (
    NonForwardingAction,
    RouteConfiguration,
)
from pymesh.xds.resources.server_listener import (
    Connection,
    DownstreamTls,
    FilterChain,
    ServerListener,
)

log = logging.getLogger("pymesh.grpc.server")

__all__ = [
    "Denied",
    "SecurityKey",
    "ServingConfig",
    "ServingModeCallback",
    "Unroutable",
    "XdsPort",
    "authorize",
    "route_for",
    "server_credentials",
]

#: ``callback(address, serving, error)``: the port started serving (``error`` None) or
#: stopped (``error`` says why), as grpc-go's serving mode callback.
ServingModeCallback = Callable[[str, bool, "MeshError | None"], None]

#: What grpcio fixes when a port is added: None (plaintext) or the DownstreamTls.
SecurityKey = DownstreamTls | None


@dataclass(frozen=True, slots=True)
class Denied:
    """A call refused before the application sees it."""

    code: grpc.StatusCode
    message: str


@dataclass(frozen=True, slots=True, eq=False)
class ServingConfig:
    """Everything a call on the port needs, built once per Listener / RDS update."""

    listener: ServerListener
    #: Per chain (by identity): the compiled routes and RBAC, or None while its RDS
    #: resource is missing or invalid (calls on that chain fail with UNAVAILABLE, A36).
    tables: Mapping[int, RbacRoutes | None]
    security: SecurityKey
    listen_ip: str
    #: context.peer() -> (source IP, its chain): a connection's calls share the answer
    #: (bounded; a racing writer stores the same value, so no lock).
    by_peer: dict[str, tuple[str, FilterChain | None]] = dataclasses.field(default_factory=dict)

    def chain_for(self, peer: str) -> tuple[str, FilterChain | None]:
        hit = self.by_peer.get(peer)
        if hit is None:
            src_ip, src_port = parse_peer(peer)
            hit = (src_ip, self.listener.select(Connection(self.listen_ip, src_ip, src_port)))
            if len(self.by_peer) >= _PEER_MEMO_LIMIT:
                self.by_peer.clear()
            self.by_peer[peer] = hit
        return hit


_PEER_MEMO_LIMIT = 4096


def split_host_port(address: str) -> tuple[str, int]:
    """``"127.0.0.1:0"`` / ``"[::1]:0"`` → (ip, port); the host must be an IP literal."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise MeshError(f"listening address {address!r}: use IP:PORT, e.g. 127.0.0.1:0")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise MeshError(
            f"listening address {address!r}: the host must be an IP literal (gRFC A36 names "
            "the Listener after IP:port), e.g. 0.0.0.0:50051 or [::]:50051"
        ) from None
    return str(ip), int(port)


def join_host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _chain_security(listener: ServerListener) -> SecurityKey:
    """The one transport security of every chain: grpcio cannot pick credentials per
    connection, so chains that disagree make the Listener unusable here."""
    kinds = {c.tls for c in listener.chains()}
    if len(kinds) > 1:
        raise MeshError(
            "the Listener's filter chains use different transport security (TLS settings); "
            "a pymesh gRPC server needs the same on every chain",
            resource_name=listener.name,
        )
    return next(iter(kinds)) if kinds else None


class XdsPort:
    """One xDS-governed listening address: its reservation, watches and serving config.

    ``on_change(config)`` is called on the xDS thread with each new :class:`ServingConfig`
    or None (stop serving); the server binds or unbinds grpcio accordingly.
    """

    def __init__(
        self,
        mesh: Mesh,
        address: str,
        on_change: Callable[[ServingConfig | None], None],
        on_serving_mode: ServingModeCallback | None = None,
    ) -> None:
        template = mesh.bootstrap.server_listener_resource_name_template
        if not template:
            raise BootstrapError(
                mesh.bootstrap.source,
                "server_listener_resource_name_template",
                "an xDS server needs it (gRFC A36), e.g. "
                '"grpc/server?xds.resource.listening_address=%s"',
            )
        ip, port = split_host_port(address)
        self._sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        # SO_REUSEPORT: grpcio binds the same port (it sets the option too) while this
        # socket keeps the port ours between grpcio servers; it never listens.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._sock.bind((ip, port))
        self.ip = ip
        self.port: int = self._sock.getsockname()[1]
        self.address = join_host_port(ip, self.port)
        # gRFC A47: in an xdstp: template the address is percent-encoded (as for clients).
        target = (
            quote(self.address, safe=_PATH_SAFE)
            if template.startswith("xdstp:")
            else (self.address)
        )
        self.listener_name = template.replace("%s", target)
        self.mesh = mesh
        self.config: ServingConfig | None = None
        self._on_change = on_change
        self._on_serving_mode = on_serving_mode
        self._listener: ServerListener | None = None
        self._routes: dict[str, RouteConfiguration | None] = {}
        self._rds_watchers: dict[str, _Watcher] = {}
        self._lds_watcher = _Watcher(self, LDS)
        self._serving = False
        self._closed = False
        self._config_errors: str | None = None  # A36 configuration error logging
        self._last_error: str | None = None  # the last not-serving reason reported
        self._watching = False

    def __repr__(self) -> str:
        state = "serving" if self.config is not None else "not serving"
        return f"<XdsPort {self.address} listener={self.listener_name!r} {state}>"

    def start(self) -> None:
        if not self._watching and not self._closed:
            self._watching = True
            self.mesh._client.watch(LDS, self.listener_name, self._lds_watcher)

    def close(self) -> None:
        """Stop watching (the RDS watches are the xDS thread's to drop) and free the port."""
        if self._closed:
            return
        self._closed = True
        if self._watching and not self.mesh.closed:
            client = self.mesh._client
            client.cancel_watch(LDS, self.listener_name, self._lds_watcher)

            def drop_routes() -> None:
                for name, w in list(self._rds_watchers.items()):
                    client.cancel_watch(RDS, name, w)
                self._rds_watchers.clear()

            client.submit(drop_routes)
        self._sock.close()

    # ------------------------------------------------------------ xDS events (xDS thread)
    def on_event(
        self, type_url: str, name: str, state: str, value: Any, error: MeshError | None
    ) -> None:
        if self._closed:
            return
        if type_url == LDS:
            self._on_listener(state, value, error)
        else:
            self._on_route(name, state, value, error)

    def _on_listener(self, state: str, value: Any, error: MeshError | None) -> None:
        if state == "ok":
            if not isinstance(value, ServerListener):
                self._not_serving(
                    ResourceInvalid(
                        self.listener_name,
                        "api_listener",
                        "a server needs a Listener without api_listener",
                    )
                )
                return
            self._listener = value
            self._follow_routes(value)
            self._publish()
            return
        if state == "error" and self._listener is not None and not isinstance(error, XdsDataError):
            # A NACK or a stream failure keeps the last good Listener serving (A36, A57).
            log.warning("xDS server %s: %s (keeping the last good Listener)", self.address, error)
            return
        self._listener = None
        self._follow_routes(None)
        self._not_serving(error or self.mesh._client.does_not_exist_error(LDS, self.listener_name))

    def _on_route(self, name: str, state: str, value: Any, error: MeshError | None) -> None:
        if name not in self._rds_watchers:
            return
        if state == "ok":
            self._routes[name] = value
        elif (
            state == "error"
            and self._routes.get(name) is not None
            and not isinstance(error, XdsDataError)
        ):
            return  # keep the last good route configuration
        else:
            self._routes[name] = None
            log.warning(
                "xDS server %s: RouteConfiguration %r unusable (%s); calls it routes fail "
                "with UNAVAILABLE",
                self.address,
                name,
                error or "does not exist",
            )
        self._publish()

    def _follow_routes(self, listener: ServerListener | None) -> None:
        wanted = (
            {c.hcm.rds_name for c in listener.chains() if c.hcm.rds_name} if listener else set()
        )
        for name in list(self._rds_watchers):
            if name not in wanted:
                self.mesh._client.cancel_watch(RDS, name, self._rds_watchers.pop(name))
                self._routes.pop(name, None)
        for name in wanted - set(self._rds_watchers):
            w = self._rds_watchers[name] = _Watcher(self, RDS)
            self.mesh._client.watch(RDS, name, w)

    def _publish(self) -> None:
        lis = self._listener
        if lis is None:
            return
        # A36: apply a Listener once its RouteConfigurations have been tried.
        if any(n not in self._routes for n in self._rds_watchers):
            return
        try:
            ip = ipaddress.ip_address(lis.address)
        except ValueError:
            ip = None
        if ip is None or str(ip) != self.ip or lis.port != self.port:
            self._not_serving(
                MeshError(
                    f"the Listener's address {lis.address}:{lis.port} is not this server's "
                    f"listening address {self.address} (gRFC A36)",
                    resource_name=lis.name,
                )
            )
            return
        try:
            security = _chain_security(lis)
            tables: dict[int, RbacRoutes | None] = {}
            for c in lis.chains():
                rc = (
                    c.hcm.route_config
                    if c.hcm.route_config is not None
                    else (self._routes.get(c.hcm.rds_name or ""))
                )
                tables[id(c)] = (
                    RbacRoutes(
                        rc,
                        RbacAuthorizer.from_http_filters(
                            c.hcm.http_filters, resource_name=lis.name
                        ),
                    )
                    if rc is not None
                    else None
                )
            if security is not None:
                self._check_providers(security)
        except MeshError as e:
            self._not_serving(e)
            return
        cfg = ServingConfig(lis, tables, security, self.ip)
        self.config = cfg
        self._log_route_errors(cfg)
        self._on_change(cfg)  # the server binds grpcio, then calls mark_serving()

    def mark_serving(self, cfg: ServingConfig) -> None:
        """The server listens with ``cfg``: report "serving" if that is news. Called by
        the server once grpcio is bound (on the xDS thread, or an aio server's loop)."""
        if self._serving or self._closed or cfg is not self.config:
            return
        self._serving = True
        log.info("xDS server %s: serving (Listener %r)", self.address, cfg.listener.name)
        self._notify(True, None)

    def _check_providers(self, tls: DownstreamTls) -> None:
        self.mesh.security.provider(tls.identity.instance_name)
        if tls.validation is not None:
            self.mesh.security.provider(tls.validation.instance_name)

    def _log_route_errors(self, cfg: ServingConfig) -> None:
        """A36's configuration error logging: a warning per update while a chain's routes
        cannot serve, and one line when that is over."""
        problems = []
        for c in cfg.listener.chains():
            t = cfg.tables[id(c)]
            if t is None:
                problems.append(f"chain {c.name!r}: RouteConfiguration {c.hcm.rds_name!r} missing")
                continue
            for vh in t.route_config.virtual_hosts:
                if any(not isinstance(r.action, NonForwardingAction) for r in vh.routes):
                    problems.append(
                        f"chain {c.name!r}: virtual host {vh.name!r} has routes without "
                        "non_forwarding_action"
                    )
        text = "; ".join(problems) or None
        if text is not None:
            log.warning("xDS server %s: calls will fail with UNAVAILABLE: %s", self.address, text)
        elif self._config_errors is not None:
            log.warning("xDS server %s: configuration errors resolved", self.address)
        self._config_errors = text

    def _not_serving(self, error: MeshError) -> None:
        was = self.config is not None or self._serving
        self.config = None
        self._on_change(None)
        self._config_errors = None
        if was or self._last_error != str(error):
            self._serving = False
            self._last_error = str(error)
            log.warning("xDS server %s: not serving: %s", self.address, error)
            self._notify(False, error)

    def _notify(self, serving: bool, error: MeshError | None) -> None:
        if self._on_serving_mode is None:
            return
        try:
            self._on_serving_mode(self.address, serving, error)
        except Exception:
            log.exception("serving mode callback for %s raised", self.address)


class _Watcher:
    """Adapts the xDS client's watcher protocol to :meth:`XdsPort.on_event`."""

    def __init__(self, port: XdsPort, type_url: str) -> None:
        self.port = port
        self.type_url = type_url

    def on_resource(self, name: str, value: Any) -> None:
        self.port.on_event(self.type_url, name, "ok", value, None)

    def on_error(self, name: str, error: MeshError) -> None:
        self.port.on_event(self.type_url, name, "error", None, error)

    def on_does_not_exist(self, name: str) -> None:
        self.port.on_event(self.type_url, name, "missing", None, None)


# ---------------------------------------------------------------- credentials


def server_credentials(mesh: Mesh, tls: DownstreamTls) -> grpc.ServerCredentials:
    """grpcio credentials for a DownstreamTlsContext, following certificate rotations.

    ``grpc.dynamic_ssl_server_credentials`` asks for the certificate configuration at
    each new handshake, so rotated provider files reach new connections while calls on
    existing ones carry on.
    """
    identity = mesh.security.provider(tls.identity.instance_name)
    roots = (
        mesh.security.provider(tls.validation.instance_name) if tls.validation is not None else None
    )
    if not identity.has_identity:
        raise TlsConfigError(
            f"certificate provider {identity.name!r} has no certificate and key; the "
            "server's tls_certificate_provider_instance needs both"
        )
    if roots is not None and not roots.has_roots:
        raise TlsConfigError(
            f"certificate provider {roots.name!r} has no CA certificates; the validation "
            "context needs ca_certificate_file"
        )

    def generations() -> tuple[int, int]:
        return identity.material().generation, roots.material().generation if roots else 0

    state = {"gen": generations()}

    def config() -> grpc.ServerCertificateConfiguration:
        m = identity.material()
        assert m.private_key is not None and m.cert_chain is not None
        ca = roots.material().ca_certificates if roots is not None else None
        return grpc.ssl_server_certificate_configuration(
            [(m.private_key, m.cert_chain)], root_certificates=ca
        )

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        gen = generations()
        if gen == state["gen"]:
            return None  # unchanged: grpcio keeps the current configuration
        state["gen"] = gen
        return config()

    return grpc.dynamic_ssl_server_credentials(
        config(), fetch, require_client_authentication=tls.require_client_certificate
    )


# ---------------------------------------------------------------- per call

_NOT_SERVING = Denied(
    grpc.StatusCode.UNAVAILABLE, "the xDS server is not serving (no valid Listener)"
)
_PEM_CACHE_LIMIT = 1024
_pem_sans: dict[bytes, Sans] = {}
_rng = random.Random()


def parse_peer(peer: str) -> tuple[str, int]:
    """grpcio's ``context.peer()`` (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``) → (ip, port)."""
    _, _, rest = peer.partition(":")
    host, _, port = rest.rpartition(":")
    if host.startswith("["):
        host = host[1:-1]
    try:
        return host, int(port)
    except ValueError:
        return host, 0


def _sans_of(auth: Mapping[str, Sequence[bytes]]) -> Sans:
    pems = auth.get("x509_pem_cert")
    if not pems:
        return ()
    pem = pems[0]
    sans = _pem_sans.get(pem)
    if sans is None:
        sans = peer_sans(ssl.PEM_cert_to_DER_cert(pem.decode("ascii")))
        if len(_pem_sans) >= _PEM_CACHE_LIMIT:
            _pem_sans.clear()
        _pem_sans[pem] = sans
    return sans


@dataclass(frozen=True, slots=True)
class Unroutable:
    """Why a call on a serving port has no route to take (gRFC A36)."""

    #: True: no route matches the call (HTTP answers 404); False: the chain's routes
    #: cannot serve it (missing RouteConfiguration, a route without
    #: ``non_forwarding_action``: 503). gRPC answers UNAVAILABLE for both.
    no_route: bool
    message: str


def route_for(
    config: ServingConfig, chain: FilterChain, request: RequestInfo
) -> RbacAuthorizer | Unroutable:
    """The RBAC chain of the route ``request`` takes on ``chain`` (the one route
    selection of the gRPC server and :class:`pymesh.asgi.XdsListener`), or why none."""
    routes = config.tables.get(id(chain))
    if routes is None:
        return Unroutable(
            False, f"RouteConfiguration {chain.hcm.rds_name!r} is not available (gRFC A36)"
        )
    hit = routes.select(request, _rng.getrandbits(64))
    if hit is None:
        return Unroutable(True, f"no route matches {request.path}")
    decision, auth = hit
    if decision.cluster != NON_FORWARDING:
        return Unroutable(
            False, f"route {decision.route.name!r} has no non_forwarding_action (gRFC A36)"
        )
    return auth


def authorize(
    config: ServingConfig | None,
    context: Any,
    method: str,
    metadata: Sequence[tuple[str, str | bytes]] | None,
    authority: str,
) -> Denied | None:
    """What A36 (routes) and the chain's TLS SAN matchers say about one call: None to
    let it through, else the status to end it with."""
    if config is None:
        return _NOT_SERVING
    src_ip, chain = config.chain_for(context.peer())
    if chain is None:
        return Denied(grpc.StatusCode.UNAVAILABLE, "no filter chain matches this connection")
    denied = _check_tls(chain, context)
    if denied is not None:
        return denied
    headers: dict[str, str] = {}
    for k, v in metadata or ():
        if isinstance(v, str):
            prev = headers.get(k)
            headers[k] = v if prev is None else f"{prev},{v}"
    req = RequestInfo("POST", authority, method, headers, is_grpc=True, source_ip=src_ip)
    auth = route_for(config, chain, req)
    if isinstance(auth, Unroutable):
        return Denied(grpc.StatusCode.UNAVAILABLE, auth.message)
    if auth.enforcing:
        tls = _is_tls(context)
        rbac_req = RbacRequest(
            req,
            peer_address=src_ip,
            local_address=config.listen_ip,
            local_port=config.listener.port,
            tls=tls,
            peer_certificate=_certificate(context) if tls else None,
        )
        verdict = auth.check(rbac_req, protocol="grpc")
        if not verdict.allowed:
            return Denied(
                grpc.StatusCode.PERMISSION_DENIED, verdict.error(config.listener.name).message
            )
    return None


def _is_tls(context: Any) -> bool:
    kind = context.auth_context().get("transport_security_type")
    return bool(kind) and kind[0] == b"ssl"


def _certificate(context: Any) -> PeerCertificate | None:
    pems = context.auth_context().get("x509_pem_cert")
    return peer_certificate_from_pem(pems[0]) if pems else None


def _check_tls(chain: FilterChain, context: Any) -> Denied | None:
    tls = chain.tls
    if tls is None or not tls.san_matchers:
        return None
    sans = _sans_of(context.auth_context())
    for t, v in sans:
        for m in tls.san_matchers:
            if san_matches(m, t, v):
                return None
    seen = ", ".join(f"{t}:{v}" for t, v in sans) or "no certificate"
    return Denied(
        grpc.StatusCode.UNAUTHENTICATED,
        f"the client certificate's SANs [{seen}] match none of the filter chain's SAN matchers",
    )
