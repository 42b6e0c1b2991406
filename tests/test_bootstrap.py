"""Bootstrap loading: gRPC's format, istio-agent files, every error path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pymesh.bootstrap import (
    Bootstrap,
    ChannelCreds,
    Locality,
    load_bootstrap,
)
from pymesh.errors import BootstrapError

# The shape istio-agent writes to /etc/istio/proxy/grpc-bootstrap.json.
ISTIO_BOOTSTRAP: dict[str, Any] = {
    "xds_servers": [
        {
            "server_uri": "unix:///etc/istio/proxy/XDS",
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }
    ],
    "node": {
        "id": "sidecar~10.244.0.12~reviews-v1-545db77b95-abcde.default~default.svc.cluster.local",
        "metadata": {
            "ANNOTATIONS": {"proxy.istio.io/config": "{}", "sidecar.istio.io/inject": "true"},
            "APP_CONTAINERS": "reviews",
            "CLUSTER_ID": "Kubernetes",
            "ENVOY_PROMETHEUS_PORT": 15090,
            "ENVOY_STATUS_PORT": 15021,
            "GENERATOR": "grpc",
            "INSTANCE_IPS": "10.244.0.12",
            "INTERCEPTION_MODE": "REDIRECT",
            "ISTIO_PROXY_SHA": "abc",
            "ISTIO_VERSION": "1.22.0",
            "LABELS": {"app": "reviews", "version": "v1"},
            "MESH_ID": "cluster.local",
            "NAME": "reviews-v1-545db77b95-abcde",
            "NAMESPACE": "default",
            "OWNER": "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1",
            "PILOT_SAN": ["istiod.istio-system.svc"],
            "POD_PORTS": '[{"containerPort":9080,"protocol":"TCP"}]',
            "PROXY_CONFIG": {"binaryPath": "/usr/local/bin/envoy", "concurrency": 2},
            "SERVICE_ACCOUNT": "bookinfo-reviews",
            "WORKLOAD_NAME": "reviews-v1",
        },
        "locality": {"region": "us-east1", "zone": "us-east1-b"},
        "UserAgentVersionType": None,
    },
    "certificate_providers": {
        "default": {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": "/var/lib/istio/data/cert-chain.pem",
                "private_key_file": "/var/lib/istio/data/key.pem",
                "ca_certificate_file": "/var/lib/istio/data/root-cert.pem",
                "refresh_interval": "900s",
            },
        }
    },
    "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
}


def test_istio_agent_bootstrap_file(tmp_path: Path) -> None:
    path = tmp_path / "grpc-bootstrap.json"
    path.write_text(json.dumps(ISTIO_BOOTSTRAP))
    b = load_bootstrap(path)
    assert isinstance(b, Bootstrap)
    assert b.source == str(path)
    [server] = b.xds_servers
    assert server.server_uri == "unix:///etc/istio/proxy/XDS"
    assert server.channel_creds == (ChannelCreds("insecure", {}),)
    assert server.server_features == frozenset({"xds_v3"})
    assert not server.ignore_resource_deletion
    assert b.node.id.startswith("sidecar~10.244.0.12~")
    assert b.node.locality == Locality("us-east1", "us-east1-b", "")
    assert b.node.metadata["LABELS"] == {"app": "reviews", "version": "v1"}
    assert b.node.metadata["ENVOY_STATUS_PORT"] == 15021
    assert len(b.node.metadata) == 20
    provider = b.certificate_providers["default"]
    assert provider.plugin_name == "file_watcher"
    assert provider.config["ca_certificate_file"] == "/var/lib/istio/data/root-cert.pem"
    assert b.server_listener_resource_name_template == "xds.istio.io/grpc/lds/inbound/%s"
    assert b.client_default_listener_resource_name_template == "%s"
    assert b.listener_resource_name("reviews:9080") == "reviews:9080"


def test_minimal_dict_and_defaults() -> None:
    b = load_bootstrap(
        {
            "xds_servers": [
                {"server_uri": "localhost:15010", "channel_creds": [{"type": "insecure"}]}
            ],
            "some_future_field": {"ignored": True},
        }
    )
    assert b.source == "<dict>"
    assert b.node.id == "" and b.node.metadata == {}
    assert b.certificate_providers == {} and b.authorities == {}
    assert b.xds_servers[0].server_features == frozenset()


def test_first_supported_creds_are_selected_and_features() -> None:
    b = load_bootstrap(
        {
            "xds_servers": [
                {
                    "server_uri": "dns:///xds.example.com:443",
                    "channel_creds": [
                        {"type": "alts"},
                        {"type": "tls", "config": {"ca_certificate_file": "/ca.pem"}},
                        {"type": "insecure"},
                    ],
                    "server_features": ["xds_v3", "ignore_resource_deletion"],
                }
            ]
        }
    )
    server = b.xds_servers[0]
    assert server.selected_creds.type == "tls"
    assert server.ignore_resource_deletion


TRAFFIC_DIRECTOR = {
    "xds_servers": [
        {
            "server_uri": "trafficdirector.googleapis.com:443",
            "channel_creds": [{"type": "google_default"}],
            "server_features": ["xds_v3", "ignore_resource_deletion"],
        }
    ],
    "node": {"id": "projects/1/networks/default/nodes/abc", "locality": {"zone": "z"}},
}


@pytest.mark.parametrize("kind", ["google_default", "compute_engine"])
def test_traffic_director_credentials_load(kind: str) -> None:
    # Only the parse and the credential lookup can be checked here (no GCP, and no
    # google-auth in the test install): the channel itself needs Google's credentials.
    config = json.loads(json.dumps(TRAFFIC_DIRECTOR))
    config["xds_servers"][0]["channel_creds"] = [{"type": kind}, {"type": "insecure"}]
    b = load_bootstrap(config)
    assert b.xds_servers[0].selected_creds.type == kind
    from pymesh.xds.client import XdsClient

    with pytest.raises(BootstrapError) as info:
        XdsClient(b)
    assert info.value.field == "xds_servers[0].channel_creds"
    assert "pymesh[gcp]" in info.value.reason or "GOOGLE_APPLICATION_CREDENTIALS" in str(info.value)


def test_env_path_then_env_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(ISTIO_BOOTSTRAP))
    inline = {"xds_servers": [{"server_uri": "h:1", "channel_creds": [{"type": "insecure"}]}]}
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps(inline))
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP", str(path))
    assert load_bootstrap(None).source == str(path)  # the path wins, as in gRPC
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP")
    b = load_bootstrap(None)
    assert b.source == "GRPC_XDS_BOOTSTRAP_CONFIG"
    assert b.xds_servers[0].server_uri == "h:1"
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP_CONFIG")
    with pytest.raises(BootstrapError) as ei:
        load_bootstrap(None)
    assert ei.value.field == "GRPC_XDS_BOOTSTRAP"
    assert "fix: set GRPC_XDS_BOOTSTRAP" in ei.value.reason


def test_listener_name_templates_and_authorities() -> None:
    b = load_bootstrap(
        {
            "xds_servers": [{"server_uri": "h:1", "channel_creds": [{"type": "insecure"}]}],
            "client_default_listener_resource_name_template": (
                "xdstp://xds.example.com/envoy.config.listener.v3.Listener/%s"
            ),
            "authorities": {
                "xds.example.com": {},
                "other": {
                    "xds_servers": [
                        {"server_uri": "other:2", "channel_creds": [{"type": "insecure"}]}
                    ],
                    "client_listener_resource_name_template": "xdstp://other/lds/%s",
                },
            },
        }
    )
    assert (
        b.listener_resource_name("my svc:80")
        == "xdstp://xds.example.com/envoy.config.listener.v3.Listener/my%20svc:80"
    )
    assert b.listener_resource_name("a/b", xds_authority="other") == "xdstp://other/lds/a/b"
    assert (
        b.listener_resource_name("x", xds_authority="xds.example.com")
        == "xdstp://xds.example.com/envoy.config.listener.v3.Listener/x"
    )
    assert b.servers_for("xdstp://other/lds/x")[0].server_uri == "other:2"
    assert b.servers_for("xdstp://xds.example.com/x")[0].server_uri == "h:1"
    assert b.servers_for("plain")[0].server_uri == "h:1"
    with pytest.raises(BootstrapError) as ei:
        b.listener_resource_name("x", xds_authority="unknown")
    assert ei.value.field == "authorities['unknown']"
    # a plain template does no percent-encoding
    plain = load_bootstrap(
        {
            "xds_servers": [{"server_uri": "h:1", "channel_creds": [{"type": "insecure"}]}],
            "client_default_listener_resource_name_template": "prefix/%s",
        }
    )
    assert plain.listener_resource_name("a b") == "prefix/a b"


def _server(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"server_uri": "h:1", "channel_creds": [{"type": "insecure"}]}
    s.update(over)
    return s


@pytest.mark.parametrize(
    ("data", "field", "needle"),
    [
        ([], "xds_servers", "JSON object"),
        ({}, "xds_servers", "missing"),
        ({"xds_servers": {}}, "xds_servers", "array"),
        ({"xds_servers": []}, "xds_servers", "empty"),
        ({"xds_servers": ["x"]}, "xds_servers[0]", "object"),
        (
            {"xds_servers": [{"channel_creds": [{"type": "insecure"}]}]},
            "xds_servers[0].server_uri",
            "missing",
        ),
        ({"xds_servers": [_server(server_uri="")]}, "xds_servers[0].server_uri", "non-empty"),
        ({"xds_servers": [_server(channel_creds=[])]}, "xds_servers[0].channel_creds", "insecure"),
        ({"xds_servers": [_server(channel_creds=None)]}, "xds_servers[0].channel_creds", "missing"),
        (
            {"xds_servers": [_server(channel_creds=[{"type": "made_up"}])]},
            "xds_servers[0].channel_creds",
            "no supported channel creds type",
        ),
        (
            {"xds_servers": [_server(channel_creds=[{}])]},
            "xds_servers[0].channel_creds[0].type",
            "missing",
        ),
        (
            {"xds_servers": [_server(channel_creds=[{"type": "tls", "config": []}])]},
            "xds_servers[0].channel_creds[0].config",
            "object",
        ),
        (
            {
                "xds_servers": [
                    _server(channel_creds=[{"type": "tls", "config": {"certificate_file": "c"}}])
                ]
            },
            "xds_servers[0].channel_creds[0].config",
            "together",
        ),
        (
            {
                "xds_servers": [
                    _server(channel_creds=[{"type": "tls", "config": {"ca_certificate_file": 1}}])
                ]
            },
            "xds_servers[0].channel_creds[0].config.ca_certificate_file",
            "path",
        ),
        (
            {"xds_servers": [_server(server_features="xds_v3")]},
            "xds_servers[0].server_features",
            "array",
        ),
        ({"xds_servers": [_server()], "node": []}, "node", "object"),
        ({"xds_servers": [_server()], "node": {"id": 5}}, "node.id", "string"),
        ({"xds_servers": [_server()], "node": {"locality": "x"}}, "node.locality", "object"),
        (
            {"xds_servers": [_server()], "node": {"locality": {"zone": 1}}},
            "node.locality.zone",
            "string",
        ),
        ({"xds_servers": [_server()], "node": {"metadata": [1]}}, "node.metadata", "object"),
        (
            {"xds_servers": [_server()], "certificate_providers": []},
            "certificate_providers",
            "object",
        ),
        (
            {"xds_servers": [_server()], "certificate_providers": {"d": {}}},
            "certificate_providers.d.plugin_name",
            "file_watcher",
        ),
        (
            {
                "xds_servers": [_server()],
                "certificate_providers": {"d": {"plugin_name": "p", "config": 1}},
            },
            "certificate_providers.d.config",
            "object",
        ),
        (
            {"xds_servers": [_server()], "client_default_listener_resource_name_template": 3},
            "client_default_listener_resource_name_template",
            "string",
        ),
        (
            {"xds_servers": [_server()], "server_listener_resource_name_template": []},
            "server_listener_resource_name_template",
            "string",
        ),
        ({"xds_servers": [_server()], "authorities": []}, "authorities", "object"),
        (
            {
                "xds_servers": [_server()],
                "authorities": {"a": {"client_listener_resource_name_template": "xdstp://b/%s"}},
            },
            "authorities.a.client_listener_resource_name_template",
            "xdstp://a/",
        ),
        (
            {
                "xds_servers": [_server()],
                "authorities": {"a": {"xds_servers": [{"server_uri": "h"}]}},
            },
            "authorities.a.xds_servers[0].channel_creds",
            "missing",
        ),
    ],
)
def test_validation_errors(data: Any, field: str, needle: str) -> None:
    with pytest.raises(BootstrapError) as ei:
        load_bootstrap(data) if isinstance(data, dict) else _load_raw(data)
    err = ei.value
    assert err.field == field
    assert needle in err.reason
    assert err.source in ("<dict>",) or err.source.endswith(".json")


def _load_raw(data: Any) -> Bootstrap:
    from pymesh.bootstrap import _parse

    return _parse(data, "<dict>")


def test_unreadable_and_invalid_json_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(BootstrapError) as ei:
        load_bootstrap(missing)
    err = ei.value
    assert err.source == str(missing) and "cannot read" in err.reason
    assert err.field == "bootstrap"  # the setting that named the file is what to fix
    assert "fix: point the bootstrap argument" in err.reason
    assert "--bootstrap-out FILE" in err.reason
    bad = tmp_path / "bad.json"
    bad.write_text('{"xds_servers": [')
    with pytest.raises(BootstrapError) as ei:
        load_bootstrap(str(bad))
    assert "not valid JSON" in ei.value.reason and "line 1" in ei.value.reason
    assert ei.value.field == "xds_servers[0]"
    assert "fix: correct the JSON there" in ei.value.reason
    assert f"bootstrap {bad}: field 'xds_servers[0]'" in str(ei.value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "xds_servers"),
        ("[1,", "xds_servers"),
        ('{"xds_servers": [], node: {}}', "xds_servers"),
        ('{"node": {"id": "a" "cluster": "b"}}', "node.id"),
        ('{"node": {"id": "a\\"b" x}}', "node.id"),
        (
            '{"xds_servers": [{"channel_creds": [{"type": "insecure"},]}]}',
            "xds_servers[0].channel_creds[1]",
        ),
        (
            '{"xds_servers": [{"server_uri": "h:1"}], "node": {"metadata": {"A": [1, 2,]}}}',
            "node.metadata.A[2]",
        ),
    ],
)
def test_invalid_json_names_the_field_it_is_in(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(BootstrapError) as ei:
        load_bootstrap(path)
    assert ei.value.field == field
    assert "fix:" in ei.value.reason


def test_missing_env_file_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.json"
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP", str(missing))
    with pytest.raises(BootstrapError) as ei:
        load_bootstrap()
    assert ei.value.source == str(missing)
    assert ei.value.field == "GRPC_XDS_BOOTSTRAP"
    assert "fix: point GRPC_XDS_BOOTSTRAP at an existing" in ei.value.reason


def test_invalid_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP", raising=False)
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", "{nope")
    with pytest.raises(BootstrapError) as ei:
        load_bootstrap()
    assert ei.value.source == "GRPC_XDS_BOOTSTRAP_CONFIG"
