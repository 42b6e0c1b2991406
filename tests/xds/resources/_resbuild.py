"""Builders of real xDS protobuf messages for the parser tests."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pymesh.errors import ResourceInvalid

# Loaded dynamically: google.protobuf has no type stubs here (types-protobuf is not a
# project dependency), and the tests only need the Any message class.
any_pb2: Any = importlib.import_module("google.protobuf.any_pb2")


def pack(msg: Any) -> Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def route_config(name: str = "rc", cluster: str = "c") -> Any:
    rc = route_pb2.RouteConfiguration(name=name)
    vh = rc.virtual_hosts.add(name="vh", domains=["*"])
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = cluster
    return rc


def first_route(rc: Any) -> Any:
    return rc.virtual_hosts[0].routes[0]


def hcm(rds: str | None = "rc") -> Any:
    h = hcm_pb2.HttpConnectionManager()
    if rds is not None:
        h.rds.route_config_name = rds
        h.rds.config_source.ads.SetInParent()
    f = h.http_filters.add(name="envoy.filters.http.router")
    f.typed_config.Pack(router_pb2.Router())
    return h


def listener(h: Any, name: str = "svc:80") -> Any:
    lis = listener_pb2.Listener(name=name)
    lis.api_listener.api_listener.Pack(h)
    return lis


def fault(delay_s: float | None = None, abort_status: int | None = None) -> Any:
    f = fault_pb2.HTTPFault()
    if delay_s is not None:
        f.delay.fixed_delay.FromNanoseconds(int(delay_s * 1e9))
        f.delay.percentage.numerator = 50
    if abort_status is not None:
        f.abort.http_status = abort_status
        f.abort.percentage.numerator = 100
    return f


def eds_cluster(name: str = "c") -> Any:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.eds_cluster_config.eds_config.ads.SetInParent()
    return c


def cla(name: str = "c", *ports: int, priority: int = 0) -> Any:
    m = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    loc = m.endpoints.add(priority=priority)
    loc.locality.region = "r1"
    for port in ports or (8080,):
        ep = loc.lb_endpoints.add()
        ep.endpoint.address.socket_address.address = "127.0.0.1"
        ep.endpoint.address.socket_address.port_value = port
    return m


def invalid(fn: Any, msg: Any, field: str, *, reason: str = "") -> ResourceInvalid:
    """Assert ``fn(msg)`` raises ResourceInvalid at ``field`` (and with ``reason`` text)."""
    with pytest.raises(ResourceInvalid) as ei:
        fn(msg)
    assert ei.value.field == field, ei.value
    assert reason in ei.value.reason, ei.value.reason
    return ei.value
