"""ClusterLoadAssignment → frozen dataclasses."""

from __future__ import annotations

from collections.abc import Callable
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


def _fast_endpoint() -> Any:
    """``Endpoint(host, port, health, weight, hostname)`` at half the cost: the parser
    builds one per endpoint of every EDS update (10 000 in one update), and a frozen
    dataclass's ``__init__`` pays a generic ``object.__setattr__`` per field. This sets
    the slots directly; the field list is checked here, so a new field cannot be missed."""
    names = ("host", "port", "health", "weight", "hostname", "address")
    assert Endpoint.__slots__ == names, "update _fast_endpoint with Endpoint's fields"
    new = object.__new__
    host, port, health, weight, hostname, address = (getattr(Endpoint, n).__set__ for n in names)

    def make(h: str, p: int, he: HealthStatus, w: int, hn: str) -> Endpoint:
        e = new(Endpoint)
        host(e, h)
        port(e, p)
        health(e, he)
        weight(e, w)
        hostname(e, hn)
        address(e, f"[{h}]:{p}" if ":" in h else f"{h}:{p}")
        return e

    return make


#: Builds an :class:`Endpoint` from all five fields (see :func:`_fast_endpoint`).
make_endpoint: Callable[[str, int, HealthStatus, int, str], Endpoint] = _fast_endpoint()


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
