"""The mesh file's ``inbound`` section: server Listeners (gRFC A36) with mTLS and Istio
AuthorizationPolicy rules compiled to RBAC filters."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pymesh.errors import ConfigFileError
from pymesh.server.config_file import compile_mesh
from pymesh.xds.resources import LISTENER_TYPE
from pymesh.xds.resources._parse_server_listener import parse

NAME = "xds.istio.io/grpc/lds/inbound/127.0.0.1:50051"


def compile_inbound(inbound: Any, **service: Any) -> Any:
    spec = {"port": 50051, "protocol": "grpc", "endpoints": ["127.0.0.1:50051"], **service}
    spec["inbound"] = inbound
    return compile_mesh({"services": {"echo": spec}}, "test")


def server_listener(snap: Any, name: str = NAME) -> Any:
    return snap.get(LISTENER_TYPE)[name]


def hcm_of(lis: Any) -> Any:
    h = hcm_pb2.HttpConnectionManager()
    assert lis.filter_chains[0].filters[0].typed_config.Unpack(h)
    return h


def rbac_of(h: Any, name: str) -> Any:
    (f,) = [f for f in h.http_filters if f.name == name]
    out = rbac_filter_pb2.RBAC()
    assert f.typed_config.Unpack(out)
    return out.rules


def test_strict_mtls_listener() -> None:
    snap = compile_inbound({})
    lis = server_listener(snap)
    assert lis.address.socket_address.address == "127.0.0.1"
    assert lis.address.socket_address.port_value == 50051
    d = tls_pb2.DownstreamTlsContext()
    assert lis.filter_chains[0].transport_socket.typed_config.Unpack(d)
    assert d.require_client_certificate.value
    ctx = d.common_tls_context
    assert ctx.tls_certificate_provider_instance.instance_name == "default"
    assert ctx.validation_context.ca_certificate_provider_instance.certificate_name == "ROOTCA"
    h = hcm_of(lis)
    assert [f.name for f in h.http_filters] == ["envoy.filters.http.router"]
    route = h.route_config.virtual_hosts[0].routes[0]
    assert route.HasField("non_forwarding_action")
    # The pymesh parser (the same rules grpcio's xDS server applies) accepts it.
    parsed = parse(lis)
    assert parsed.filter_chains[0].tls is not None
    assert parsed.filter_chains[0].tls.require_client_certificate


def test_disable_is_plaintext_and_listen_and_template_override() -> None:
    snap = compile_inbound(
        {"mtls": "DISABLE", "listen": ["0.0.0.0:7000"], "listener_name_template": "srv/%s"}
    )
    lis = server_listener(snap, "srv/0.0.0.0:7000")
    assert not lis.filter_chains[0].HasField("transport_socket")
    assert parse(lis).filter_chains[0].tls is None


def test_authorization_compiles_to_deny_then_allow_rbac_filters() -> None:
    snap = compile_inbound(
        {
            "authorization": [
                {
                    "name": "frontend",
                    "action": "ALLOW",
                    "rules": [
                        {
                            "from": [
                                {"source": {"principals": ["cluster.local/ns/default/sa/fe"]}}
                            ],
                            "to": [{"operation": {"paths": ["/pymesh.test.Echo/*"]}}],
                        }
                    ],
                },
                {
                    "name": "no-admin",
                    "action": "DENY",
                    "rules": [{"to": [{"operation": {"paths": ["*/Admin"]}}]}],
                },
            ]
        }
    )
    h = hcm_of(server_listener(snap))
    assert [f.name for f in h.http_filters] == [
        "envoy.filters.http.rbac.deny",
        "envoy.filters.http.rbac.allow",
        "envoy.filters.http.router",
    ]
    deny = rbac_of(h, "envoy.filters.http.rbac.deny")
    assert deny.action == rbac_pb2.RBAC.DENY
    (dpol,) = deny.policies.values()
    assert dpol.permissions[0].url_path.path.suffix == "/Admin"
    assert dpol.principals[0].any
    allow = rbac_of(h, "envoy.filters.http.rbac.allow")
    (name,) = allow.policies
    assert name == "ns[default]-policy[frontend]-rule[0]"
    pol = allow.policies[name]
    assert (
        pol.principals[0].authenticated.principal_name.exact
        == "spiffe://cluster.local/ns/default/sa/fe"
    )
    assert pol.permissions[0].url_path.path.prefix == "/pymesh.test.Echo/"


def test_allow_policy_without_rules_allows_nothing() -> None:
    h = hcm_of(server_listener(compile_inbound({"authorization": [{"action": "ALLOW"}]})))
    allow = rbac_of(h, "envoy.filters.http.rbac.allow")
    assert allow.action == rbac_pb2.RBAC.ALLOW and not allow.policies


def test_source_fields_are_anded_and_values_ored() -> None:
    h = hcm_of(
        server_listener(
            compile_inbound(
                {
                    "authorization": [
                        {
                            "rules": [
                                {
                                    "from": [
                                        {
                                            "source": {
                                                "principals": ["a/ns/x/sa/1", "a/ns/x/sa/2"],
                                                "notIpBlocks": ["10.0.0.0/8"],
                                            }
                                        }
                                    ],
                                    "to": [{"operation": {"methods": ["POST"]}}],
                                }
                            ]
                        }
                    ]
                }
            )
        )
    )
    (pol,) = rbac_of(h, "envoy.filters.http.rbac.allow").policies.values()
    ids = pol.principals[0].and_ids.ids
    assert len(ids[0].or_ids.ids) == 2
    assert ids[1].not_id.direct_remote_ip.address_prefix == "10.0.0.0"
    assert pol.permissions[0].header.name == ":method"


@pytest.mark.parametrize(
    ("inbound", "where", "reason"),
    [
        ({"mtls": "PERMISSIVE"}, "services.echo.inbound.mtls", "TLS detection"),
        ({"mtls": "MAYBE"}, "services.echo.inbound.mtls", "STRICT or DISABLE"),
        (
            {"authorization": [{"action": "AUDIT"}]},
            "services.echo.inbound.authorization[0].action",
            "ALLOW or DENY",
        ),
        (
            {"authorization": [{"rules": [{"from": [{"source": {"users": ["x"]}}]}]}]},
            "services.echo.inbound.authorization[0].rules[0].from[0].source.users",
            "unknown key",
        ),
        (
            {"authorization": [{"rules": [{"to": [{"operation": {"paths": ["nope"]}}]}]}]},
            "services.echo.inbound.authorization[0].rules[0].to[0].operation.paths[0]",
            "start with /",
        ),
        ({"bogus": 1}, "services.echo.inbound.bogus", "unknown key"),
    ],
)
def test_errors_name_the_field(inbound: Any, where: str, reason: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        compile_inbound(inbound)
    assert info.value.where == where
    assert reason in info.value.reason
