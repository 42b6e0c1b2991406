"""Stateful session with Envoy's cookie extension: parsed (not NACKed), and warned."""

from __future__ import annotations

from typing import Any

import pytest
from _resbuild import first_route, hcm, invalid, listener, route_config
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2 as ss_pb2
from envoy.extensions.http.stateful_session.cookie.v3 import cookie_pb2
from envoy.extensions.http.stateful_session.header.v3 import header_pb2

from pymesh.errors import ResourceInvalid
from pymesh.xds.resources import _warnings, parse_listener, parse_route_configuration
from pymesh.xds.resources.listener import ROUTER_TYPE
from pymesh.xds.resources.session import (
    STATEFUL_SESSION_TYPE,
    SessionCookie,
    StatefulSession,
    StatefulSessionPerRoute,
)

FILTER = "api_listener.api_listener.http_filters[0].typed_config"


def _session(name: str = "global-session", ttl_s: int | None = 120, path: str = "/") -> Any:
    state = cookie_pb2.CookieBasedSessionState()
    state.cookie.name = name
    state.cookie.path = path
    if ttl_s is not None:
        state.cookie.ttl.FromSeconds(ttl_s)
    s = ss_pb2.StatefulSession()
    s.session_state.name = "envoy.http.stateful_session.cookie"
    s.session_state.typed_config.Pack(state)
    return s


def _listener_with(session: Any) -> Any:
    h = hcm()
    router = h.http_filters.pop()
    h.http_filters.add(name="envoy.filters.http.stateful_session").typed_config.Pack(session)
    h.http_filters.append(router)
    return listener(h)


@pytest.fixture
def reported(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        _warnings, "report", lambda kind, name, path, note="": seen.append((path, note))
    )
    return seen


def test_cookie_session_filter_is_parsed_quietly(reported: list[tuple[str, str]]) -> None:
    out = parse_listener(_listener_with(_session(path="/api")))
    assert [f.type_name for f in out.http_filters] == [STATEFUL_SESSION_TYPE, ROUTER_TYPE]
    assert out.http_filters[0].config == StatefulSession(
        cookie=SessionCookie("global-session", "/api", 120.0)
    )
    # Honoured (pymesh.call._session): no warning.
    assert out.unsupported == ()
    assert reported == []


def test_strict_and_defaults(reported: list[tuple[str, str]]) -> None:
    s = _session(ttl_s=None, path="")
    s.strict = True
    out = parse_listener(_listener_with(s))
    assert out.http_filters[0].config == StatefulSession(
        cookie=SessionCookie("global-session", "", None), strict=True
    )
    assert out.unsupported == ()
    # No session_state: a filter that does nothing (as in Envoy).
    out = parse_listener(_listener_with(ss_pb2.StatefulSession()))
    assert out.http_filters[0].config == StatefulSession()


def test_bad_session_state_is_nacked() -> None:
    invalid(
        parse_listener,
        _listener_with(_session(name="")),
        f"{FILTER}.session_state.typed_config.cookie.name",
        reason="needs a name",
    )
    s = ss_pb2.StatefulSession()
    s.session_state.name = "envoy.http.stateful_session.header"
    s.session_state.typed_config.Pack(header_pb2.HeaderBasedSessionState(name="x-session"))
    invalid(
        parse_listener,
        _listener_with(s),
        f"{FILTER}.session_state.typed_config",
        reason="HeaderBasedSessionState is not supported",
    )


def test_per_route_override(reported: list[tuple[str, str]]) -> None:
    rc = route_config()
    route = first_route(rc)
    route.typed_per_filter_config["session"].Pack(ss_pb2.StatefulSessionPerRoute(disabled=True))
    vh = rc.virtual_hosts[0]
    override = ss_pb2.StatefulSessionPerRoute()
    override.stateful_session.CopyFrom(_session(name="vh-session"))
    wrapper = rc_pb2.FilterConfig()
    wrapper.config.Pack(override)
    vh.typed_per_filter_config["session"].Pack(wrapper)
    out = parse_route_configuration(rc)
    assert out.virtual_hosts[0].routes[0].typed_per_filter_config == {
        "session": StatefulSessionPerRoute(disabled=True)
    }
    assert out.virtual_hosts[0].typed_per_filter_config == {
        "session": StatefulSessionPerRoute(
            session=StatefulSession(cookie=SessionCookie("vh-session", "/", 120.0))
        )
    }
    assert out.unsupported == ()


def test_cookie_attributes_are_parsed_and_a_nameless_one_is_nacked(
    reported: list[tuple[str, str]],
) -> None:
    s = _session()
    state = cookie_pb2.CookieBasedSessionState()
    s.session_state.typed_config.Unpack(state)
    state.cookie.attributes.add(name="SameSite", value="Lax")
    state.cookie.attributes.add(name="Secure")
    s.session_state.typed_config.Pack(state)
    out = parse_listener(_listener_with(s))
    cookie = out.http_filters[0].config.cookie
    assert cookie.attributes == (("SameSite", "Lax"), ("Secure", ""))
    assert reported == []
    state.cookie.attributes.add(value="x")
    s.session_state.typed_config.Pack(state)
    with pytest.raises(ResourceInvalid, match=r"attributes\[2\]\.name"):
        parse_listener(_listener_with(s))
