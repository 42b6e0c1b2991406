"""RBAC differential: the real Envoy (its RBAC HTTP filter) and pymesh's parser + engine,
fed the same random RBAC configs, allow and deny the same requests.

Each random policy set (seeded) becomes an Envoy listener whose HttpConnectionManager runs
the RBAC filter before a direct 200; the same protobuf is parsed by pymesh and evaluated
for the same requests (method, path, Host, headers, peer and local address of the
plaintext connection). The matchers used are those whose inputs both sides see alike.
"""

from __future__ import annotations

import ipaddress
import random
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _sec_helpers import SPIFFE, Pki, envoy_tls_files
from cryptography import x509
from cryptography.x509.oid import NameOID
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2 as config_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import wrappers_pb2

from pymesh.routing._match import string_test
from pymesh.routing._request import RequestInfo
from pymesh.security._rbac import PeerCertificate, RbacAuthorizer, RbacRequest
from pymesh.server import ControlPlane, Snapshot
from pymesh.testing.envoy import free_port, start_envoy
from pymesh.xds.resources._common import Ctx
from pymesh.xds.resources._parse_rbac import rbac_config
from pymesh.xds.resources.matchers import StringMatcher

SEED = 41
POLICY_SETS = 24
REQUESTS = 20
HEADERS = ("x-a", "x-b")
PATHS = ("/orders/1", "/orders", "/Admin/x", "/pkg.Svc/Get", "/a/b?q=1")
METHODS = ("GET", "POST", "DELETE")
HOSTS = ("orders", "orders:8080", "admin.example")
VALUES = ("v1", "v2", "V1", "10", "x-v1-y")


def _string_matcher(rng: random.Random, pool: tuple[str, ...], m: Any) -> None:
    kind = rng.choice(("exact", "prefix", "suffix", "contains", "safe_regex"))
    value = rng.choice(pool)
    if kind == "safe_regex":
        m.safe_regex.regex = ".*" + value[1:3] + ".*"
    elif kind == "exact":
        m.exact = value
    else:
        setattr(m, kind, value[: max(1, len(value) // 2)])
    m.ignore_case = kind != "safe_regex" and rng.random() < 0.3


def _header(rng: random.Random, h: Any) -> None:
    name = rng.choice((*HEADERS, ":method", ":path", ":authority", "host"))
    h.name = name
    pool = {
        ":method": METHODS,
        ":path": PATHS,
        ":authority": HOSTS,
        "host": HOSTS,
    }.get(name, VALUES)
    kind = rng.choice(("string", "present", "legacy_exact", "range"))
    if kind == "present":
        h.present_match = rng.random() < 0.7
    elif kind == "legacy_exact":
        h.exact_match = rng.choice(pool)
    elif kind == "range" and name in HEADERS:
        h.range_match.start, h.range_match.end = 5, 20
    else:
        _string_matcher(rng, pool, h.string_match)
    h.invert_match = rng.random() < 0.2


def _cidr(rng: random.Random, c: Any) -> None:
    c.address_prefix, length = rng.choice((("127.0.0.1", 32), ("127.0.0.0", 8), ("10.0.0.0", 8)))
    c.prefix_len.value = length


def _shared_kind(
    rng: random.Random, p: Any, kind: str, again: Callable[[Any], None], fields: tuple[str, ...]
) -> bool:
    """Fill ``p`` for a kind permissions and principals share (``fields``: the not, and,
    or fields and the sets' member list); False for another kind. ``again`` recurses."""
    not_field, and_field, or_field, members = fields
    if kind == "any":
        p.any = True
    elif kind == "header":
        _header(rng, p.header)
    elif kind == "url_path":
        _string_matcher(rng, PATHS, p.url_path.path)
    elif kind == "not":
        again(getattr(p, not_field))
    elif kind in ("and", "or"):
        items = getattr(getattr(p, and_field if kind == "and" else or_field), members)
        for _ in range(rng.randint(1, 3)):
            again(items.add())
    else:
        return False
    return True


def _permission(rng: random.Random, p: Any, port: int, depth: int = 0) -> None:
    kinds = ["any", "header", "url_path", "dst_port", "dst_ip", "sni", "metadata"]
    if depth < 2:
        kinds += ["and", "or", "not"]
    kind = rng.choice(kinds)
    fields = ("not_rule", "and_rules", "or_rules", "rules")
    if _shared_kind(rng, p, kind, lambda q: _permission(rng, q, port, depth + 1), fields):
        return
    if kind == "dst_port":
        p.destination_port = rng.choice((port, port + 1))
    elif kind == "dst_ip":
        _cidr(rng, p.destination_ip)
    elif kind == "sni":
        if rng.random() < 0.5:
            p.requested_server_name.exact = ""
        else:
            p.requested_server_name.prefix = "orders"
    else:  # metadata
        p.metadata.filter = "f"
        p.metadata.path.add().key = "k"
        p.metadata.value.string_match.exact = "v"
        p.metadata.invert = rng.random() < 0.5


def _principal(rng: random.Random, p: Any, depth: int = 0) -> None:
    kinds = ["any", "header", "url_path", "remote_ip", "direct_remote_ip", "source_ip", "auth"]
    if depth < 2:
        kinds += ["and", "or", "not"]
    kind = rng.choice(kinds)
    fields = ("not_id", "and_ids", "or_ids", "ids")
    if _shared_kind(rng, p, kind, lambda q: _principal(rng, q, depth + 1), fields):
        return
    if kind == "auth":
        p.authenticated.SetInParent()  # plaintext connections: never authenticated
    else:  # remote_ip, direct_remote_ip, source_ip
        _cidr(rng, getattr(p, kind))


def random_rbac(rng: random.Random, port: int) -> Any:
    r = rbac_pb2.RBAC()
    r.rules.action = rng.choice((config_pb2.RBAC.ALLOW, config_pb2.RBAC.DENY))
    for i in range(rng.randint(1, 3)):
        pol = r.rules.policies[f"p{i}"]
        for _ in range(rng.randint(1, 2)):
            _permission(rng, pol.permissions.add(), port)
        for _ in range(rng.randint(1, 2)):
            _principal(rng, pol.principals.add())
    return r


def envoy_listener(name: str, port: int, rbac: Any) -> Any:
    rc = route_pb2.RouteConfiguration(name=name)
    vh = rc.virtual_hosts.add(name="all", domains=["*"])
    route = vh.routes.add(match=route_components_pb2.RouteMatch(prefix="/"))
    route.direct_response.status = 200
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=name, route_config=rc)
    hcm.http_filters.add(name="envoy.filters.http.rbac").typed_config.Pack(rbac)
    hcm.http_filters.add(name="envoy.filters.http.router").typed_config.Pack(router_pb2.Router())
    lis = listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        ),
    )
    lis.filter_chains.add().filters.add(
        name="envoy.filters.network.http_connection_manager"
    ).typed_config.Pack(hcm)
    return lis


def random_request(rng: random.Random) -> tuple[str, str, str, dict[str, str]]:
    headers = {h: rng.choice(VALUES) for h in HEADERS if rng.random() < 0.6}
    return rng.choice(METHODS), rng.choice(PATHS), rng.choice(HOSTS), headers


def test_envoy_and_pymesh_rbac_agree() -> None:
    rng = random.Random(SEED)
    ports = [free_port() for _ in range(POLICY_SETS)]
    configs = [random_rbac(rng, p) for p in ports]
    listeners = [
        envoy_listener(f"rbac-{i}", p, c)
        for i, (p, c) in enumerate(zip(ports, configs, strict=True))
    ]
    compiled = [
        RbacAuthorizer.from_config(rbac_config(Ctx("Listener", f"rbac-{i}"), c, ""))
        for i, c in enumerate(configs)
    ]
    requests = [random_request(rng) for _ in range(REQUESTS)]
    disagreements: list[str] = []
    counts = {"allowed": 0, "denied": 0}
    with ControlPlane(port=0) as cp:
        cp.set_snapshot(Snapshot.of("v1", listeners=listeners), "envoy")
        with start_envoy(cp.port, "envoy") as envoy:
            envoy.wait_listening(ports)
            for i, (port, auth) in enumerate(zip(ports, compiled, strict=True)):
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as c:
                    for method, path, host, headers in requests:
                        r = c.request(method, path, headers={"host": host, **headers})
                        assert r.status_code in (200, 403), (r.status_code, r.text)
                        envoy_allows = r.status_code == 200
                        view = RbacRequest(
                            RequestInfo(method, host, path, dict(headers)),
                            peer_address="127.0.0.1",
                            local_address="127.0.0.1",
                            local_port=port,
                        )
                        ours = auth.decide(view).allowed
                        counts["allowed" if ours else "denied"] += 1
                        if ours != envoy_allows:
                            disagreements.append(
                                f"policy set {i} {configs[i]} request {method} {path} "
                                f"host={host} {headers}: envoy {r.status_code}, pymesh "
                                f"{'allow' if ours else 'deny'}"
                            )
    assert not disagreements, "\n".join(disagreements[:5])
    # The random configs exercise both outcomes.
    assert counts["allowed"] > 10 and counts["denied"] > 10, counts


# ---- authenticated.principal_name over mTLS -------------------------------------------


def _tls_listener(name: str, port: int, rbac: Any, files: dict[str, str]) -> Any:
    lis = envoy_listener(name, port, rbac)
    dtc = tls_pb2.DownstreamTlsContext(
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
        common_tls_context=envoy_tls_files(files),
    )
    ts = lis.filter_chains[0].transport_socket
    ts.name = "envoy.transport_sockets.tls"
    ts.typed_config.Pack(dtc)
    return lis


def _principal_name(kind: str, value: str) -> Any:
    r = rbac_pb2.RBAC()
    r.rules.action = config_pb2.RBAC.ALLOW
    pol = r.rules.policies["p"]
    pol.permissions.add(any=True)
    setattr(pol.principals.add().authenticated.principal_name, kind, value)
    return r


def test_authenticated_principal_name_agrees_with_envoy(pki: Pki, tmp_path: Path) -> None:
    """principal_name against URI SANs, DNS SANs and the subject (RFC 2253): pymesh follows
    gRFC A41's order; Envoy 1.40 matches any of the three (pinned here)."""
    uri = x509.UniformResourceIdentifier(SPIFFE + "frontend")
    dns = x509.DNSName("front.shop")
    cn_o = [(NameOID.COMMON_NAME, "frontend"), (NameOID.ORGANIZATION_NAME, "Shop")]
    certs = {
        "uri": pki.issue_custom([uri], cn_o),
        "uri+dns": pki.issue_custom([uri, dns], cn_o),
        "dns": pki.issue_custom([dns], cn_o),
        "subject": pki.issue_custom([], cn_o),
        "ip-only": pki.issue_custom([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], cn_o),
    }
    matchers = [
        ("exact", SPIFFE + "frontend"),
        ("prefix", "spiffe://"),
        ("exact", "front.shop"),
        ("suffix", ".shop"),
        ("exact", "CN=frontend,O=Shop"),
        ("exact", "O=Shop,CN=frontend"),
        ("contains", "CN=frontend"),
        ("exact", ""),
    ]
    server = pki.write(tmp_path / "envoy", pki.issue("envoy"))
    ports = [free_port() for _ in matchers]
    configs = [_principal_name(k, v) for k, v in matchers]
    listeners = [
        _tls_listener(f"tls-{i}", p, c, server)
        for i, (p, c) in enumerate(zip(ports, configs, strict=True))
    ]
    seen: dict[tuple[str, str, str], tuple[bool, bool]] = {}
    peer_views: dict[str, PeerCertificate] = {}
    with ControlPlane(port=0) as cp:
        cp.set_snapshot(Snapshot.of("v1", listeners=listeners), "envoy")
        with start_envoy(cp.port, "envoy") as envoy:
            envoy.wait_listening(ports)
            for cert_name, leaf in certs.items():
                chain = tmp_path / f"{cert_name}.pem"
                chain.write_bytes(leaf.key_pem + leaf.cert_pem)
                ctx = ssl.create_default_context(cadata=pki.ca_pem.decode())
                ctx.check_hostname = False
                ctx.load_cert_chain(str(chain))
                peer = PeerCertificate.from_der(ssl.PEM_cert_to_DER_cert(leaf.cert_pem.decode()))
                peer_views[cert_name] = peer
                with httpx.Client(verify=ctx, timeout=20) as c:
                    for (kind, value), port, cfg in zip(matchers, ports, configs, strict=True):
                        r = c.get(f"https://127.0.0.1:{port}/")
                        assert r.status_code in (200, 403), (r.status_code, r.text)
                        auth = RbacAuthorizer.from_config(rbac_config(Ctx("L", "l"), cfg, ""))
                        view = RbacRequest(
                            RequestInfo("GET", "x", "/", {}),
                            peer_address="127.0.0.1",
                            local_address="127.0.0.1",
                            local_port=port,
                            tls=True,
                            peer_certificate=peer,
                        )
                        seen[(cert_name, kind, value)] = (
                            r.status_code == 200,
                            auth.decide(view).allowed,
                        )
    # Measured on Envoy 1.40: principal_name matches when a URI SAN, a DNS SAN *or* the
    # subject matches. gRFC A41 (and grpc-go, and pymesh) try DNS SANs only when there is
    # no URI SAN, and the subject only when there is neither. Both models, checked:
    differ: dict[tuple[str, str, str], tuple[bool, bool]] = {}
    for (cert_name, kind, value), (envoy_allows, ours) in seen.items():
        peer = peer_views[cert_name]
        test = string_test(StringMatcher.make(kind, value))  # type: ignore[arg-type]
        anyof = any(map(test, peer.uri_sans)) or any(map(test, peer.dns_sans)) or test(peer.subject)
        assert envoy_allows == anyof, (cert_name, kind, value)
        if envoy_allows != ours:
            differ[(cert_name, kind, value)] = (envoy_allows, ours)
            # Only where A41's order excludes what Envoy also reads.
            assert peer.uri_sans or peer.dns_sans, (cert_name, kind, value)
    # With a single kind of identity (URI only matchers on URI certs, a subject-only cert,
    # "" on any cert) Envoy and A41 agree.
    assert all(k[0] not in ("subject", "ip-only") for k in differ), differ
    assert seen[("uri+dns", "exact", "front.shop")] == (True, False)  # A41: URI SANs win
    assert seen[("uri", "exact", SPIFFE + "frontend")] == (True, True)
    assert seen[("dns", "exact", "front.shop")] == (True, True)
    assert seen[("subject", "exact", "O=Shop,CN=frontend")] == (True, True)  # RFC 2253 order
    assert seen[("subject", "exact", "CN=frontend,O=Shop")] == (False, False)
    assert seen[("uri", "exact", "")] == (False, False)
