"""Stateful session (Envoy's ``envoy.filters.http.stateful_session`` with the cookie
extension, gRPC A55) → frozen dataclasses.

Parsed now, applied later: the override-host routing (send a request to the endpoint its
cookie names) waits for the call engine, so the field table classifies the filter's
fields as Warn and every use is a counted warning.
"""

from __future__ import annotations

from dataclasses import dataclass

STATEFUL_SESSION_TYPE = "envoy.extensions.filters.http.stateful_session.v3.StatefulSession"
STATEFUL_SESSION_PER_ROUTE_TYPE = (
    "envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute"
)
COOKIE_SESSION_STATE_TYPE = (
    "envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState"
)


@dataclass(frozen=True, slots=True)
class SessionCookie:
    """envoy.type.http.v3.Cookie: the cookie that names the session's endpoint."""

    name: str
    path: str = "/"
    ttl: float | None = None  # seconds; None: a session cookie


@dataclass(frozen=True, slots=True)
class StatefulSession:
    """envoy.extensions.filters.http.stateful_session.v3.StatefulSession.

    ``cookie`` None: no session state configured (the filter does nothing, as in Envoy).
    ``strict``: a request whose cookie names an unavailable endpoint fails (503) instead
    of falling back to load balancing.
    """

    cookie: SessionCookie | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class StatefulSessionPerRoute:
    """A per-route override: ``disabled``, or a replacement ``session``."""

    disabled: bool = False
    session: StatefulSession | None = None
