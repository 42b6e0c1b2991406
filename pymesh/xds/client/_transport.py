"""Building the ADS channel (server_uri + channel_creds) and the Node proto.

Credentials files are read when the client is constructed so that a bad bootstrap
fails early with a BootstrapError; the channel itself is created when the client starts.
It is a sync grpc channel, not a grpc.aio one: see pymesh/xds/client/_sync_stream.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2

from pymesh.bootstrap import Node, XdsServer
from pymesh.errors import BootstrapError

USER_AGENT_NAME = "pymesh"
_ACCEPTED_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:")

ChannelFactory = Callable[[], grpc.Channel]


def _grpc_target(uri: str, source: str, path: str) -> str:
    if "://" not in uri and ":" in uri and not uri.startswith(_ACCEPTED_SCHEMES):
        return uri  # host:port
    if uri.startswith(_ACCEPTED_SCHEMES):
        return uri
    raise BootstrapError(
        source,
        path,
        f"unsupported server_uri {uri!r}; use 'host:port', 'dns:///host:port' or 'unix:///path'",
    )


def _read(path: str, source: str, field: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise BootstrapError(source, field, f"cannot read {path!r}: {e.strerror or e}") from e


def channel_factory(
    server: XdsServer,
    *,
    source: str = "<bootstrap>",
    path: str = "xds_servers[0]",
    max_message_bytes: int = 4 * 1024 * 1024,
) -> ChannelFactory:
    """Validate ``server`` now and return a function creating its (sync) grpc channel.

    ``max_message_bytes`` is the largest ADS response the channel accepts.
    Raises BootstrapError for an unsupported URI or credentials, or unreadable files.
    """
    target = _grpc_target(server.server_uri, source, f"{path}.server_uri")
    creds = server.selected_creds
    options = [
        ("grpc.keepalive_time_ms", 300_000),
        ("grpc.primary_user_agent", USER_AGENT_NAME),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if creds.type == "insecure":
        return lambda: grpc.insecure_channel(target, options=options)
    if creds.type in ("google_default", "compute_engine"):
        google = _google_credentials(creds.type, source, f"{path}.channel_creds")
        return lambda: grpc.secure_channel(target, google, options=options)
    # tls (gRFC A65): optional CA bundle (else system roots) and optional client cert.
    cfg = creds.config
    field = f"{path}.channel_creds.config"
    root = (
        _read(cfg["ca_certificate_file"], source, field) if "ca_certificate_file" in cfg else None
    )
    key = _read(cfg["private_key_file"], source, field) if "private_key_file" in cfg else None
    chain = _read(cfg["certificate_file"], source, field) if "certificate_file" in cfg else None
    ssl = grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=chain
    )
    return lambda: grpc.secure_channel(target, ssl, options=options)


_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def _google_credentials(kind: str, source: str, field: str) -> grpc.ChannelCredentials:
    """gRPC's ``google_default`` / ``compute_engine`` channel creds: TLS (ALTS on GCE for
    compute_engine) plus OAuth tokens from Google's application default credentials.

    Resolved now, so a machine without them fails at construction with the fix named.
    """
    try:
        import google.auth  # type: ignore[import-untyped, import-not-found, unused-ignore]
        import google.auth.transport.grpc  # type: ignore[import-untyped, import-not-found, unused-ignore]
        import google.auth.transport.requests  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError as e:
        raise BootstrapError(
            source,
            field,
            f"{kind} credentials need google-auth ({e}); install pymesh with the gcp extra: "
            "pip install 'pymesh[gcp]'",
        ) from e
    try:
        credentials, _project = google.auth.default(scopes=[_CLOUD_PLATFORM])
    except google.auth.exceptions.DefaultCredentialsError as e:
        raise BootstrapError(
            source,
            field,
            f"{kind}: no Google application default credentials ({e}); run on GCP, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key file",
        ) from e
    plugin = google.auth.transport.grpc.AuthMetadataPlugin(
        credentials, google.auth.transport.requests.Request()
    )
    tokens = grpc.metadata_call_credentials(plugin)
    if kind == "compute_engine":
        return grpc.compute_engine_channel_credentials(tokens)
    return grpc.composite_channel_credentials(grpc.ssl_channel_credentials(), tokens)


def node_to_proto(node: Node) -> Any:
    """The bootstrap Node as an ``envoy.config.core.v3.Node`` message."""
    msg = base_pb2.Node(
        id=node.id,
        cluster=node.cluster,
        user_agent_name=USER_AGENT_NAME,
        user_agent_version=_version(),
    )
    msg.metadata.update(dict(node.metadata))
    msg.locality.region = node.locality.region
    msg.locality.zone = node.locality.zone
    msg.locality.sub_zone = node.locality.sub_zone
    return msg


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pymesh")
    except Exception:  # not installed as a distribution
        return "0"
