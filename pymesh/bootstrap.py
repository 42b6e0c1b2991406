"""gRPC's xDS bootstrap format → a frozen :class:`Bootstrap`.

The format is gRPC's, unchanged (so a file written by istio-agent or for grpcio loads
as is): ``xds_servers``, ``node``, ``certificate_providers``, ``authorities`` (gRFC A47),
``client_default_listener_resource_name_template`` and
``server_listener_resource_name_template``. Unknown top-level fields are ignored, as
gRPC ignores them. Every validation error is a :class:`~pymesh.errors.BootstrapError`
naming the source, the dotted field path and the fix.

This module is pure data: no protobuf (the Node → proto conversion lives in
``pymesh.xds.client``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from pymesh.errors import BootstrapError

__all__ = [
    "ENV_BOOTSTRAP_CONFIG",
    "ENV_BOOTSTRAP_PATH",
    "SUPPORTED_CHANNEL_CREDS",
    "Authority",
    "Bootstrap",
    "CertificateProviderConfig",
    "ChannelCreds",
    "Locality",
    "Node",
    "XdsServer",
    "load_bootstrap",
]

ENV_BOOTSTRAP_PATH = "GRPC_XDS_BOOTSTRAP"
ENV_BOOTSTRAP_CONFIG = "GRPC_XDS_BOOTSTRAP_CONFIG"

#: Channel credential types pymesh can build, in gRPC's spelling.
SUPPORTED_CHANNEL_CREDS = ("insecure", "tls", "google_default", "compute_engine")

_SERVER_FEATURE_IGNORE_RESOURCE_DELETION = "ignore_resource_deletion"
#: pymesh's own server feature: speak incremental (delta) ADS to this server. gRPC
#: ignores server features it does not know, so the same bootstrap still works there.
_SERVER_FEATURE_DELTA = "xds_delta"
_SERVER_FEATURE_FAIL_ON_DATA_ERRORS = "fail_on_data_errors"
_LISTENER_TYPE_NAME = "envoy.config.listener.v3.Listener"
# RFC 3986 pchar minus '%': what gRPC leaves unescaped when it percent-encodes a path.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ChannelCreds:
    """One ``channel_creds`` entry: ``type`` (insecure, tls) and its optional ``config``."""

    type: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class XdsServer:
    """One management server: URI, the chosen credentials and the server features."""

    server_uri: str
    channel_creds: tuple[ChannelCreds, ...]
    server_features: frozenset[str] = frozenset()

    @property
    def ignore_resource_deletion(self) -> bool:
        """gRFC A53: keep resources the server stops sending instead of deleting them."""
        return _SERVER_FEATURE_IGNORE_RESOURCE_DELETION in self.server_features

    @property
    def fail_on_data_errors(self) -> bool:
        """gRFC A88: a NACKed (or PERMISSION_DENIED) update of a cached resource drops
        the cached value instead of keeping it serving."""
        return _SERVER_FEATURE_FAIL_ON_DATA_ERRORS in self.server_features

    @property
    def delta(self) -> bool:
        """Use incremental (delta) ADS with this server (server feature ``xds_delta``)."""
        return _SERVER_FEATURE_DELTA in self.server_features

    @property
    def selected_creds(self) -> ChannelCreds:
        """The first supported credentials entry (validated at load time)."""
        for creds in self.channel_creds:
            if creds.type in SUPPORTED_CHANNEL_CREDS:
                return creds
        raise BootstrapError("<XdsServer>", "channel_creds", _no_creds_reason(self.channel_creds))


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""


@dataclass(frozen=True, slots=True)
class Node:
    """The node identity sent to the management server (``metadata`` is any JSON object)."""

    id: str = ""
    cluster: str = ""
    locality: Locality = Locality()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CertificateProviderConfig:
    """A ``certificate_providers`` entry, e.g. plugin ``file_watcher`` and its config."""

    plugin_name: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Authority:
    """gRFC A47 authority: its own servers (empty → the top-level ones) and template."""

    xds_servers: tuple[XdsServer, ...] = ()
    client_listener_resource_name_template: str = ""


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """A validated bootstrap. ``source`` names where it came from (path, env var, dict)."""

    xds_servers: tuple[XdsServer, ...]
    node: Node
    certificate_providers: Mapping[str, CertificateProviderConfig] = field(default_factory=dict)
    authorities: Mapping[str, Authority] = field(default_factory=dict)
    client_default_listener_resource_name_template: str = "%s"
    server_listener_resource_name_template: str = ""
    source: str = "<dict>"

    def listener_resource_name(self, authority: str, *, xds_authority: str | None = None) -> str:
        """The LDS resource name for a target ``authority`` (``host`` or ``host:port``).

        ``xds_authority`` is the authority of an ``xds://<xds_authority>/target`` URI
        (gRFC A47); None uses ``client_default_listener_resource_name_template``.
        For ``xdstp:`` templates the target is percent-encoded, as gRPC does.
        """
        if xds_authority is None:
            template = self.client_default_listener_resource_name_template
        else:
            auth = self.authorities.get(xds_authority)
            if auth is None:
                raise BootstrapError(
                    self.source,
                    f"authorities[{xds_authority!r}]",
                    "authority not in the bootstrap; add it under 'authorities'",
                )
            template = auth.client_listener_resource_name_template or (
                f"xdstp://{xds_authority}/{_LISTENER_TYPE_NAME}/%s"
            )
        target = authority
        if template.startswith("xdstp:"):
            target = quote(target, safe=_PATH_SAFE)
        return template.replace("%s", target)

    def servers_for(self, resource_name: str) -> tuple[XdsServer, ...]:
        """The servers for a resource: its xdstp authority's servers, else the top-level."""
        if resource_name.startswith("xdstp://"):
            name = resource_name[len("xdstp://") :].split("/", 1)[0]
            auth = self.authorities.get(name)
            if auth is not None and auth.xds_servers:
                return auth.xds_servers
        return self.xds_servers


def load_bootstrap(source: str | os.PathLike[str] | Mapping[str, Any] | None = None) -> Bootstrap:
    """Load and validate a bootstrap.

    ``source`` is a file path, a mapping (already-parsed JSON), or None: then the file
    named by ``GRPC_XDS_BOOTSTRAP``, else the JSON in ``GRPC_XDS_BOOTSTRAP_CONFIG``.
    Raises :class:`~pymesh.errors.BootstrapError`.
    """
    if source is None:
        path = os.environ.get(ENV_BOOTSTRAP_PATH)
        if path:
            return _load_file(path, named_by=ENV_BOOTSTRAP_PATH)
        text = os.environ.get(ENV_BOOTSTRAP_CONFIG)
        if text:
            return _parse(_decode_json(text, ENV_BOOTSTRAP_CONFIG), ENV_BOOTSTRAP_CONFIG)
        raise BootstrapError(
            "<environment>",
            ENV_BOOTSTRAP_PATH,
            f"neither {ENV_BOOTSTRAP_PATH} (a file path) nor {ENV_BOOTSTRAP_CONFIG} (JSON) "
            f"is set; fix: set {ENV_BOOTSTRAP_PATH} to a bootstrap file ({_WHERE_FROM}), "
            "or pass the bootstrap explicitly",
        )
    if isinstance(source, Mapping):
        return _parse(source, "<dict>")
    return _load_file(os.fspath(source), named_by="bootstrap")


# Where a bootstrap file comes from, for the fix of "no bootstrap" errors.
_WHERE_FROM = (
    "`pymesh serve mesh.yaml --bootstrap-out FILE` writes one for a local control plane; "
    "istio-agent writes one for proxyless clients; docs/configuration.md shows the format"
)


def _load_file(path: str, *, named_by: str) -> Bootstrap:
    """Read and parse the file at ``path``; ``named_by`` is the setting that named it
    (the environment variable or the ``bootstrap`` argument/flag), which is what a
    user fixes when the file cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        setting = (
            named_by
            if named_by == ENV_BOOTSTRAP_PATH
            else "the bootstrap argument (pymesh.Mesh(bootstrap=...), pymesh ... --bootstrap)"
        )
        raise BootstrapError(
            path,
            named_by,
            f"cannot read the file{where}: {e.strerror or e}; fix: point {setting} at an "
            f"existing, readable bootstrap file ({_WHERE_FROM})",
        ) from e
    except UnicodeDecodeError as e:
        raise BootstrapError(
            path, named_by, f"not UTF-8 text ({e.reason}); fix: save the bootstrap as UTF-8 JSON"
        ) from e
    return _parse(_decode_json(text, path), path)


def _decode_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        field_path = _json_path_at(text, e.pos)
        if not text.strip():
            raise BootstrapError(
                source,
                field_path,
                'is empty; fix: write a JSON object with at least "xds_servers" '
                "(docs/configuration.md shows one)",
            ) from e
        raise BootstrapError(
            source,
            field_path,
            f"not valid JSON at line {e.lineno} column {e.colno}, in or just after this "
            f"field: {e.msg}; fix: correct the JSON there (a trailing comma, a missing "
            "comma or an unquoted name is the usual cause)",
        ) from e


def _json_path_at(text: str, pos: int) -> str:
    """The dotted path (``xds_servers[0].channel_creds``) of the JSON value being read at
    ``pos``: what a syntax error is "in". Top-level errors name ``xds_servers``, the
    field every bootstrap must have, so the message always names a real field."""
    frames: list[list[Any]] = []  # ["obj", key or None] / ["arr", index]
    last_string: str | None = None
    i = 0
    while i < pos:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            last_string = text[i + 1 : j]
            i = j + 1
            continue
        if c == "{":
            frames.append(["obj", None])
        elif c == "[":
            frames.append(["arr", 0])
        elif c in "}]" and frames:
            frames.pop()
        elif c == ":" and frames and frames[-1][0] == "obj":
            frames[-1][1] = last_string
        elif c == "," and frames and frames[-1][0] == "arr":
            frames[-1][1] += 1
        i += 1
    if frames and frames[0][0] == "arr":
        return "xds_servers"  # not an object at all: no field of ours is being read
    path = ""
    for kind, value in frames:
        if kind == "arr":
            path += f"[{value}]"
        elif value is not None:
            path += f".{value}" if path else value
    return path or "xds_servers"


def _parse(data: Any, source: str) -> Bootstrap:
    if not isinstance(data, Mapping):
        raise BootstrapError(
            source,
            "xds_servers",
            f"the bootstrap must be a JSON object holding this field, got {_kind(data)}; "
            'fix: write {"xds_servers": [...], "node": {...}} (docs/configuration.md)',
        )
    v = _Validator(source)
    servers = v.servers(data.get("xds_servers"), "xds_servers", required=True)
    node = v.node(data.get("node"))
    providers = v.cert_providers(data.get("certificate_providers"))
    default_tpl = v.opt_str(
        data, "client_default_listener_resource_name_template", "", default="%s"
    )
    server_tpl = v.opt_str(data, "server_listener_resource_name_template", "", default="")
    authorities = v.authorities(data.get("authorities"))
    return Bootstrap(
        xds_servers=servers,
        node=node,
        certificate_providers=MappingProxyType(providers),
        authorities=MappingProxyType(authorities),
        client_default_listener_resource_name_template=default_tpl,
        server_listener_resource_name_template=server_tpl,
        source=source,
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _no_creds_reason(creds: tuple[ChannelCreds, ...]) -> str:
    got = ", ".join(c.type for c in creds) or "none"
    return (
        f"no supported channel creds type (got: {got}); supported: "
        f"{', '.join(SUPPORTED_CHANNEL_CREDS)}; "
        'add e.g. {"type": "insecure"}'
    )


class _Validator:
    """Walks the JSON, building dataclasses; raises BootstrapError with a dotted path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, reason: str) -> BootstrapError:
        return BootstrapError(self.source, path, reason)

    def obj(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a JSON object, got {_kind(value)}")
        return value

    def opt_str(self, obj: Mapping[str, Any], key: str, path: str, *, default: str) -> str:
        value = obj.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            where = f"{path}.{key}" if path else key
            raise self.fail(where, f"must be a string, got {_kind(value)}")
        return value

    def servers(self, value: Any, path: str, *, required: bool) -> tuple[XdsServer, ...]:
        if value is None:
            if required:
                raise self.fail(path, 'missing; add at least one {"server_uri": ...} entry')
            return ()
        if not isinstance(value, list):
            raise self.fail(path, f"must be a JSON array, got {_kind(value)}")
        if not value and required:
            raise self.fail(path, "is empty; add at least one management server")
        return tuple(self.server(s, f"{path}[{i}]") for i, s in enumerate(value))

    def server(self, value: Any, path: str) -> XdsServer:
        obj = self.obj(value, path)
        uri = obj.get("server_uri")
        if not isinstance(uri, str) or not uri:
            raise self.fail(
                f"{path}.server_uri",
                "missing or not a non-empty string; e.g. 'localhost:15010' or "
                "'unix:///etc/istio/proxy/XDS'",
            )
        creds = self.channel_creds(obj.get("channel_creds"), f"{path}.channel_creds")
        features = obj.get("server_features", [])
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise self.fail(f"{path}.server_features", "must be an array of strings")
        return XdsServer(server_uri=uri, channel_creds=creds, server_features=frozenset(features))

    def channel_creds(self, value: Any, path: str) -> tuple[ChannelCreds, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(
                path, 'missing or empty; add e.g. [{"type": "insecure"}] or [{"type": "tls"}]'
            )
        creds: list[ChannelCreds] = []
        for i, entry in enumerate(value):
            obj = self.obj(entry, f"{path}[{i}]")
            ctype = obj.get("type")
            if not isinstance(ctype, str) or not ctype:
                raise self.fail(f"{path}[{i}].type", "missing or not a non-empty string")
            config = obj.get("config", {})
            if not isinstance(config, Mapping):
                raise self.fail(f"{path}[{i}].config", f"must be an object, got {_kind(config)}")
            if ctype == "tls":
                for key in ("ca_certificate_file", "certificate_file", "private_key_file"):
                    if key in config and not isinstance(config[key], str):
                        raise self.fail(f"{path}[{i}].config.{key}", "must be a file path string")
                if ("certificate_file" in config) != ("private_key_file" in config):
                    raise self.fail(
                        f"{path}[{i}].config",
                        "certificate_file and private_key_file must be set together",
                    )
            creds.append(ChannelCreds(type=ctype, config=MappingProxyType(dict(config))))
        result = tuple(creds)
        if not any(c.type in SUPPORTED_CHANNEL_CREDS for c in result):
            raise self.fail(path, _no_creds_reason(result))
        return result

    def node(self, value: Any) -> Node:
        if value is None:
            return Node()
        obj = self.obj(value, "node")
        loc_value = obj.get("locality")
        locality = Locality()
        if loc_value is not None:
            loc = self.obj(loc_value, "node.locality")
            locality = Locality(
                region=self.opt_str(loc, "region", "node.locality", default=""),
                zone=self.opt_str(loc, "zone", "node.locality", default=""),
                sub_zone=self.opt_str(loc, "sub_zone", "node.locality", default=""),
            )
        metadata = obj.get("metadata", {})
        if not isinstance(metadata, Mapping):
            raise self.fail("node.metadata", f"must be a JSON object, got {_kind(metadata)}")
        return Node(
            id=self.opt_str(obj, "id", "node", default=""),
            cluster=self.opt_str(obj, "cluster", "node", default=""),
            locality=locality,
            metadata=MappingProxyType(dict(metadata)),
        )

    def cert_providers(self, value: Any) -> dict[str, CertificateProviderConfig]:
        if value is None:
            return {}
        obj = self.obj(value, "certificate_providers")
        out: dict[str, CertificateProviderConfig] = {}
        for name, entry in obj.items():
            path = f"certificate_providers.{name}"
            e = self.obj(entry, path)
            plugin = e.get("plugin_name")
            if not isinstance(plugin, str) or not plugin:
                raise self.fail(
                    f"{path}.plugin_name", "missing or not a string; e.g. 'file_watcher'"
                )
            config = e.get("config", {})
            if not isinstance(config, Mapping):
                raise self.fail(f"{path}.config", f"must be a JSON object, got {_kind(config)}")
            out[name] = CertificateProviderConfig(plugin, MappingProxyType(dict(config)))
        return out

    def authorities(self, value: Any) -> dict[str, Authority]:
        if value is None:
            return {}
        obj = self.obj(value, "authorities")
        out: dict[str, Authority] = {}
        for name, entry in obj.items():
            path = f"authorities.{name}"
            e = self.obj(entry, path)
            servers = self.servers(e.get("xds_servers"), f"{path}.xds_servers", required=False)
            tpl = self.opt_str(e, "client_listener_resource_name_template", path, default="")
            prefix = f"xdstp://{name}/"
            if tpl and not tpl.startswith(prefix):
                raise self.fail(
                    f"{path}.client_listener_resource_name_template",
                    f"must start with {prefix!r} (gRFC A47)",
                )
            out[name] = Authority(servers, tpl)
        return out
