"""gRPC A55: a stateful session's ``set-cookie`` in a call's initial metadata.

The engine (:mod:`pymesh.call._session`) sends a call whose ``cookie`` metadata names a
usable endpoint there; when it went elsewhere, the caller learns the new endpoint from a
``set-cookie`` entry added to the call's initial metadata (``with_call`` /
``initial_metadata()``), which it sends back as ``cookie`` metadata on later calls.
"""

from __future__ import annotations

from typing import Any

import grpc

from pymesh.call import Plan, Ticket
from pymesh.call._session import grpc_set_cookie


def session_cookie(plan: Plan, t: Ticket) -> str | None:
    """The set-cookie value for a call of ``plan`` answered by ``t``'s endpoint."""
    session = plan.session
    if session is None:
        return None
    return grpc_set_cookie(session, t.address, plan.cluster_name)


class CookieCall:
    """A sync grpc.Call (or future, or response stream) whose initial metadata carries
    ``set-cookie``."""

    def __init__(self, call: Any, cookie: str) -> None:
        self._call = call
        self._cookie = cookie

    def initial_metadata(self) -> tuple[Any, ...]:
        return (*(self._call.initial_metadata() or ()), ("set-cookie", self._cookie))

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return next(self._call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class AioCookieCall:
    """A grpc.aio call whose initial metadata carries ``set-cookie``."""

    def __init__(self, call: Any, cookie: str) -> None:
        self._call = call
        self._cookie = cookie

    async def initial_metadata(self) -> grpc.aio.Metadata:
        md = await self._call.initial_metadata()
        out = grpc.aio.Metadata(*(md or ()))
        out.add("set-cookie", self._cookie)
        return out

    def __await__(self) -> Any:
        return self._call.__await__()

    def __aiter__(self) -> Any:
        return self._call.__aiter__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)
