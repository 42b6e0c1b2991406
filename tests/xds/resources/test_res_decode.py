"""decode()/resource_name(): Any unpacking, Resource wrappers, type checks."""

from __future__ import annotations

import pytest
from _resbuild import any_pb2, cla, eds_cluster, hcm, listener, pack, route_config
from envoy.service.discovery.v3 import discovery_pb2

from pymesh.errors import ResourceInvalid
from pymesh.xds.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    decode,
    resource_name,
)
from pymesh.xds.resources.cluster import Cluster
from pymesh.xds.resources.endpoint import ClusterLoadAssignment
from pymesh.xds.resources.listener import Listener
from pymesh.xds.resources.route import RouteConfiguration


def test_type_urls() -> None:
    assert LISTENER_TYPE == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert ROUTE_TYPE == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    assert CLUSTER_TYPE == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert ENDPOINT_TYPE == "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


@pytest.mark.parametrize(
    ("type_url", "msg", "name", "cls"),
    [
        (LISTENER_TYPE, listener(hcm(), "l1"), "l1", Listener),
        (ROUTE_TYPE, route_config("r1"), "r1", RouteConfiguration),
        (CLUSTER_TYPE, eds_cluster("c1"), "c1", Cluster),
        (ENDPOINT_TYPE, cla("e1"), "e1", ClusterLoadAssignment),
    ],
)
def test_decode_plain_and_wrapped(type_url: str, msg: object, name: str, cls: type) -> None:
    got_name, parsed = decode(type_url, pack(msg))
    assert got_name == name and isinstance(parsed, cls)
    assert resource_name(type_url, pack(msg)) == name
    wrapper = discovery_pb2.Resource(name=name, version="1")
    wrapper.resource.Pack(msg)
    got_name, parsed2 = decode(type_url, pack(wrapper))
    assert got_name == name and parsed2 == parsed
    assert resource_name(type_url, pack(wrapper)) == name


def test_type_mismatch_nacks_with_name_from_wrapper() -> None:
    with pytest.raises(ResourceInvalid) as ei:
        decode(CLUSTER_TYPE, pack(route_config("r")))
    assert ei.value.field == "type_url" and not ei.value.resource_name
    wrapper = discovery_pb2.Resource(name="r")
    wrapper.resource.Pack(route_config("r"))
    with pytest.raises(ResourceInvalid) as ei:
        decode(CLUSTER_TYPE, pack(wrapper))
    assert ei.value.resource_name == "r"


def test_garbage_bytes_nack_with_empty_name() -> None:
    bad = any_pb2.Any(type_url=CLUSTER_TYPE, value=b"\xff\xff\xff")
    with pytest.raises(ResourceInvalid) as ei:
        decode(CLUSTER_TYPE, bad)
    assert "cannot decode" in ei.value.reason
    assert resource_name(CLUSTER_TYPE, bad) == ""


def test_invalid_resource_still_has_readable_name() -> None:
    c = eds_cluster("broken")
    c.eds_cluster_config.eds_config.path_config_source.path = "/x"
    with pytest.raises(ResourceInvalid) as ei:
        decode(CLUSTER_TYPE, pack(c))
    assert ei.value.resource_name == "broken"
    assert resource_name(CLUSTER_TYPE, pack(c)) == "broken"


def test_unknown_type_and_name_mismatch() -> None:
    with pytest.raises(ResourceInvalid) as ei:
        decode("type.googleapis.com/acme.Thing", pack(route_config()))
    assert ei.value.field == "type_url"
    wrapper = discovery_pb2.Resource(name="other")
    wrapper.resource.Pack(route_config("r"))
    with pytest.raises(ResourceInvalid) as ei:
        decode(ROUTE_TYPE, pack(wrapper))
    assert ei.value.field == "name"


def test_wrapper_name_fills_empty_inner_name() -> None:
    wrapper = discovery_pb2.Resource(name="from-wrapper")
    wrapper.resource.Pack(route_config(""))
    name, parsed = decode(ROUTE_TYPE, pack(wrapper))
    assert name == "from-wrapper"
    assert isinstance(parsed, RouteConfiguration) and parsed.name == "from-wrapper"
    with pytest.raises(ResourceInvalid) as ei:
        decode(ROUTE_TYPE, pack(route_config("")))
    assert ei.value.field == "name" and not ei.value.resource_name


def test_empty_wrapper_nacks() -> None:
    with pytest.raises(ResourceInvalid) as ei:
        decode(ROUTE_TYPE, pack(discovery_pb2.Resource(name="x")))
    assert ei.value.field == "resource" and ei.value.resource_name == "x"
