"""Stateful session cookies (pymesh.call._session): Envoy's and gRPC A55's formats."""

from __future__ import annotations

import base64

import pytest

from pymesh.call._session import (
    Session,
    cookie_value,
    decode_address,
    grpc_set_cookie,
    http_set_cookie,
    override_endpoint,
    path_matches,
    read_session,
)
from pymesh.xds.resources.endpoint import Endpoint
from pymesh.xds.resources.session import SessionCookie, StatefulSession

# Envoy 1.40's own Set-Cookie value for 127.0.0.1:33079 (ttl 120 s), copied from a run.
ENVOY_COOKIE = "Cg8xMjcuMC4wLjE6MzMwNzkQ/JvS2AY="
ENVOY_EXPIRES = 1796509180


@pytest.mark.parametrize(
    ("cookie_path", "request_path", "expected"),
    [
        ("", "/x", True),
        ("/", "/anything", True),
        ("/api", "/api", True),
        ("/api", "/api/v1", True),
        ("/api", "/api?q=1", True),
        ("/api", "/apix", False),
        ("/api/", "/api/x", True),
        ("/api/", "/api", False),
        ("/api", "/other", False),
    ],
)
def test_envoy_path_match(cookie_path: str, request_path: str, expected: bool) -> None:
    assert path_matches(cookie_path, request_path) is expected


def test_cookie_value_finds_the_named_cookie_and_strips_quotes() -> None:
    headers = [("Cookie", 'a=1; s="abc=="; b=2'), ("cookie", "s=zzz")]
    assert cookie_value(headers, "s") == "abc=="
    assert cookie_value(headers, "b") == "2"
    assert cookie_value(headers, "missing") == ""


def test_envoy_proto_cookie_decodes_until_it_expires() -> None:
    assert decode_address(ENVOY_COOKIE, now=ENVOY_EXPIRES - 1) == "127.0.0.1:33079"
    assert decode_address(ENVOY_COOKIE, now=ENVOY_EXPIRES + 1) is None


def test_old_style_and_grpc_cookies_decode() -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    assert decode_address(b64("127.0.0.1:33079")) == "127.0.0.1:33079"
    # Envoy reads the protobuf first: "10.0.0.1:80" is valid wire format (unknown
    # fields, no address), so Envoy, and pymesh for HTTP, find no address in it.
    assert decode_address(b64("10.0.0.1:80")) is None
    # gRPC (A55): base64 of the address, maybe with ";cluster".
    assert decode_address(b64("10.0.0.1:80"), grpc=True) == "10.0.0.1:80"
    assert decode_address(b64("10.0.0.1:80;cluster-a"), grpc=True) == "10.0.0.1:80"
    assert decode_address("!!not base64!!") is None
    assert decode_address("") is None


def _session(path: str = "/", ttl: float | None = 120.0, address: str | None = None) -> Session:
    return Session(StatefulSession(SessionCookie("s", path, ttl)), address)


def test_http_set_cookie_is_envoys_format_and_round_trips() -> None:
    value = http_set_cookie(_session(), "127.0.0.1:33079", now=ENVOY_EXPIRES - 120)
    # Byte for byte what Envoy 1.40 wrote for the same address and expiry.
    assert value == f's="{ENVOY_COOKIE}"; Max-Age=120; Path=/; HttpOnly'
    assert http_set_cookie(_session(address="127.0.0.1:1"), "127.0.0.1:1") is None
    bare = http_set_cookie(_session(path="", ttl=None), "10.0.0.1:80")
    assert bare is not None and bare.endswith('"; HttpOnly') and "Max-Age" not in bare
    token = bare.split('"')[1]
    assert decode_address(token) == "10.0.0.1:80"  # no expiry: valid forever


def test_grpc_set_cookie_is_grpcios_format() -> None:
    value = grpc_set_cookie(_session(path="/svc", ttl=60.0), "10.0.0.1:80", "outbound|50051||x")
    token = base64.b64encode(b"10.0.0.1:80;outbound|50051||x").decode()
    assert value == f"s={token}; HttpOnly; Path=/svc; Max-Age=60"
    bare = grpc_set_cookie(_session(path="", ttl=None), "10.0.0.1:80")
    assert bare == f"s={base64.b64encode(b'10.0.0.1:80').decode()}; HttpOnly"
    assert grpc_set_cookie(_session(address="10.0.0.1:80"), "10.0.0.1:80") is None


def test_read_session_only_where_the_cookie_path_applies() -> None:
    config = StatefulSession(SessionCookie("s", "/api", None))
    token = base64.b64encode(b"10.0.0.1:80").decode()
    got = read_session(config, "/api/x?y", [("cookie", f"s={token}")], grpc=True)
    assert got == Session(config, "10.0.0.1:80")
    assert read_session(config, "/web", [("cookie", f"s={token}")]) is None
    assert read_session(config, "/api", []) == Session(config, None)
    assert read_session(None, "/api", []) is None


def test_override_endpoint_statuses_and_ejection() -> None:
    eps = {
        e.address: e
        for e in (
            Endpoint("10.0.0.1", 80),
            Endpoint("10.0.0.2", 80, health="DEGRADED"),
            Endpoint("10.0.0.3", 80, health="UNHEALTHY"),
        )
    }
    assert override_endpoint(eps, (), "10.0.0.1:80", grpc=False) is not None
    assert override_endpoint(eps, (), "10.0.0.2:80", grpc=False) is not None  # Envoy
    assert override_endpoint(eps, (), "10.0.0.2:80", grpc=True) is None  # gRPC
    assert override_endpoint(eps, (), "10.0.0.3:80", grpc=False) is None
    assert override_endpoint(eps, {"10.0.0.1:80"}, "10.0.0.1:80", grpc=False) is None
    assert override_endpoint(eps, (), "10.0.0.9:80", grpc=False) is None


def test_cookie_attributes_follow_path_as_envoy() -> None:
    cookie = SessionCookie("s", "/", 60.0, (("SameSite", "Strict"), ("Secure", "")))
    value = http_set_cookie(Session(StatefulSession(cookie), None), "10.0.0.1:80", now=0)
    assert value is not None
    assert value.endswith("; Max-Age=60; Path=/; SameSite=Strict; Secure; HttpOnly")


def test_the_clusters_override_host_status_replaces_the_default() -> None:
    eps = {"10.0.0.2:80": Endpoint("10.0.0.2", 80, health="DEGRADED")}
    healthy_only = frozenset({"HEALTHY"})
    assert override_endpoint(eps, (), "10.0.0.2:80", False, healthy_only) is None
    degraded_ok = frozenset({"DEGRADED"})
    assert override_endpoint(eps, (), "10.0.0.2:80", True, degraded_ok) is not None
