"""ClusterLoadAssignment parser: localities, weights, priorities, drops, NACKs."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from _resbuild import cla, invalid
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as endpoint_pb2
from envoy.config.endpoint.v3 import endpoint_pb2 as cla_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from pymesh.xds.resources.endpoint import (
    DropOverload,
    Endpoint,
    Locality,
    make_endpoints,
    parse_cluster_load_assignment,
)

parse = parse_cluster_load_assignment


def test_basic_assignment_defaults() -> None:
    out = parse(cla("c", 8080, 8081))
    assert out.cluster_name == "c"
    assert out.overprovisioning_factor == 140
    assert out.drop_overloads == ()
    (loc,) = out.localities
    assert loc.locality == Locality("r1")
    assert loc.weight is None and loc.priority == 0
    assert out.endpoints == (Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 8081))
    assert out.endpoints[0].usable


def test_all_endpoint_fields() -> None:
    m = cla("c", 1)
    loc = m.endpoints[0]
    loc.locality.zone, loc.locality.sub_zone = "z", "s"
    loc.load_balancing_weight.value = 3
    ep = loc.lb_endpoints[0]
    ep.health_status = health_check_pb2.DRAINING
    ep.load_balancing_weight.value = 9
    ep.endpoint.hostname = "pod-1"
    ep.endpoint.address.socket_address.address = "::1"
    p1 = m.endpoints.add(priority=1)
    e = p1.lb_endpoints.add()
    e.endpoint.address.socket_address.address = "10.0.0.2"
    e.endpoint.address.socket_address.port_value = 80
    out = parse(m)
    first = out.localities[0]
    assert first.locality == Locality("r1", "z", "s") and str(first.locality) == "r1/z/s"
    assert first.weight == 3
    assert first.endpoints[0] == Endpoint("::1", 1, "DRAINING", 9, "pod-1")
    assert first.endpoints[0].address == "[::1]:1"
    assert not first.endpoints[0].usable
    assert out.localities[1].priority == 1


def test_policy_drops_and_overprovisioning() -> None:
    m = cla("c")
    d = m.policy.drop_overloads.add(category="lb")
    d.drop_percentage.numerator = 5  # 5/100
    d = m.policy.drop_overloads.add(category="throttle")
    d.drop_percentage.numerator = 25
    d.drop_percentage.denominator = 1  # 25/10_000
    d = m.policy.drop_overloads.add(category="all")
    d.drop_percentage.numerator = 500  # capped at 100 %
    m.policy.overprovisioning_factor.value = 100
    out = parse(m)
    assert out.drop_overloads == (
        DropOverload("lb", 50_000),
        DropOverload("throttle", 2_500),
        DropOverload("all", 1_000_000),
    )
    assert out.overprovisioning_factor == 100


def test_priorities_must_be_contiguous() -> None:
    m = cla("c")
    m.endpoints[0].priority = 1
    invalid(parse, m, "endpoints", reason="contiguous")
    m = cla("c")
    e = m.endpoints.add(priority=2).lb_endpoints.add()
    e.endpoint.address.socket_address.address = "10.0.0.9"
    e.endpoint.address.socket_address.port_value = 1
    invalid(parse, m, "endpoints", reason="[0, 2]")


def test_eds_endpoints_must_be_ip_literals() -> None:
    m = cla("c")
    m.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address = "pod.local"
    invalid(
        parse,
        m,
        "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
        reason="STRICT_DNS",
    )


def test_zero_endpoint_weight_nacks() -> None:
    m = cla("c")
    m.endpoints[0].lb_endpoints[0].load_balancing_weight.value = 0
    invalid(parse, m, "endpoints[0].lb_endpoints[0].load_balancing_weight")


def test_endpoint_weight_sum_overflow_nacks() -> None:
    m = cla("c", 1, 2)
    for ep in m.endpoints[0].lb_endpoints:
        ep.load_balancing_weight.value = 2**31 + 1
    invalid(parse, m, "endpoints[0].lb_endpoints", reason="2^32-1")


def test_locality_weight_zero_and_duplicate_locality_nack() -> None:
    m = cla("c")
    m.endpoints[0].load_balancing_weight.value = 0
    invalid(parse, m, "endpoints[0].load_balancing_weight")
    m = cla("c")
    m.endpoints.add().CopyFrom(m.endpoints[0])
    invalid(parse, m, "endpoints[1].locality", reason="twice")


def test_bad_addresses_nack() -> None:
    m = cla("c")
    m.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value = 70000
    invalid(parse, m, "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value")
    m = cla("c")
    m.endpoints[0].lb_endpoints[0].endpoint.address.pipe.path = "envoy.sock"
    invalid(parse, m, "endpoints[0].lb_endpoints[0].endpoint.address", reason="socket_address")
    m = cla("c")
    m.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address = ""
    invalid(parse, m, "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address")
    m = cla("c")
    m.endpoints[0].lb_endpoints[0].endpoint_name = "named"
    invalid(parse, m, "endpoints[0].lb_endpoints[0].endpoint")


def test_empty_assignment_and_name() -> None:
    from envoy.config.endpoint.v3 import endpoint_pb2

    assert parse(endpoint_pb2.ClusterLoadAssignment(cluster_name="e")).localities == ()
    invalid(parse, endpoint_pb2.ClusterLoadAssignment(), "cluster_name")


# The parser reads a long endpoint list in one fast loop that reads only what the list
# sets (pymesh.xds.resources._parse_endpoint._endpoints) and hands an endpoint that looks
# wrong to the one-endpoint parser for its error. Whatever an endpoint sets, and wherever
# it stands in the list, the result must be what that endpoint parsed alone gives.

_BAD_ENDPOINTS: dict[str, tuple[str, str]] = {
    # what is wrong: (the field the NACK names, below lb_endpoints[i], a word of the reason)
    "named endpoint": ("endpoint", "named endpoints"),
    "pipe address": ("endpoint.address", "socket_address"),
    "empty address": ("endpoint.address.socket_address.address", "empty"),
    "host name": ("endpoint.address.socket_address.address", "STRICT_DNS"),
    "named port": ("endpoint.address.socket_address.port_value", "named_port"),
    "port 0": ("endpoint.address.socket_address.port_value", "1..65535"),
    "udp": ("endpoint.address.socket_address.protocol", "TCP"),
    "unknown health": ("health_status", "unknown health_status"),
    "weight 0": ("load_balancing_weight", "greater than 0"),
}


def _spoil(ep: Any, what: str) -> None:
    sa = ep.endpoint.address.socket_address
    if what == "named endpoint":
        ep.endpoint_name = "named"
    elif what == "pipe address":
        ep.endpoint.address.pipe.path = "envoy.sock"
    elif what == "empty address":
        sa.address = ""
    elif what == "host name":
        sa.address = "pod.example"
    elif what == "named port":
        sa.named_port = "http"
    elif what == "port 0":
        sa.port_value = 0
    elif what == "udp":
        sa.protocol = 1
    elif what == "unknown health":
        ep.health_status = 42
    else:
        ep.load_balancing_weight.value = 0


def _mixed(n: int, seed: int) -> Any:
    """A list of ``n`` valid endpoints, some with weights, health, host names, IPv6."""
    rng = random.Random(seed)
    m = cla("c", *range(1, n + 1))
    for i, ep in enumerate(m.endpoints[0].lb_endpoints):
        if rng.random() < 0.3:
            ep.load_balancing_weight.value = rng.randint(1, 9)
        if rng.random() < 0.3:
            ep.health_status = rng.choice([0, 1, 2, 3, 4, 5])
        if rng.random() < 0.2:
            ep.endpoint.hostname = f"pod-{i}"
        if rng.random() < 0.2:
            ep.endpoint.address.socket_address.address = f"fd00::{i + 1:x}"
    return m


@pytest.mark.parametrize("what", sorted(_BAD_ENDPOINTS))
@pytest.mark.parametrize("n", [1, 2, 65, 300])
def test_a_bad_endpoint_anywhere_in_a_long_list_is_named_by_its_index(n: int, what: str) -> None:
    field, reason = _BAD_ENDPOINTS[what]
    for index in sorted({0, n // 2, n - 1}):
        m = _mixed(n, seed=index)
        _spoil(m.endpoints[0].lb_endpoints[index], what)
        invalid(parse, m, f"endpoints[0].lb_endpoints[{index}].{field}", reason=reason)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(1, 200), seed=st.integers(0, 2**16))
def test_a_long_list_parses_as_each_endpoint_alone(n: int, seed: int) -> None:
    _assert_parses_as_each_endpoint_alone(_mixed(n, seed))


def _assert_parses_as_each_endpoint_alone(m: Any) -> None:
    whole = parse(m).endpoints
    alone = []
    for ep in m.endpoints[0].lb_endpoints:
        single = cla("c")
        single.endpoints[0].lb_endpoints[0].CopyFrom(ep)
        alone.extend(parse(single).endpoints)
    assert whole == tuple(alone)
    # Endpoint equality leaves out the derived address; compare every field.
    fields = [(e.address, e.health, e.weight, e.hostname) for e in whole]
    assert fields == [(e.address, e.health, e.weight, e.hostname) for e in alone]


def _shaped(n: int, seed: int) -> Any:
    """A list of ``n`` valid endpoints shaped as control planes send them: each field set
    on every endpoint alike, on every endpoint with varied values, on some, or on none
    (the parser reads a list in chunks, and a chunk whose fields are alike takes its
    fastest way)."""
    rng = random.Random(seed)
    weight_mode, health_mode, hostname_mode, v6_mode = (
        rng.choice(["none", "alike", "varied", "some"]) for _ in range(4)
    )
    alike_weight, alike_health = rng.randint(1, 9), rng.choice([0, 1, 2, 3, 4, 5])

    def pick(mode: str, alike: Any, varied: Any) -> Any:
        if mode == "alike":
            return alike
        if mode == "varied" or (mode == "some" and rng.random() < 0.5):
            return varied()
        return None

    m = cla("c", *range(1, n + 1))
    for i, ep in enumerate(m.endpoints[0].lb_endpoints):
        weight = pick(weight_mode, alike_weight, lambda: rng.randint(1, 9))
        if weight is not None:
            ep.load_balancing_weight.value = weight
        health = pick(health_mode, alike_health, lambda: rng.choice([0, 1, 2, 3, 4, 5]))
        if health is not None:
            ep.health_status = health
        if pick(hostname_mode, True, lambda: True):
            ep.endpoint.hostname = f"pod-{i}"
        if v6_mode == "some" and rng.random() < 0.01:
            ep.endpoint.address.socket_address.address = f"fd00::{i + 1:x}"
    return m


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(1, 700), seed=st.integers(0, 2**16))
def test_a_list_shaped_as_control_planes_send_it_parses_as_each_endpoint_alone(
    n: int, seed: int
) -> None:
    _assert_parses_as_each_endpoint_alone(_shaped(n, seed))


@pytest.mark.parametrize("what", ["unknown health", "weight 0", "port 0", "host name"])
def test_a_bad_endpoint_in_a_later_chunk_of_an_alike_list_is_named_by_its_index(
    what: str,
) -> None:
    m = cla("c", *range(1, 601))
    for ep in m.endpoints[0].lb_endpoints:
        ep.health_status = 1
        ep.load_balancing_weight.value = 2
    _spoil(m.endpoints[0].lb_endpoints[517], what)
    field, reason = _BAD_ENDPOINTS[what]
    invalid(parse, m, f"endpoints[0].lb_endpoints[517].{field}", reason=reason)


def _framed(field: int, payload: bytes) -> bytes:
    """``payload`` as a length-delimited protobuf field (wire type 2)."""
    head, size = bytes([field << 3 | 2]), len(payload)
    while size > 0x7F:
        head += bytes([size & 0x7F | 0x80])
        size >>= 7
    return head + bytes([size]) + payload


def _lb_endpoint(address: str = "", port: int = 0, health: int = 0) -> bytes:
    ep = endpoint_pb2.LbEndpoint(health_status=health)
    sa = ep.endpoint.address.socket_address
    sa.address = address
    if port:
        sa.port_value = port
    return ep.SerializeToString()


@pytest.mark.parametrize("n", [3, 300])
def test_fields_a_control_plane_repeats_inside_an_endpoint_do_not_shift_the_others(
    n: int,
) -> None:
    # Concatenated messages are a valid encoding of their merge (the last address wins),
    # and one endpoint written so is followed by endpoints that set everything once: the
    # parser reads the whole list as columns, which must still line up.
    first = _lb_endpoint("10.0.0.1", 81, 1) + _lb_endpoint("10.0.0.2", health=1)
    rest = [_lb_endpoint(f"10.0.1.{i % 250}", 1000 + i, 1) for i in range(1, n)]
    locality = b"".join(_framed(2, e) for e in [first, *rest])
    data = cla_pb2.ClusterLoadAssignment(cluster_name="c").SerializeToString()
    m = cla_pb2.ClusterLoadAssignment.FromString(data + _framed(2, locality))
    whole = parse(m).endpoints
    assert len(whole) == n
    assert whole[0] == Endpoint("10.0.0.2", 81, "HEALTHY")
    assert [(e.host, e.port) for e in whole[1:]] == [
        (f"10.0.1.{i % 250}", 1000 + i) for i in range(1, n)
    ]


def test_a_missing_address_beside_a_repeated_one_is_still_named() -> None:
    # One endpoint carries two addresses, the next none: as many addresses as endpoints
    # on the wire, yet the second endpoint is invalid and must be NACKed by its index.
    first = _lb_endpoint("10.0.0.1", 81) + _lb_endpoint("10.0.0.2")
    locality = b"".join(
        _framed(2, e) for e in [first, _lb_endpoint(port=82), _lb_endpoint("10.0.0.3", 83)]
    )
    data = cla_pb2.ClusterLoadAssignment(cluster_name="c").SerializeToString()
    m = cla_pb2.ClusterLoadAssignment.FromString(data + _framed(2, locality))
    invalid(
        parse,
        m,
        "endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address",
        reason="empty",
    )


def test_bulk_built_endpoints_are_ordinary_frozen_endpoints() -> None:
    fields = [("10.0.0.1", 80, "HEALTHY", 3, "a"), ("::1", 8080, "UNKNOWN", 1, "")]
    built = make_endpoints(*(list(column) for column in zip(*fields, strict=True)))
    expected = tuple(Endpoint(*f) for f in fields)  # type: ignore[arg-type]
    assert built == expected
    assert [hash(e) for e in built] == [hash(e) for e in expected]
    assert [type(e) for e in built] == [Endpoint, Endpoint]
    assert [e.address for e in built] == ["10.0.0.1:80", "[::1]:8080"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        built[0].weight = 5  # type: ignore[misc]
