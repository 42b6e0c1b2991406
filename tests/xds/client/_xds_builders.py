"""Small builders of xDS protos for the client and dependency-manager tests."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)


def _hcm() -> Any:
    hcm = hcm_pb2.HttpConnectionManager()
    f = hcm.http_filters.add()
    f.name = "envoy.filters.http.router"
    f.typed_config.Pack(router_pb2.Router())
    return hcm


def listener(name: str, rds: str) -> Any:
    hcm = _hcm()
    hcm.rds.route_config_name = rds
    hcm.rds.config_source.ads.SetInParent()
    msg = listener_pb2.Listener(name=name)
    msg.api_listener.api_listener.Pack(hcm)
    return msg


def listener_inline(name: str, rc: Any) -> Any:
    hcm = _hcm()
    hcm.route_config.CopyFrom(rc)
    msg = listener_pb2.Listener(name=name)
    msg.api_listener.api_listener.Pack(hcm)
    return msg


def route_config(
    name: str,
    cluster: str | None = None,
    *,
    weighted: dict[str, int] | None = None,
    regex: str | None = None,
    mirror: str | None = None,
) -> Any:
    rc = route_pb2.RouteConfiguration(name=name)
    vh = rc.virtual_hosts.add(name="vh", domains=["*"])
    rt = vh.routes.add()
    if regex is not None:
        rt.match.safe_regex.regex = regex
    else:
        rt.match.prefix = "/"
    if weighted:
        for cname, w in weighted.items():
            cw = rt.route.weighted_clusters.clusters.add(name=cname)
            cw.weight.value = w
    else:
        rt.route.cluster = cluster or "c"
    if mirror:
        rt.route.request_mirror_policies.add(cluster=mirror)
    return rc


def eds_cluster(name: str, service_name: str = "") -> Any:
    msg = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    msg.eds_cluster_config.eds_config.ads.SetInParent()
    if service_name:
        msg.eds_cluster_config.service_name = service_name
    msg.connect_timeout.FromSeconds(1)
    return msg


def _fill(cla: Any, endpoints: list[tuple[str, int]]) -> None:
    loc = cla.endpoints.add()
    for host, port in endpoints:
        lb = loc.lb_endpoints.add()
        lb.endpoint.address.socket_address.CopyFrom(
            address_pb2.SocketAddress(address=host, port_value=port)
        )


def dns_cluster(name: str, endpoints: list[tuple[str, int]], kind: str = "STRICT_DNS") -> Any:
    msg = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.DiscoveryType.Value(kind))
    msg.load_assignment.cluster_name = name
    _fill(msg.load_assignment, endpoints)
    msg.connect_timeout.FromSeconds(1)
    return msg


def aggregate_cluster(name: str, children: list[str]) -> Any:
    msg = cluster_pb2.Cluster(name=name)
    msg.cluster_type.name = "envoy.clusters.aggregate"
    msg.cluster_type.typed_config.Pack(aggregate_pb2.ClusterConfig(clusters=children))
    msg.connect_timeout.FromSeconds(1)
    return msg


def cla(name: str, endpoints: list[tuple[str, int]]) -> Any:
    msg = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    _fill(msg, endpoints)
    return msg
