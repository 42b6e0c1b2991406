"""ClusterLoadAssignment → frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
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
        return tuple(e for loc in self.localities for e in loc.endpoints)


def parse_cluster_load_assignment(msg: Any) -> ClusterLoadAssignment:
    """Parse an EDS resource (or a cluster's inline ``load_assignment``).

    ``msg`` is a ``endpoint_pb2.ClusterLoadAssignment`` message. Raises
    :class:`pymesh.errors.ResourceInvalid` (field path and a reason) when the resource
    must be NACKed; set-but-unsupported fields are logged as warnings.
    """
    # Imported here: the parser modules import this module's dataclasses.
    from pymesh.xds.resources._parse_endpoint import parse

    return parse(msg)
