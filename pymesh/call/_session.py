"""Stateful sessions with a cookie: Envoy's ``envoy.filters.http.stateful_session`` with
the cookie extension (``CookieBasedSessionState``), and gRPC's A55 override host.

A request whose path the cookie's ``path`` covers reads the cookie; its value names an
endpoint (an "override host"). If that endpoint is in the chosen cluster and usable
(its EDS health in the override statuses and not outlier-ejected), the request goes
there without load balancing; otherwise, normal load balancing (``strict``: a local 503
instead), and the response sets the cookie to the endpoint that answered.

Cookie values, as Envoy 1.40 writes and reads them: base64 of a small protobuf
(``envoy.Cookie``: ``address`` = "ip:port", ``expires`` = Unix seconds, 0 = never;
Envoy's source names its clock "monotonic", and 1.40 writes Unix time there) for
HTTP; for gRPC base64 of "ip:port;cluster" as grpcio writes it (A55's "ip:port" is read
too, and so does Envoy as its "old style"; the cluster part is not used for routing).
The Set-Cookie header is Envoy's: ``name="value"; Max-Age=ttl; Path=path; HttpOnly``
(Max-Age and Path only when set); gRPC's is ``name=value; HttpOnly; Path=path;
Max-Age=ttl`` in the response's initial metadata.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf import (  # type: ignore[import-untyped, unused-ignore]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

from pymesh.routing import RouteDecision

if TYPE_CHECKING:
    from pymesh._upstream import ClusterRuntime
from pymesh.xds.resources.endpoint import Endpoint
from pymesh.xds.resources.session import StatefulSession, StatefulSessionPerRoute


def _cookie_message() -> Any:
    """Envoy's internal ``envoy.Cookie`` message (source/extensions/http/stateful_session/
    cookie/cookie.proto, not part of the xDS API) in a private descriptor pool."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="pymesh/envoy_session_cookie.proto", package="envoy", syntax="proto3"
    )
    msg = fdp.message_type.add(name="Cookie")
    f = descriptor_pb2.FieldDescriptorProto
    msg.field.add(name="address", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    msg.field.add(name="expires", number=2, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("envoy.Cookie"))


_Cookie = _cookie_message()

#: EDS health statuses an override host may have (Envoy's default override_host_status:
#: UNKNOWN, HEALTHY, DEGRADED; gRPC A55 uses only HEALTHY and UNKNOWN endpoints).
HTTP_OVERRIDE_STATUSES = frozenset({"UNKNOWN", "HEALTHY", "DEGRADED"})
GRPC_OVERRIDE_STATUSES = frozenset({"UNKNOWN", "HEALTHY"})


@dataclass(frozen=True, slots=True)
class Session:
    """The session of one request: its config, and the endpoint its cookie names."""

    config: StatefulSession
    address: str | None  # "ip:port" from the cookie; None: no (valid) cookie


def session_config(
    decision: RouteDecision, filter_name: str | None, listener_config: StatefulSession | None
) -> StatefulSession | None:
    """The stateful session that applies to ``decision``: the most specific per-route
    override (weighted cluster, route, virtual host) of the filter named
    ``filter_name``, else the filter's own config; None when disabled or without a
    cookie (Envoy: no session state, the filter does nothing)."""
    if filter_name is None:
        return None
    config = listener_config
    cw = decision.cluster_weight
    levels = (
        cw.typed_per_filter_config if cw is not None else None,
        decision.route.typed_per_filter_config,
        decision.virtual_host.typed_per_filter_config,
    )
    for per_filter in levels:
        override = per_filter.get(filter_name) if per_filter else None
        if isinstance(override, StatefulSessionPerRoute):
            if override.disabled:
                return None
            config = override.session
            break
    if config is None or config.cookie is None:
        return None
    return config


def path_matches(cookie_path: str, request_path: str) -> bool:
    """Envoy's cookie path match: "" or "/" match all; a path ending in "/" is a prefix;
    else the request path equals it or continues with "/", "?" or "#"."""
    if cookie_path in ("", "/"):
        return True
    if not request_path.startswith(cookie_path):
        return False
    if cookie_path.endswith("/") or len(request_path) == len(cookie_path):
        return True
    return request_path[len(cookie_path)] in "/?#"


def cookie_value(headers: Iterable[tuple[str, str]], name: str) -> str:
    """The value of cookie ``name`` in the request's ``cookie`` headers ("" when absent),
    quotes removed (Envoy's Utility::parseCookieValue)."""
    for key, value in headers:
        if key.lower() != "cookie":
            continue
        for part in value.split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                v = v.strip()
                if len(v) >= 2 and v[0] == v[-1] == '"':
                    v = v[1:-1]
                return v
    return ""


def decode_address(value: str, now: float | None = None, *, grpc: bool = False) -> str | None:
    """The endpoint address a cookie value names, or None (undecodable, empty, or an
    expired protobuf cookie). ``now``: Unix seconds (default: the current time).

    HTTP follows Envoy: the value is first read as the protobuf, and only when that
    fails as "ip:port" (so, as in Envoy, an old-style value that happens to be valid
    protobuf wire format, such as "10.0.0.1:80", names nothing). gRPC follows A55: the
    value is base64 of "ip:port" (optionally ";cluster")."""
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if grpc:
        return _plain_address(raw)
    cookie = _Cookie()
    try:
        cookie.ParseFromString(raw)
        parsed = True
    except DecodeError:
        parsed = False
    if parsed:
        address = str(cookie.address)
        if not address:
            return None
        expires = int(cookie.expires)
        if expires and int(time.time() if now is None else now) > expires:
            return None
        return address
    return _plain_address(raw)


def _plain_address(raw: bytes) -> str | None:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    address = text.partition(";")[0]  # gRPC may append ";cluster"
    return address or None


def read_session(
    config: StatefulSession | None,
    path: str,
    headers: Iterable[tuple[str, str]],
    grpc: bool = False,
) -> Session | None:
    """The request's Session, or None when no session applies (no config, or the
    cookie's path does not cover ``path``). ``grpc``: read the cookie as A55's."""
    if config is None or config.cookie is None:
        return None
    if not path_matches(config.cookie.path, path.partition("?")[0]):
        return None
    value = cookie_value(headers, config.cookie.name)
    return Session(config, decode_address(value, grpc=grpc) if value else None)


def http_set_cookie(session: Session, address: str, now: float | None = None) -> str | None:
    """Envoy's Set-Cookie value after the request went to ``address``; None when the
    cookie already names it."""
    if session.address == address:
        return None
    cookie = session.config.cookie
    assert cookie is not None
    msg = _Cookie(address=address)
    ttl = int(cookie.ttl or 0)
    if ttl:
        msg.expires = int((time.time() if now is None else now) + ttl)
    value = base64.b64encode(msg.SerializeToString()).decode("ascii")
    out = f'{cookie.name}="{value}"'
    if ttl:
        out += f"; Max-Age={ttl}"
    if cookie.path:
        out += f"; Path={cookie.path}"
    for name, value in cookie.attributes:
        out += f"; {name}={value}" if value else f"; {name}"
    return out + "; HttpOnly"


def grpc_set_cookie(session: Session, address: str, cluster: str = "") -> str | None:
    """gRPC's set-cookie metadata value after the call went to ``address`` of the
    route's ``cluster``; None when the cookie already names that endpoint. The value is
    grpcio's (1.85): base64 of "ip:port;cluster" (A55's "ip:port" when no cluster)."""
    if session.address == address:
        return None
    cookie = session.config.cookie
    assert cookie is not None
    raw = f"{address};{cluster}" if cluster else address
    parts = [f"{cookie.name}={base64.b64encode(raw.encode()).decode('ascii')}", "HttpOnly"]
    if cookie.path:
        parts.append(f"Path={cookie.path}")
    ttl = int(cookie.ttl or 0)
    if ttl:
        parts.append(f"Max-Age={ttl}")
    return "; ".join(parts)


class OverridePicker:
    """Picks the session's endpoint (Envoy's override host: chosen before, and instead
    of, the load balancer, whatever the retry's host predicates); the cluster's drops
    still apply."""

    __slots__ = ("_base", "_endpoint", "has_drops")
    #: No zero-argument chooser (see Picker.direct): the override picks through pick().
    direct = None

    def __init__(self, endpoint: Endpoint, base: Any) -> None:
        self._endpoint = endpoint
        self._base = base
        self.has_drops: bool = bool(base is not None and base.has_drops)

    def pick(
        self,
        hash_key: int | None = None,
        exclude: Container[str] = frozenset(),
        *,
        host_selection_retry_max_attempts: int = 1,
    ) -> Endpoint | None:
        return self._endpoint

    def drop_category(self, random_value: float) -> str | None:
        if self._base is None:
            return None
        category: str | None = self._base.drop_category(random_value)
        return category


def override_endpoint(
    by_address: Mapping[str, Endpoint],
    ejected: Container[str],
    address: str,
    grpc: bool,
    statuses: frozenset[str] | None = None,
) -> Endpoint | None:
    """The cluster's endpoint at ``address`` when a session may be sent there: its EDS
    health among the override statuses (the cluster's ``override_host_status``, else
    the protocol's default) and not outlier-ejected."""
    ep = by_address.get(address)
    if ep is None or address in ejected:
        return None
    if statuses is None:
        statuses = GRPC_OVERRIDE_STATUSES if grpc else HTTP_OVERRIDE_STATUSES
    return ep if ep.health in statuses else None


def session_picker(
    rt: ClusterRuntime, address: str, base: Any, grpc: bool
) -> OverridePicker | None:
    """The picker that sends a request to its session's endpoint ``address`` in cluster
    ``rt`` (``base``: the picker it replaces, None for the cluster's own), or None when
    that endpoint may not take it (:func:`override_endpoint`: the cluster's override
    statuses, outlier ejection)."""
    outlier = rt.outlier
    cluster = rt.cluster
    ep = override_endpoint(
        rt.by_address,
        outlier.ejected if outlier is not None else frozenset(),
        address,
        grpc,
        cluster.override_host_status if cluster is not None else None,
    )
    if ep is None:
        return None
    return OverridePicker(ep, base if base is not None else rt.picker)
