"""ClusterLoadAssignment → frozen dataclasses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Literal

HealthStatus = Literal["UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED"]

#: Statuses a client may send traffic to (gRPC A27 / Envoy).
USABLE_HEALTH: frozenset[str] = frozenset({"UNKNOWN", "HEALTHY"})

#: Envoy's default overprovisioning factor (percent).
DEFAULT_OVERPROVISIONING_FACTOR = 140


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.region, self.zone, self.sub_zone) if p) or "-"


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # IP address or DNS name
    port: int
    health: HealthStatus = "UNKNOWN"
    weight: int = 1  # load_balancing_weight, default 1
    hostname: str = ""
    #: ``host:port`` (IPv6 hosts in brackets): the endpoint's stable key. Computed once
    #: (the request path reads it several times per request); not compared or hashed.
    address: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        host, port = self.host, self.port
        object.__setattr__(self, "address", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    @property
    def usable(self) -> bool:
        return self.health in USABLE_HEALTH


class _Unsealed:
    """:class:`Endpoint`'s slots without the frozen guard (see :func:`make_endpoints`)."""

    __slots__ = Endpoint.__slots__
    host: str
    port: int
    health: HealthStatus
    weight: int
    hostname: str
    address: str


def make_endpoints(
    hosts: Iterable[str],
    ports: Iterable[int],
    healths: Iterable[HealthStatus],
    weights: Iterable[int],
    hostnames: Iterable[str],
) -> tuple[Endpoint, ...]:
    """``Endpoint(host, port, health, weight, hostname)`` for each position of the five
    columns, at a third of the dataclass constructor's cost.

    The parser builds one per endpoint of every EDS update (10 000 in one update), and a
    frozen dataclass's ``__init__`` pays a generic ``object.__setattr__`` per field. Here
    each object is filled as an :class:`_Unsealed` by plain attribute stores (the
    interpreter's own fast slot stores) and then becomes an :class:`Endpoint` by
    ``__class__`` assignment, which Python allows between classes of one slot layout.
    The result is an ordinary, frozen ``Endpoint``: equal to one built by its
    constructor, and immutable from then on."""
    out = []
    new, unsealed, sealed = object.__new__, _Unsealed, Endpoint
    for h, p, he, w, hn in zip(hosts, ports, healths, weights, hostnames, strict=False):
        e = new(unsealed)
        e.host = h
        e.port = p
        e.health = he
        e.weight = w
        e.hostname = hn
        e.address = f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
        e.__class__ = sealed  # type: ignore[assignment]
        out.append(e)
    return tuple(out)  # type: ignore[arg-type]


def make_endpoint(
    host: str, port: int, health: HealthStatus, weight: int, hostname: str
) -> Endpoint:
    """One :class:`Endpoint` from all five fields, as :func:`make_endpoints` builds them."""
    return make_endpoints((host,), (port,), (health,), (weight,), (hostname,))[0]


# A new Endpoint field must be set by make_endpoints too (reading an unset slot would
# raise AttributeError far from here).
if Endpoint.__slots__ != ("host", "port", "health", "weight", "hostname", "address"):
    raise TypeError("update _Unsealed and make_endpoints with Endpoint's fields")


@dataclass(frozen=True, slots=True)
class LocalityEndpoints:
    locality: Locality
    endpoints: tuple[Endpoint, ...]
    weight: int | None = None  # load_balancing_weight; None when unset
    priority: int = 0


@dataclass(frozen=True, slots=True)
class DropOverload:
    category: str
    parts_per_million: int


@dataclass(frozen=True, slots=True)
class ClusterLoadAssignment:
    cluster_name: str
    localities: tuple[LocalityEndpoints, ...] = ()
    drop_overloads: tuple[DropOverload, ...] = ()
    overprovisioning_factor: int = DEFAULT_OVERPROVISIONING_FACTOR

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        if len(self.localities) == 1:
            return self.localities[0].endpoints
        return tuple(chain.from_iterable(loc.endpoints for loc in self.localities))


def parse_cluster_load_assignment(msg: Any) -> ClusterLoadAssignment:
    """Parse an EDS resource (or a cluster's inline ``load_assignment``).

    ``msg`` is a ``endpoint_pb2.ClusterLoadAssignment`` message. Raises
    :class:`pymesh.errors.ResourceInvalid` (field path and a reason) when the resource
    must be NACKed; set-but-unsupported fields are logged as warnings.
    """
    # Imported here: the parser modules import this module's dataclasses.
    from pymesh.xds.resources._parse_endpoint import parse

    return parse(msg)
