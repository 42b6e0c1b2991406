"""Server-side Listener (gRFC A36: address, filter chains, DownstreamTlsContext) → frozen
dataclasses.

A Listener without ``api_listener`` describes a listening socket: what an xDS-driven
server (:func:`pymesh.grpc.server`) needs to accept connections. Its filter chains are
matched per connection (:meth:`ServerListener.select`); each holds the transport security
and the HttpConnectionManager (routes and http filters such as RBAC) for the calls on it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from pymesh.xds.resources.listener import HttpFilter
from pymesh.xds.resources.route import RouteConfiguration
from pymesh.xds.resources.tls import CertificateProviderInstance, SanMatcher

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SourceType = Literal["ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL"]


@dataclass(frozen=True, slots=True)
class FilterChainMatch:
    """envoy.config.listener.v3.FilterChainMatch, CIDRs normalised (gRFC A36)."""

    destination_port: int | None = None
    prefix_ranges: tuple[IpNetwork, ...] = ()
    source_type: SourceType = "ANY"
    source_prefix_ranges: tuple[IpNetwork, ...] = ()
    source_ports: tuple[int, ...] = ()
    server_names: tuple[str, ...] = ()
    transport_protocol: str = ""
    application_protocols: tuple[str, ...] = ()

    @property
    def never_matches(self) -> bool:
        """A36: these fields need features a gRPC server lacks (original destination,
        listener filters), so a chain that sets them never matches a connection."""
        return (
            self.destination_port is not None
            or bool(self.server_names)
            or self.transport_protocol not in ("", "raw_buffer")
            or bool(self.application_protocols)
        )


@dataclass(frozen=True, slots=True)
class DownstreamTls:
    """A DownstreamTlsContext: the server's certificate and how clients are verified."""

    identity: CertificateProviderInstance
    validation: CertificateProviderInstance | None = None  # roots for client certificates
    require_client_certificate: bool = False
    #: Envoy's server-side check of the client certificate's SANs (any one must match).
    san_matchers: tuple[SanMatcher, ...] = ()
    alpn_protocols: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpConnectionManager:
    """The chain's HttpConnectionManager: exactly one of ``rds_name`` and ``route_config``."""

    rds_name: str | None = None
    route_config: RouteConfiguration | None = None
    http_filters: tuple[HttpFilter, ...] = ()


@dataclass(frozen=True, slots=True)
class FilterChain:
    """One filter chain: its match, transport security (None: plaintext) and HCM."""

    name: str
    match: FilterChainMatch
    tls: DownstreamTls | None
    hcm: HttpConnectionManager


@dataclass(frozen=True, slots=True)
class Connection:
    """What filter-chain matching knows of a connection."""

    destination_ip: str
    source_ip: str
    source_port: int


def _longest(nets: tuple[IpNetwork, ...], ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """-1 when ``nets`` is empty (matches anything, least specific); -2 when none holds ip."""
    if not nets:
        return -1
    best = -2
    for n in nets:
        if n.version == ip.version and ip in n and n.prefixlen > best:
            best = n.prefixlen
    return best


def _source_type_matches(
    st: SourceType, src: ipaddress.IPv4Address | ipaddress.IPv6Address, dst: str
) -> bool:
    if st == "ANY":
        return True
    local = src.is_loopback or str(src) == dst
    return local if st == "SAME_IP_OR_LOOPBACK" else not local


@dataclass(frozen=True, slots=True)
class ServerListener:
    """A server-side Listener: the address it is for and its filter chains.

    ``address`` and ``port`` are the Listener's socket address; the server serves only
    when they equal its listening address (A36).
    """

    name: str
    address: str
    port: int
    filter_chains: tuple[FilterChain, ...] = ()
    default_filter_chain: FilterChain | None = None
    unsupported: tuple[str, ...] = ()

    def chains(self) -> tuple[FilterChain, ...]:
        """Every chain, the default one last."""
        extra = (self.default_filter_chain,) if self.default_filter_chain else ()
        return self.filter_chains + extra

    def select(self, conn: Connection) -> FilterChain | None:
        """The most specific chain for ``conn`` (Envoy's order: destination IP, source
        type, source IP, source port), else the default chain, else None (refuse)."""
        try:
            dst = ipaddress.ip_address(conn.destination_ip)
            src = ipaddress.ip_address(conn.source_ip)
        except ValueError:
            return self.default_filter_chain
        cands = [c for c in self.filter_chains if not c.match.never_matches]
        # Destination prefix: the longest containing prefix wins; unset is least specific.
        scored = [(_longest(c.match.prefix_ranges, dst), c) for c in cands]
        best = max((s for s, _ in scored), default=-2)
        cands = [c for s, c in scored if s == best and s != -2]
        # Source type: a specific type that matches beats ANY.
        typed = [
            c
            for c in cands
            if c.match.source_type != "ANY"
            and _source_type_matches(c.match.source_type, src, conn.destination_ip)
        ]
        cands = typed or [c for c in cands if c.match.source_type == "ANY"]
        scored = [(_longest(c.match.source_prefix_ranges, src), c) for c in cands]
        best = max((s for s, _ in scored), default=-2)
        cands = [c for s, c in scored if s == best and s != -2]
        exact = [c for c in cands if conn.source_port in c.match.source_ports]
        cands = exact or [c for c in cands if not c.match.source_ports]
        if cands:
            return cands[0]  # unique: the parser NACKs overlapping matchers
        return self.default_filter_chain
