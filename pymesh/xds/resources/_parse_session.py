"""StatefulSession / StatefulSessionPerRoute (cookie-based session state) → session.*."""

from __future__ import annotations

from typing import Any

from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2
from envoy.extensions.http.stateful_session.cookie.v3 import cookie_pb2

from pymesh.xds.resources._common import Ctx, join, opt_duration, type_name, unpack
from pymesh.xds.resources.session import (
    COOKIE_SESSION_STATE_TYPE,
    SessionCookie,
    StatefulSession,
    StatefulSessionPerRoute,
)

_SESSION_STATE = "envoy.config.core.v3.TypedExtensionConfig@session_state"


def stateful_session(ctx: Ctx, msg: Any, path: str) -> StatefulSession:
    """Parse a StatefulSession message (the filter's config or a per-route replacement)."""
    cookie = None
    if msg.HasField("session_state"):
        sp = join(path, "session_state")
        ext = msg.session_state
        ctx.check(ext, sp, _SESSION_STATE)
        tp = join(sp, "typed_config")
        tn = type_name(ext.typed_config.type_url)
        if tn != COOKIE_SESSION_STATE_TYPE:
            # gRPC A55: an unknown session state type makes the filter config invalid.
            ctx.fail(
                tp,
                f"session state type {tn or '<empty>'} is not supported; use "
                f"{COOKIE_SESSION_STATE_TYPE}",
            )
        state = unpack(ctx, ext.typed_config, cookie_pb2.CookieBasedSessionState, tp)
        ctx.check(state, tp)
        if not state.HasField("cookie") or not state.cookie.name:
            ctx.fail(join(tp, "cookie.name"), "the session cookie needs a name")
        cp = join(tp, "cookie")
        ctx.check(state.cookie, cp)
        attributes = []
        for i, attr in enumerate(state.cookie.attributes):
            ap = join(cp, f"attributes[{i}]")
            ctx.check(attr, ap)
            if not attr.name:
                ctx.fail(join(ap, "name"), "a cookie attribute needs a name")
            attributes.append((attr.name, attr.value))
        cookie = SessionCookie(
            name=state.cookie.name,
            path=state.cookie.path,
            ttl=opt_duration(ctx, state.cookie, "ttl", cp),
            attributes=tuple(attributes),
        )
    ctx.check(msg, path)
    return StatefulSession(cookie=cookie, strict=bool(msg.strict))


def stateful_session_from_any(ctx: Ctx, any_msg: Any, path: str) -> StatefulSession:
    msg = unpack(ctx, any_msg, stateful_session_pb2.StatefulSession, path)
    return stateful_session(ctx, msg, path)


def per_route_from_any(ctx: Ctx, any_msg: Any, path: str) -> StatefulSessionPerRoute:
    """A StatefulSessionPerRoute override in typed_per_filter_config."""
    msg = unpack(ctx, any_msg, stateful_session_pb2.StatefulSessionPerRoute, path)
    ctx.check(msg, path)
    if msg.WhichOneof("override") == "stateful_session":
        sp = join(path, "stateful_session")
        return StatefulSessionPerRoute(session=stateful_session(ctx, msg.stateful_session, sp))
    return StatefulSessionPerRoute(disabled=bool(msg.disabled))
