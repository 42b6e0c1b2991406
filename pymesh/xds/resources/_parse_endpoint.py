"""envoy.config.endpoint.v3.ClusterLoadAssignment → ClusterLoadAssignment."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from operator import attrgetter
from typing import Any

from envoy.config.endpoint.v3 import endpoint_components_pb2
from google.protobuf import (  # type: ignore[import-untyped, unused-ignore]
    descriptor_pb2,
    message_factory,
)

from pymesh.xds.resources._common import (
    UINT32_MAX,
    Ctx,
    fractional_percent,
    is_plain,
    join,
    plain_fields,
    wrapped,
)
from pymesh.xds.resources.endpoint import (
    DEFAULT_OVERPROVISIONING_FACTOR,
    ClusterLoadAssignment,
    DropOverload,
    Endpoint,
    HealthStatus,
    Locality,
    LocalityEndpoints,
    make_endpoint,
    make_endpoints,
)

_HEALTH: dict[int, HealthStatus] = {
    0: "UNKNOWN",
    1: "HEALTHY",
    2: "UNHEALTHY",
    3: "DRAINING",
    4: "TIMEOUT",
    5: "DEGRADED",
}

_PPM = 1_000_000

_HEALTH_OF = attrgetter("health")
_WEIGHT_OF = attrgetter("weight")


def _is_ip(address: str) -> bool:
    # socket.inet_pton (C) instead of ipaddress: a 10 000-endpoint EDS update pays this
    # per endpoint. IPv6 scope ids (fe80::1%eth0) are not IP literals Envoy accepts either.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, address)
        except OSError:
            continue
        return True
    return False


def _at(locality_path: str, index: int, field: str = "") -> str:
    path = join(locality_path, f"lb_endpoints[{index}]")
    return join(path, field) if field else path


_SOCKET = "endpoint.address.socket_address"


@dataclass(frozen=True, slots=True)
class _Plain:
    """What the field table says of an endpoint list, worked out once (see
    :func:`_check_fields`)."""

    #: The plain fields of LbEndpoint, Endpoint, Address and SocketAddress.
    types: tuple[dict[str, frozenset[int] | None], ...]
    #: The only enums the table restricts are health_status and protocol, which are
    #: checked per endpoint: a merged list that is plain proves every endpoint plain.
    mergeable: bool
    #: The health statuses the table honours; None: all of them.
    healths: frozenset[str] | None


#: The one :class:`_Plain`, once computed (tests empty it to make it be computed again).
_PLAIN_TYPES: list[_Plain] = []


def _plain_types(lb_endpoint: Any) -> _Plain:
    d = lb_endpoint.DESCRIPTOR
    ep = d.fields_by_name["endpoint"].message_type
    address = ep.fields_by_name["address"].message_type
    socket_address = address.fields_by_name["socket_address"].message_type
    types = tuple(plain_fields(t) for t in (d, ep, address, socket_address))
    restricted = {(i, f) for i, p in enumerate(types) for f, v in p.items() if v is not None}
    healths = types[0].get("health_status")
    plain = _Plain(
        types,
        restricted <= {(0, "health_status"), (3, "protocol")},
        None if healths is None else frozenset(_HEALTH[n] for n in healths if n in _HEALTH),
    )
    _PLAIN_TYPES[:] = [plain]
    return plain


def _endpoint(ctx: Ctx, msg: Any, locality_path: str, index: int, ip_only: bool) -> Endpoint:
    """One LbEndpoint. This runs once per endpoint of every EDS update, so field paths
    are built only for an error; the field table is asked once for the whole list
    (:func:`_check_fields`)."""
    if msg.WhichOneof("host_identifier") != "endpoint":
        ctx.fail(
            _at(locality_path, index, "endpoint"),
            "endpoint is required (named endpoints are not supported)",
        )
    ep = msg.endpoint
    which = ep.address.WhichOneof("address")
    if which != "socket_address":
        ctx.fail(
            _at(locality_path, index, "endpoint.address"),
            f"only socket_address is supported, got {which or 'nothing'}",
        )
    sa = ep.address.socket_address
    address = sa.address
    if not address or (ip_only and not _is_ip(address)):
        # Envoy: only DNS clusters resolve names; EDS and STATIC need IP literals.
        ctx.fail(
            _at(locality_path, index, f"{_SOCKET}.address"),
            f"{address!r} is not an IP address; host names need a STRICT_DNS or LOGICAL_DNS cluster"
            if address
            else "address must not be empty",
        )
    if sa.WhichOneof("port_specifier") != "port_value":
        ctx.fail(
            _at(locality_path, index, f"{_SOCKET}.port_value"),
            "port_value is required (named_port is not supported)",
        )
    port = sa.port_value
    if not 0 < port <= 65535:
        ctx.fail(
            _at(locality_path, index, f"{_SOCKET}.port_value"),
            f"port must be in 1..65535, got {port}",
        )
    if sa.protocol != 0:
        ctx.fail(
            _at(locality_path, index, f"{_SOCKET}.protocol"), "only TCP endpoints are supported"
        )
    health = _HEALTH.get(msg.health_status)
    if health is None:
        ctx.fail(
            _at(locality_path, index, "health_status"),
            f"unknown health_status {msg.health_status}",
        )
    weight = msg.load_balancing_weight.value if msg.HasField("load_balancing_weight") else 1
    if weight < 1:
        ctx.fail(
            _at(locality_path, index, "load_balancing_weight"),
            "endpoint weight must be greater than 0",
        )
    return make_endpoint(address, port, health, weight, ep.hostname)


def _merged(data: bytes) -> Any:
    """Every endpoint of a LocalityLbEndpoints (``data``: its bytes) merged into one
    LbEndpoint. Merging keeps every field any endpoint sets, so it answers "does any
    endpoint set X?" for the whole list at once; a non-zero enum in it means some
    endpoint set one (proto3 merges skip zero).

    Done by protobuf itself, in one parse: the locality's bytes read as a message whose
    field 2 (``lb_endpoints``) is a single LbEndpoint, which the wire format defines as
    the merge of every occurrence. A third of the cost of merging them one by one."""
    return _internal_type("MergedLbEndpoints").FromString(data).merged


def _columns(data: bytes) -> Any:
    """The fields :func:`_endpoints` keeps of every endpoint of a LocalityLbEndpoints
    (``data``: its bytes as protobuf serializes the parsed message), as columns.

    The same trick as :func:`_merged`, one level further: read as the types below, the
    endpoints merge into one message whose kept fields are *repeated*, so merging
    appends each endpoint's value in list order: ``.endpoint.address.socket_address
    .address`` is every endpoint's address. A column lines up with the endpoints when it
    holds one value per endpoint: protobuf's serializer writes each set field of each
    message once (whatever the control plane's bytes repeated, their parse kept one) and
    leaves out fields at their zero value (but for a oneof's member, such as
    ``port_value``), so a column as long as the list has exactly one value from each
    endpoint."""
    return _internal_type("LbEndpointColumns").FromString(data).merged


_F = descriptor_pb2.FieldDescriptorProto

#: pymesh's own message types (package ``pymesh.internal``): a name, its fields as
#: (name, number, type, label, message type name or ""). Read with Envoy's field numbers.
_INTERNAL_TYPES: dict[str, tuple[tuple[str, int, int, int, str], ...]] = {
    "MergedLbEndpoints": (
        ("merged", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".envoy.config.endpoint.v3.LbEndpoint"),
    ),
    "LbEndpointColumns": (("merged", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "LbEndpointColumn"),),
    "LbEndpointColumn": (
        ("endpoint", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "EndpointColumn"),
        ("health_status", 2, _F.TYPE_INT32, _F.LABEL_REPEATED, ""),
        ("load_balancing_weight", 4, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "WeightColumn"),
    ),
    "EndpointColumn": (
        ("address", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "AddressColumn"),
        ("hostname", 3, _F.TYPE_STRING, _F.LABEL_REPEATED, ""),
    ),
    "AddressColumn": (
        ("socket_address", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "SocketAddressColumn"),
    ),
    "SocketAddressColumn": (
        ("address", 2, _F.TYPE_STRING, _F.LABEL_REPEATED, ""),
        ("port_value", 3, _F.TYPE_UINT32, _F.LABEL_REPEATED, ""),
    ),
    "WeightColumn": (("value", 1, _F.TYPE_UINT32, _F.LABEL_REPEATED, ""),),
}

#: The classes of :data:`_INTERNAL_TYPES`, built once (in protobuf's default descriptor
#: pool, beside Envoy's own).
_INTERNAL: dict[str, Any] = {}


def _internal_type(name: str) -> Any:
    cls = _INTERNAL.get(name)
    if cls is not None:
        return cls
    lb_endpoint = endpoint_components_pb2.LbEndpoint.DESCRIPTOR
    pool = lb_endpoint.file.pool
    try:
        pool.FindMessageTypeByName(f"pymesh.internal.{name}")
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name="pymesh/internal/lb_endpoints.proto",
            package="pymesh.internal",
            syntax="proto3",
            dependency=[lb_endpoint.file.name],
        )
        for type_name, fields in _INTERNAL_TYPES.items():
            msg = proto.message_type.add(name=type_name)
            for field_name, number, kind, label, message_type in fields:
                f = msg.field.add(name=field_name, number=number, type=kind, label=label)
                if message_type:
                    f.type_name = (
                        message_type
                        if message_type.startswith(".")
                        else f".pymesh.internal.{message_type}"
                    )
        pool.Add(proto)
    for type_name in _INTERNAL_TYPES:
        descriptor = pool.FindMessageTypeByName(f"pymesh.internal.{type_name}")
        _INTERNAL[type_name] = message_factory.GetMessageClass(descriptor)
    return _INTERNAL[name]


def _check_fields(
    ctx: Ctx, merged: Any, lb_endpoints: Any, parsed: tuple[Endpoint, ...], locality_path: str
) -> None:
    """The field table's verdict on every set field of every endpoint.

    Asking it per endpoint costs more than parsing the endpoint. So first one question for
    the whole list: in ``merged`` (:func:`_merged`), are only plain honoured fields set?
    Then no endpoint sets anything else, and :meth:`Ctx.check` would say nothing. Enum
    values are not proven by the merge (it keeps the last one set), so the two enums the
    table restricts here are checked per endpoint: health_status on ``parsed``, protocol
    by :func:`_endpoints` (only TCP). Otherwise each endpoint is checked in full.
    """
    plain = _PLAIN_TYPES[0] if _PLAIN_TYPES else _plain_types(merged)
    healths, types = plain.healths, plain.types
    ep = merged.endpoint
    if (
        plain.mergeable
        and (healths is None or healths.issuperset(map(_HEALTH_OF, parsed)))
        and is_plain(merged, types[0])
        and is_plain(ep, types[1])
        and is_plain(ep.address, types[2])
        and is_plain(ep.address.socket_address, types[3])
    ):
        return
    for i, e in enumerate(lb_endpoints):
        path = _at(locality_path, i)
        ctx.check(e, path)
        ctx.check(e.endpoint, join(path, "endpoint"))
        ctx.check(e.endpoint.address, join(path, "endpoint.address"))
        ctx.check(e.endpoint.address.socket_address, join(path, _SOCKET))


#: Endpoints per chunk when :func:`_endpoints` reads a list chunk by chunk: a chunk that
#: does not pass as a whole is read one by one, so an odd endpoint slows only its chunk.
_CHUNK = 256


def _endpoints(
    ctx: Ctx, lb_endpoints: Any, merged: Any, data: bytes, path: str, ip_only: bool
) -> tuple[Endpoint, ...]:
    """Every LbEndpoint of a locality (``data``: the locality's bytes), in order.

    First as whole columns (:func:`_by_columns`), the way every endpoint of a list
    that is valid, IP-addressed and alike in which fields it sets takes. Otherwise
    column by column, a chunk at a time: each field some endpoint sets (``merged``
    shows which: weight, health, hostname) is read into a list by one comprehension, the
    lists are checked as wholes (no empty address, ports in range, known health, weights
    above 0, IPv4 literals), and the endpoints are built by one :func:`make_endpoints`.
    That is half the cost of one loop doing all of it per endpoint, which matters at
    10 000 endpoints an update. Each way an endpoint can be invalid shows in those
    columns: a named endpoint, a pipe address or a named port reads as an empty address
    or port 0. A chunk that does not pass as a whole (an IPv6 address, or an invalid
    endpoint) goes endpoint by endpoint through :func:`_endpoint`, which raises the
    error naming the endpoint's field; so does every endpoint of a list where some
    endpoint sets a non-TCP protocol (one merged check instead of one per endpoint).
    """
    if merged.endpoint.address.socket_address.protocol != 0:
        return tuple(_endpoint(ctx, e, path, i, ip_only) for i, e in enumerate(lb_endpoints))
    any_weight = merged.HasField("load_balancing_weight")
    any_health = merged.health_status != 0
    any_hostname = bool(merged.endpoint.hostname)
    whole = _by_columns(data, len(lb_endpoints), any_weight, ip_only)
    if whole is not None:
        return whole
    health_of, v4 = _HEALTH.get, partial(socket.inet_pton, socket.AF_INET)
    parsed: list[Endpoint] = []
    for start in range(0, len(lb_endpoints), _CHUNK):
        chunk = lb_endpoints[start : start + _CHUNK]
        if any_hostname:
            eps = [e.endpoint for e in chunk]
            sas = [ep.address.socket_address for ep in eps]
        else:
            sas = [e.endpoint.address.socket_address for e in chunk]
        addresses = [sa.address for sa in sas]
        ports = [sa.port_value for sa in sas]
        n = len(chunk)
        ok = all(addresses) and min(ports) > 0 and max(ports) <= 65535
        healths: list[HealthStatus | None] | repeat[HealthStatus | None] = repeat("UNKNOWN", n)
        if any_health:
            codes = [e.health_status for e in chunk]
            if min(codes) == max(codes):  # all alike, as control planes mostly send them
                healths = repeat(health_of(codes[0]), n)
                ok = ok and codes[0] in _HEALTH
            else:
                healths = list(map(health_of, codes))
                ok = ok and None not in healths
        weights: list[int] | repeat[int] = repeat(1, n)
        if any_weight:
            # An unset weight reads 0 here, as an invalid one does: a chunk with either
            # goes one by one, which tells them apart.
            values = [e.load_balancing_weight.value for e in chunk]
            lowest = min(values)
            ok = ok and lowest > 0
            weights = repeat(lowest, n) if lowest == max(values) else values
        hostnames = [ep.hostname for ep in eps] if any_hostname else repeat("", n)
        if ok and ip_only:
            try:
                for _ in map(v4, addresses):
                    pass
            except OSError:  # IPv6, or not an IP literal: one by one says which
                ok = False
        if ok:
            parsed += make_endpoints(addresses, ports, healths, weights, hostnames)  # type: ignore[arg-type]
        else:
            # One by one: IPv6 literals pass, an invalid endpoint raises naming its field.
            parsed += [_endpoint(ctx, e, path, i, ip_only) for i, e in enumerate(chunk, start)]
    return tuple(parsed)


def _by_columns(
    data: bytes, n: int, any_weight: bool, ip_only: bool
) -> tuple[Endpoint, ...] | None:
    """The ``n`` endpoints of a locality built from :func:`_columns`, or None when a
    column does not hold one value per endpoint or some value is not valid (the caller
    then reads them another way, which names an invalid endpoint's field).

    A value left out of a column is a zero value, which is invalid for an address (so
    is a named endpoint, a pipe or a named port: no address or port where the columns
    look) and an unset or invalid one for a weight; a health or host name column must
    be full or empty (empty: UNKNOWN, no name)."""
    columns = _columns(data)
    sa = columns.endpoint.address.socket_address
    addresses, ports = list(sa.address), list(sa.port_value)
    # port_value is in a oneof, so a 0 is written (and read) like any other port.
    if len(addresses) != n or len(ports) != n or min(ports) < 1 or max(ports) > 65535:
        return None
    healths: list[HealthStatus | None] | repeat[HealthStatus] = repeat("UNKNOWN", n)
    codes = columns.health_status
    if codes:
        if len(codes) != n:
            return None
        healths = list(map(_HEALTH.get, codes))
        if None in healths:
            return None
    weights: list[int] | repeat[int] = repeat(1, n)
    if any_weight:
        weights = list(columns.load_balancing_weight.value)
        if len(weights) != n:
            return None
    hostnames: list[str] | repeat[str] = repeat("", n)
    names = columns.endpoint.hostname
    if names:
        if len(names) != n:
            return None
        hostnames = list(names)
    if ip_only:
        try:
            for _ in map(partial(socket.inet_pton, socket.AF_INET), addresses):
                pass
        except OSError:
            if not all(map(_is_ip, addresses)):
                return None
    return make_endpoints(addresses, ports, healths, weights, hostnames)  # type: ignore[arg-type]


def _locality(ctx: Ctx, msg: Any, path: str, ip_only: bool) -> LocalityEndpoints:
    lb_endpoints = msg.lb_endpoints
    endpoints: tuple[Endpoint, ...] = ()
    if lb_endpoints:
        data = msg.SerializeToString()
        merged = _merged(data)
        endpoints = _endpoints(ctx, lb_endpoints, merged, data, path, ip_only)
        _check_fields(ctx, merged, lb_endpoints, endpoints, path)
    total = sum(map(_WEIGHT_OF, endpoints))
    if total > UINT32_MAX:
        ctx.fail(
            join(path, "lb_endpoints"),
            f"sum of endpoint weights ({total}) in the locality exceeds 2^32-1",
        )
    weight = wrapped(msg, "load_balancing_weight", None)
    if weight is not None and weight < 1:
        ctx.fail(join(path, "load_balancing_weight"), "locality weight must be greater than 0")
    if msg.priority > 128:
        ctx.fail(join(path, "priority"), f"priority must be at most 128, got {msg.priority}")
    loc = msg.locality
    ctx.check(msg, path)
    ctx.check(loc, join(path, "locality"))
    return LocalityEndpoints(
        Locality(loc.region, loc.zone, loc.sub_zone),
        endpoints,
        None if weight is None else int(weight),
        int(msg.priority),
    )


def cluster_load_assignment(ctx: Ctx, msg: Any, ip_only: bool = True) -> ClusterLoadAssignment:
    """Parse a ClusterLoadAssignment; ``ctx`` carries the name and the path prefix.

    ``ip_only`` (EDS and STATIC): endpoint addresses must be IP literals.
    """
    localities = []
    seen: dict[tuple[int, Locality], int] = {}
    priority_weights: dict[int, int] = {}
    for i, le in enumerate(msg.endpoints):
        p = f"endpoints[{i}]"
        loc = _locality(ctx, le, p, ip_only)
        key = (loc.priority, loc.locality)
        if key in seen:
            ctx.fail(
                join(p, "locality"),
                f"locality {loc.locality} appears twice in priority {loc.priority} "
                f"(also endpoints[{seen[key]}])",
            )
        seen[key] = i
        priority_weights[loc.priority] = priority_weights.get(loc.priority, 0) + (loc.weight or 0)
        if priority_weights[loc.priority] > UINT32_MAX:
            ctx.fail(
                join(p, "load_balancing_weight"),
                f"sum of locality weights in priority {loc.priority} exceeds 2^32-1",
            )
        localities.append(loc)
    priorities = sorted(priority_weights)
    if priorities and priorities != list(range(len(priorities))):
        ctx.fail(
            "endpoints",
            f"priorities must be contiguous from 0, got {priorities}",
        )
    drops = []
    factor = DEFAULT_OVERPROVISIONING_FACTOR
    if msg.HasField("policy"):
        pol = msg.policy
        for i, d in enumerate(pol.drop_overloads):
            dp = f"policy.drop_overloads[{i}]"
            if not d.category:
                ctx.fail(join(dp, "category"), "category must not be empty")
            frac = fractional_percent(ctx, d.drop_percentage, join(dp, "drop_percentage"))
            ppm = min(frac.numerator * (_PPM // frac.denominator), _PPM)
            ctx.check(d, dp)
            drops.append(DropOverload(d.category, ppm))
        factor = int(wrapped(pol, "overprovisioning_factor", DEFAULT_OVERPROVISIONING_FACTOR))
        if factor < 1:
            ctx.fail("policy.overprovisioning_factor", "must be greater than 0")
        ctx.check(pol, "policy")
    ctx.check(msg, "")
    return ClusterLoadAssignment(
        cluster_name=msg.cluster_name or ctx.name,
        localities=tuple(localities),
        drop_overloads=tuple(drops),
        overprovisioning_factor=factor,
    )


def parse(msg: Any) -> ClusterLoadAssignment:
    ctx = Ctx("ClusterLoadAssignment", msg.cluster_name)
    if not msg.cluster_name:
        ctx.fail("cluster_name", "resource name must not be empty")
    return cluster_load_assignment(ctx, msg)
