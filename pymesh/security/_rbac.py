"""The RBAC engine: gRFC A41 / Envoy's RBAC HTTP filter, compiled once, evaluated per request.

A parsed :class:`~pymesh.xds.resources.rbac.RbacConfig` is compiled into closures
(:class:`RbacEngine`); the RBAC filters of a listener, in http_filters order, form an
:class:`RbacAuthorizer` (grpc-go's ChainEngine): a request passes when every engine
lets it through. Engines and authorizers are immutable; evaluating takes no lock.

Semantics (A41, the same as grpc-go's internal/xds/rbac):

- a policy matches when any of its permissions and any of its principals match;
  policies are tried in name order and the first match is the one reported;
- ALLOW: only a request that matches a policy passes; DENY: a request that matches a
  policy is denied; LOG (no rules): nothing is enforced;
- ``header``: Envoy's HeaderMatcher (``:method``, ``:path``, ``:authority`` read the
  request; hop-by-hop headers such as ``te`` are not present); ``url_path``: the path
  without query; ``destination_ip``/``destination_port``: the local address;
  ``source_ip``/``direct_remote_ip``/``remote_ip``: the peer address;
  ``requested_server_name``: the empty string; ``metadata``: never (inverted: always);
- ``authenticated``: the connection uses TLS; with ``principal_name``, one of the peer
  certificate's URI SANs matches, else (no URI SAN) one of its DNS SANs, else (neither)
  its subject in RFC 2253 form, else (no certificate) ``""``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cryptography import x509

from pymesh.errors import PermissionDeniedError
from pymesh.routing._match import header_test, string_test
from pymesh.routing._request import RequestInfo
from pymesh.routing._table import RouteDecision, RouteTable
from pymesh.telemetry._providers import instruments
from pymesh.xds.resources.listener import HttpFilter
from pymesh.xds.resources.rbac import (
    RBAC_TYPE,
    AndRule,
    AnyRule,
    AuthenticatedRule,
    DestinationIpRule,
    DestinationPortRangeRule,
    DestinationPortRule,
    HeaderRule,
    MetadataRule,
    NotRule,
    OrRule,
    RbacAction,
    RbacConfig,
    RbacPolicy,
    RbacRule,
    RbacRules,
    RemoteIpRule,
    RequestedServerNameRule,
    UrlPathRule,
)
from pymesh.xds.resources.route import NonForwardingAction, RouteAction, RouteConfiguration

__all__ = [
    "NON_FORWARDING",
    "PeerCertificate",
    "RbacAuthorizer",
    "RbacDecision",
    "RbacEngine",
    "RbacRequest",
    "RbacRoutes",
    "peer_certificate_from_pem",
]

logger = logging.getLogger("pymesh.security.rbac")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What RBAC reads from the peer's (verified) leaf certificate."""

    uri_sans: tuple[str, ...] = ()
    dns_sans: tuple[str, ...] = ()
    subject: str = ""  # RFC 2253 / 4514 distinguished name

    @classmethod
    def from_der(cls, der: bytes) -> PeerCertificate:
        """Read a DER certificate (``SSLSocket.getpeercert(binary_form=True)``)."""
        cert = x509.load_der_x509_certificate(der)
        uris: list[str] = []
        dns: list[str] = []
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            pass
        else:
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
            dns = san.get_values_for_type(x509.DNSName)
        return cls(tuple(uris), tuple(dns), cert.subject.rfc4514_string())

    @property
    def spiffe_id(self) -> str | None:
        """The first ``spiffe://`` URI SAN, if any (the workload identity in a mesh)."""
        for uri in self.uri_sans:
            if uri.startswith("spiffe://"):
                return uri
        return None


_CERT_CACHE_MAX = 1024
_cert_cache: dict[str | bytes, PeerCertificate] = {}


def peer_certificate_from_pem(pem: str | bytes) -> PeerCertificate:
    """The RBAC view of a PEM certificate (cached: a client sends the same one on
    every request of its connection, and usually on every connection)."""
    cert = _cert_cache.get(pem)
    if cert is None:
        if len(_cert_cache) >= _CERT_CACHE_MAX:
            _cert_cache.clear()  # bounded; a rotation storm only costs re-parsing
        text = pem.decode("ascii") if isinstance(pem, bytes) else pem
        cert = _cert_cache[pem] = PeerCertificate.from_der(ssl.PEM_cert_to_DER_cert(text))
    return cert


def _ip(text: str) -> IpAddress | None:
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.partition("%")[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return addr


class RbacRequest:
    """One request as RBAC sees it: the request (headers, path, method, authority) and
    its connection (addresses, TLS, the peer's verified certificate).

    ``tls`` is whether the connection is TLS; ``peer_certificate`` is the client's
    certificate when it sent one (None otherwise). Addresses are text (``"10.0.0.1"``);
    an unparsable address matches no CIDR range.
    """

    __slots__ = (
        "__dict__",  # cached_property storage
        "local_address",
        "local_port",
        "peer_address",
        "peer_certificate",
        "peer_port",
        "request",
        "tls",
    )

    def __init__(
        self,
        request: RequestInfo,
        *,
        peer_address: str = "",
        peer_port: int = 0,
        local_address: str = "",
        local_port: int = 0,
        tls: bool = False,
        peer_certificate: PeerCertificate | None = None,
    ) -> None:
        self.request = request
        self.peer_address = peer_address
        self.peer_port = peer_port
        self.local_address = local_address
        self.local_port = local_port
        self.tls = tls
        self.peer_certificate = peer_certificate

    @cached_property
    def peer_ip(self) -> IpAddress | None:
        return _ip(self.peer_address)

    @cached_property
    def local_ip(self) -> IpAddress | None:
        return _ip(self.local_address)

    def __repr__(self) -> str:
        cert = self.peer_certificate
        who = (cert.spiffe_id or cert.subject) if cert is not None else None
        return (
            f"RbacRequest({self.request.method} {self.request.path!r}, "
            f"peer={self.peer_address!r}, tls={self.tls}, identity={who!r})"
        )


Test = Callable[[RbacRequest], bool]


def _always(_req: RbacRequest) -> bool:
    return True


def _never(_req: RbacRequest) -> bool:
    return False


def _authenticated(rule: AuthenticatedRule) -> Test:
    if rule.principal_name is None:
        return lambda req: req.tls
    sm = rule.principal_name
    test = string_test(sm)
    empty = test("")
    exact = sm.value if sm.kind == "exact" and not sm.ignore_case else None

    def authenticated(req: RbacRequest) -> bool:
        if not req.tls:
            return False
        cert = req.peer_certificate
        if cert is None:
            return empty
        # A41: URI SANs if any, else DNS SANs if any, else the subject.
        names = cert.uri_sans or cert.dns_sans
        if not names:
            return test(cert.subject)
        if exact is not None:
            return exact in names  # the common SPIFFE-id policy: one tuple scan in C
        for name in names:  # noqa: SIM110 - a loop, not any(genexpr): this is per request
            if test(name):
                return True
        return False

    return authenticated


def compile_rule(rule: RbacRule) -> Test:
    """One permission or principal node → a test (and/or/not compiled recursively)."""
    if isinstance(rule, AnyRule):
        return _always
    if isinstance(rule, AndRule):
        return _all_of(compile_rule(r) for r in rule.rules)
    if isinstance(rule, OrRule):
        return _any_of(compile_rule(r) for r in rule.rules)
    if isinstance(rule, NotRule):
        inner = compile_rule(rule.rule)
        return lambda req: not inner(req)
    if isinstance(rule, HeaderRule):
        h = header_test(rule.matcher)
        return lambda req: h(req.request)
    if isinstance(rule, UrlPathRule):
        p = string_test(rule.path)
        return lambda req: p(req.request.bare_path)
    if isinstance(rule, DestinationIpRule):
        net = rule.network
        return lambda req: (ip := req.local_ip) is not None and ip in net
    if isinstance(rule, RemoteIpRule):
        rnet = rule.network
        return lambda req: (ip := req.peer_ip) is not None and ip in rnet
    if isinstance(rule, DestinationPortRule):
        port = rule.port
        return lambda req: req.local_port == port
    if isinstance(rule, DestinationPortRangeRule):
        start, end = rule.start, rule.end
        return lambda req: start <= req.local_port < end
    if isinstance(rule, RequestedServerNameRule):
        # A41: the requested server name is the empty string; decided once.
        return _always if string_test(rule.name)("") else _never
    if isinstance(rule, MetadataRule):
        return _always if rule.invert else _never
    if isinstance(rule, AuthenticatedRule):
        return _authenticated(rule)
    raise TypeError(f"not an RBAC rule: {rule!r}")


def _any_of(tests: Iterable[Test]) -> Test:
    # Plain loops and "or": a generator in any() costs more than the tests themselves.
    ts = tuple(tests)
    if len(ts) == 1:
        return ts[0]
    if len(ts) == 2:
        a, b = ts
        return lambda req: a(req) or b(req)

    def any_of(req: RbacRequest) -> bool:
        for t in ts:  # noqa: SIM110 - see above
            if t(req):
                return True
        return False

    return any_of


def _all_of(tests: Iterable[Test]) -> Test:
    ts = tuple(tests)
    if len(ts) == 1:
        return ts[0]
    if len(ts) == 2:
        a, b = ts
        return lambda req: a(req) and b(req)

    def all_of(req: RbacRequest) -> bool:
        for t in ts:  # noqa: SIM110 - see _any_of
            if not t(req):
                return False
        return True

    return all_of


def compile_policy(policy: RbacPolicy) -> Test:
    """A policy matches when any permission and any principal match."""
    perms = _any_of(compile_rule(r) for r in policy.permissions)
    princ = _any_of(compile_rule(r) for r in policy.principals)
    # Principals first: in a mesh they are usually identities, which differ between
    # policies far more often than the permissions do, so most policies fail fast.
    return lambda req: princ(req) and perms(req)


@dataclass(frozen=True, slots=True)
class RbacDecision:
    """The outcome of RBAC for one request.

    ``policy`` is the matching policy's name (for ALLOW the one that allowed, for DENY
    the one that denied), None when no policy matched. ``filter_name`` names the RBAC
    filter that decided (the denying one, or the last one when allowed; None without
    any enforcing filter).
    """

    allowed: bool
    policy: str | None = None
    filter_name: str | None = None
    action: RbacAction | None = None

    def error(self, resource_name: str | None = None) -> PermissionDeniedError:
        """The typed denial for a denied request (PERMISSION_DENIED / 403)."""
        if self.action == "DENY":
            msg = f"RBAC: request matched deny policy {self.policy!r}"
        else:
            msg = "RBAC: request matched no allow policy"
        return PermissionDeniedError(
            f"{msg} (filter {self.filter_name!r})",
            policy=self.policy,
            filter_name=self.filter_name or "",
            resource_name=resource_name,
        )


ALLOWED = RbacDecision(True)


class RbacEngine:
    """One RbacRules compiled: ``evaluate(request)`` → (allowed, matching policy name)."""

    __slots__ = ("_policies", "action", "rules")

    def __init__(self, rules: RbacRules) -> None:
        self.rules = rules
        self.action: RbacAction = rules.action
        self._policies = tuple((name, compile_policy(p)) for name, p in rules.policies)

    def matching_policy(self, req: RbacRequest) -> str | None:
        """The first policy (by name) that matches ``req``, or None."""
        for name, test in self._policies:
            if test(req):
                return name
        return None

    def evaluate(self, req: RbacRequest) -> tuple[bool, str | None]:
        name = self.matching_policy(req)
        if self.action == "ALLOW":
            return name is not None, name
        return name is None, name

    def __repr__(self) -> str:
        return f"RbacEngine({self.action}, policies={[n for n, _ in self._policies]})"


class RbacAuthorizer:
    """The RBAC filters of a listener, in order (grpc-go's ChainEngine), compiled.

    Build it once per config (and per route when routes override the filters, see
    :meth:`with_overrides`); :meth:`check` per request. An authorizer without enforcing
    filters allows everything.
    """

    __slots__ = ("_engines", "_filters", "resource_name")

    def __init__(
        self,
        filters: Iterable[tuple[str, RbacConfig]] = (),
        *,
        resource_name: str | None = None,
    ) -> None:
        self._filters = tuple(filters)
        self.resource_name = resource_name
        self._engines = tuple(
            (name, RbacEngine(cfg.rules)) for name, cfg in self._filters if cfg.rules is not None
        )

    @classmethod
    def from_http_filters(
        cls, http_filters: Iterable[HttpFilter], *, resource_name: str | None = None
    ) -> RbacAuthorizer:
        """The RBAC filters among an HCM's parsed http_filters."""
        return cls(
            ((f.name, f.config) for f in http_filters if f.type_name == RBAC_TYPE),
            resource_name=resource_name,
        )

    @classmethod
    def from_config(cls, config: RbacConfig, *, name: str = "rbac") -> RbacAuthorizer:
        """One RBAC filter config (named ``name``)."""
        return cls(((name, config),))

    def with_overrides(self, per_filter: Mapping[str, Any] | None) -> RbacAuthorizer:
        """This chain with a route's typed_per_filter_config applied: an RBACPerRoute for
        a filter's name replaces that filter's config (A39: the most specific level,
        route over virtual host, is passed here)."""
        if not per_filter:
            return self
        filters = tuple(
            (name, o if isinstance(o := per_filter.get(name), RbacConfig) else cfg)
            for name, cfg in self._filters
        )
        if filters == self._filters:
            return self
        return RbacAuthorizer(filters, resource_name=self.resource_name)

    @property
    def enforcing(self) -> bool:
        """Whether any filter enforces rules (False: every request is allowed)."""
        return bool(self._engines)

    def decide(self, req: RbacRequest) -> RbacDecision:
        """Evaluate every engine in order; the first that denies decides."""
        last: RbacDecision = ALLOWED
        for name, engine in self._engines:
            ok, policy = engine.evaluate(req)
            if not ok:
                return RbacDecision(False, policy, name, engine.action)
            last = RbacDecision(True, policy, name, engine.action)
        return last

    def check(self, req: RbacRequest, *, protocol: str = "http") -> RbacDecision:
        """:meth:`decide`, and for a denial: a log line naming the policy and the
        ``pymesh.server.rbac.denied`` counter. ``protocol`` ("http"/"grpc") labels them."""
        decision = self.decide(req)
        if not decision.allowed:
            record_denial(decision, req, protocol)
        return decision

    def authorizer_for(self, request: RequestInfo) -> RbacAuthorizer:
        """Itself: without a route configuration every request gets this chain."""
        return self

    def __repr__(self) -> str:
        return f"RbacAuthorizer({list(self._engines)!r})"


def record_denial(decision: RbacDecision, req: RbacRequest, protocol: str) -> None:
    """Log and count one denial (the log names the policy and the peer identity)."""
    cert = req.peer_certificate
    identity = (cert.spiffe_id or cert.subject) if cert is not None else None
    logger.info(
        "RBAC denied %s %s %s from %s (identity %r): %s policy %r (filter %r)",
        protocol,
        req.request.method,
        req.request.bare_path,
        req.peer_address or "?",
        identity,
        decision.action,
        decision.policy,
        decision.filter_name,
    )
    inst = instruments()
    if inst is not None:
        inst.rbac_denied.add(
            1,
            {
                "pymesh.protocol": protocol,
                "pymesh.rbac.filter": decision.filter_name or "",
                "pymesh.rbac.action": decision.action or "",
                "pymesh.rbac.policy": decision.policy or "",
            },
        )


#: The compiled table's stand-in for ``non_forwarding_action``: pymesh's route table is
#: built for clients (which skip such routes), so a server compiles them as a route to
#: this cluster name, which no real cluster can have.
NON_FORWARDING = "\x00non_forwarding_action"
_STAND_IN = RouteAction(cluster=NON_FORWARDING)


class RbacRoutes:
    """A server's route configuration compiled once, each route with its RBAC chain
    (A39/A41 overrides); the one route selection of every pymesh server (the gRPC xDS
    server, :class:`pymesh.asgi.XdsListener`, and RBAC without a control plane).

    Each route's authorizer is ``base`` (the listener's chain) with the route's
    ``typed_per_filter_config`` applied (the route's entry over its virtual host's),
    built once here. The routes are compiled into a :class:`~pymesh.routing.RouteTable`
    (virtual host by authority, first matching route, as Envoy); ``non_forwarding_action``
    routes, which a client's table skips, are compiled as routes to
    :data:`NON_FORWARDING`.
    """

    __slots__ = ("_authorizers", "base", "route_config", "table")

    def __init__(self, route_config: RouteConfiguration, base: RbacAuthorizer) -> None:
        self.base = base
        self.route_config = route_config
        #: id(compiled Route) -> its authorizer; the routes are kept alive by the table.
        self._authorizers: dict[int, RbacAuthorizer] = {}
        vhosts = []
        for vh in route_config.virtual_hosts:
            vh_auth = base.with_overrides(vh.typed_per_filter_config)
            routes = []
            for r in vh.routes:
                if isinstance(r.action, NonForwardingAction):
                    r = dataclasses.replace(r, action=_STAND_IN)
                routes.append(r)
                self._authorizers[id(r)] = (
                    vh_auth.with_overrides(r.typed_per_filter_config)
                    if r.typed_per_filter_config
                    else vh_auth
                )
            vhosts.append(dataclasses.replace(vh, routes=tuple(routes)))
        self.table = RouteTable.compile(
            dataclasses.replace(route_config, virtual_hosts=tuple(vhosts))
        )

    def select(
        self, request: RequestInfo, random_value: int = 0
    ) -> tuple[RouteDecision, RbacAuthorizer] | None:
        """The request's route (see :meth:`RouteTable.select`) and that route's RBAC
        chain; None when no route matches. ``decision.cluster`` is :data:`NON_FORWARDING`
        for a ``non_forwarding_action`` route."""
        decision = self.table.select(request, random_value)
        if decision is None:
            return None
        return decision, self._authorizers[id(decision.route)]

    def authorizer_for(self, request: RequestInfo) -> RbacAuthorizer | None:
        """The RBAC chain of the request's route, whatever its action; None when no
        route matches."""
        hit = self.select(request)
        return None if hit is None else hit[1]
