"""Stateful session (Envoy's ``envoy.filters.http.stateful_session`` with the cookie
extension, gRPC A55) → frozen dataclasses.

Applied by the call engine (:mod:`pymesh.call._session`): a request goes to the endpoint
its cookie names when that one is in the cluster and usable, else it is load balanced
and the response sets the cookie.
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
    path: str = ""  # "" and "/" cover every request path; Set-Cookie has Path only if set
    ttl: float | None = None  # seconds; None: a session cookie
    #: Extra Set-Cookie attributes (name, value; value "" for a bare one like Secure).
    attributes: tuple[tuple[str, str], ...] = ()


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
