"""grpc.aio servers on one shared, long-lived event loop, driven from synchronous code.

:class:`pymesh.server.ControlPlane` keeps a synchronous API (tests, ``pymesh serve``, the
demo) while its streams are coroutines. Every control plane in the process runs on one
loop in one daemon thread, ``pymesh-control-plane``, started on first use and never
closed. Why never closed: grpc.aio shares one completion queue among all loops of the
process and hands a completion to its loop with ``call_soon_threadsafe``; a completion
that arrives after its loop was closed (a cancelled stream's last read, say) raises in
whichever other loop (e.g. a Mesh's xDS client) happens to dispatch it. A loop that stays
open just runs it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import grpc

from pymesh.errors import MeshError

__all__ = ["LoopServer"]

_log = logging.getLogger(__name__)

_START_TIMEOUT = 30.0
_lock = threading.Lock()
_shared: asyncio.AbstractEventLoop | None = None


def _forget_after_fork() -> None:
    # The child has no loop thread: it starts its own on first use.
    global _shared, _lock
    _shared, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
        # A grpc completion for another, already closed loop (see the module docstring):
        # nothing is waiting for it any more.
        _log.debug("dropped a grpc completion for a closed event loop: %s", context)
        return
    loop.default_exception_handler(context)


def shared_loop() -> asyncio.AbstractEventLoop:
    """The control planes' event loop (started on first use, lives as long as the process)."""
    global _shared
    with _lock:
        if _shared is None:
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(_on_loop_error)
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="pymesh-control-plane", daemon=True).start()
            started.wait()
            _shared = loop
        return _shared


def _bind_failure(host: str, port: int) -> MeshError:
    return MeshError(f"cannot serve on {host}:{port}: grpc could not bind the address")


class LoopServer:
    """One ``grpc.aio.Server`` on the shared control-plane loop.

    ``setup(server, loop)`` adds the servicers (on the loop's thread, before binding).
    """

    def __init__(
        self,
        setup: Callable[[grpc.aio.Server, asyncio.AbstractEventLoop], None],
        host: str,
        port: int,
        credentials: grpc.ServerCredentials | None = None,
        *,
        maximum_concurrent_rpcs: int | None = None,
    ) -> None:
        self._setup = setup
        self._max_rpcs = maximum_concurrent_rpcs
        self._host, self._port = host, port
        self._credentials = credentials
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: grpc.aio.Server | None = None

    def start(self) -> int:
        """Bind and serve; returns the bound port.

        Raises MeshError when the address cannot be bound.
        """
        loop = shared_loop()
        started = asyncio.run_coroutine_threadsafe(self._start_server(loop), loop)
        port = started.result(_START_TIMEOUT)
        self._loop = loop
        return port

    async def _start_server(self, loop: asyncio.AbstractEventLoop) -> int:
        server = grpc.aio.server(maximum_concurrent_rpcs=self._max_rpcs)
        self._setup(server, loop)
        bind = f"{self._host}:{self._port}"
        try:
            if self._credentials is None:
                port = server.add_insecure_port(bind)
            else:
                port = server.add_secure_port(bind, self._credentials)
        except RuntimeError:
            port = 0
        if port == 0:
            raise _bind_failure(self._host, self._port)
        await server.start()
        self._server = server
        return int(port)

    def stop(self, grace: float | None = 0) -> None:
        """Stop the server, ending every stream; waits until it has stopped."""
        loop, server = self._loop, self._server
        self._loop = self._server = None
        if loop is None or server is None:
            return
        done = asyncio.run_coroutine_threadsafe(server.stop(grace), loop)
        try:
            done.result(max(5.0, (grace or 0) + 5.0))
        except concurrent.futures.TimeoutError:
            _log.warning("control plane on %s:%s did not stop in time", self._host, self._port)
