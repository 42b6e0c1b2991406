"""DNS resolution for STRICT_DNS / LOGICAL_DNS clusters (dnspython's async resolver).

A cluster's ``load_assignment`` names hosts; this turns it into a ClusterLoadAssignment
of addresses. IP literals and ``localhost`` resolve without a query. The lookup family
follows Envoy: AUTO prefers IPv6 and falls back to IPv4, V4_PREFERRED the reverse,
ALL returns both. STRICT_DNS keeps every address; LOGICAL_DNS only the first.
"""

from __future__ import annotations

import dataclasses
import ipaddress

import dns.asyncresolver
import dns.exception
import dns.resolver

from pymesh.xds.resources.cluster import Cluster
from pymesh.xds.resources.endpoint import ClusterLoadAssignment, Endpoint, LocalityEndpoints

_LOCALHOST = {"V6_ONLY": ("::1",), "ALL": ("127.0.0.1", "::1")}


class DnsResolutionError(Exception):
    """No address for a host (the reason is the message)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Resolved:
    assignment: ClusterLoadAssignment
    ttl: float | None  # smallest TTL seen (None when no query was made)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _query(
    resolver: dns.asyncresolver.Resolver, host: str, rdtype: str
) -> tuple[list[str], float | None]:
    try:
        answer = await resolver.resolve(host, rdtype, search=True)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return [], None
    ttl = float(answer.rrset.ttl) if answer.rrset is not None else None
    return [r.to_text() for r in answer], ttl


async def resolve_host(
    resolver: dns.asyncresolver.Resolver, host: str, family: str
) -> tuple[list[str], float | None]:
    """Addresses of ``host`` for Envoy's dns_lookup_family ``family``, and the TTL."""
    if _is_ip(host):
        return [host], None
    if host.lower() in ("localhost", "localhost."):
        return list(_LOCALHOST.get(family, ("127.0.0.1",))), None
    order = {
        "V4_ONLY": ("A",),
        "V6_ONLY": ("AAAA",),
        "AUTO": ("AAAA", "A"),
        "V4_PREFERRED": ("A", "AAAA"),
        "ALL": ("A", "AAAA"),
    }[family]
    addrs: list[str] = []
    ttls: list[float] = []
    try:
        for rdtype in order:
            found, ttl = await _query(resolver, host, rdtype)
            addrs.extend(found)
            if ttl is not None:
                ttls.append(ttl)
            if found and family != "ALL":
                break
    except dns.exception.DNSException as e:
        raise DnsResolutionError(f"DNS lookup of {host!r} failed: {e}") from e
    if not addrs:
        raise DnsResolutionError(f"DNS lookup of {host!r} ({family}) returned no address")
    return addrs, min(ttls) if ttls else None


async def resolve_cluster(resolver: dns.asyncresolver.Resolver, cluster: Cluster) -> Resolved:
    """The cluster's load assignment with every hostname replaced by its addresses.

    LOGICAL_DNS uses only the first endpoint and its first address (as Envoy).
    """
    cla = cluster.load_assignment or ClusterLoadAssignment(cluster.name)
    logical = cluster.kind == "LOGICAL_DNS"
    ttls: list[float] = []
    localities: list[LocalityEndpoints] = []
    for loc in cla.localities:
        endpoints: list[Endpoint] = []
        for ep in loc.endpoints[:1] if logical else loc.endpoints:
            addrs, ttl = await resolve_host(resolver, ep.host, cluster.dns_lookup_family)
            if ttl is not None:
                ttls.append(ttl)
            hostname = ep.hostname or ("" if _is_ip(ep.host) else ep.host)
            endpoints.extend(
                dataclasses.replace(ep, host=a, hostname=hostname)
                for a in (addrs[:1] if logical else addrs)
            )
        localities.append(dataclasses.replace(loc, endpoints=tuple(endpoints)))
        if logical and endpoints:
            break
    return Resolved(
        dataclasses.replace(cla, localities=tuple(localities)), min(ttls) if ttls else None
    )
