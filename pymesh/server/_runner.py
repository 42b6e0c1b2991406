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
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import grpc

from pymesh.errors import MeshError

__all__ = ["LoopServer", "PortInUseError"]

_log = logging.getLogger(__name__)

_START_TIMEOUT = 30.0
# SO_REUSEPORT off: with grpc's default, a second server on the same port starts silently
# and the kernel splits new connections between the two (each with its own config).
_OPTIONS: tuple[tuple[str, int], ...] = (("grpc.so_reuseport", 0),)
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
        # nothing is waiting for it any more. grpc stopped draining its queue at that
        # event; run the same callback again so completions queued behind it (ours, or
        # other live loops') do not wait for the next unrelated wake-up.
        _log.debug("dropped a grpc completion for a closed event loop: %s", context)
        handle = context.get("handle")
        callback = getattr(handle, "_callback", None)
        if callback is not None:
            loop.call_soon(callback, *getattr(handle, "_args", ()))
        return
    if isinstance(exc, OSError) and exc.errno == errno.EBADF:
        # grpc.aio shut its completion queue down (the process's last aio channel or
        # server went away) from another thread: it closes the socket this loop watches
        # and unhooks the reader, which races with a wake-up already queued here. The
        # queue is gone, so nothing is lost.
        _log.debug("grpc.aio completion queue closed under this loop: %s", context)
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


class PortInUseError(MeshError):
    """The control plane's port is already taken (by another ``pymesh serve`` or anything).

    ``host`` and ``port`` name the address; the message says how to pick another.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"cannot serve on {host}:{port}: the port is already in use (another "
            f"`pymesh serve`?); pick a free port with --port N, or --port 0 "
            f"(ControlPlane(port=0)) to let the OS choose one"
        )


def _probe(host: str, port: int) -> MeshError | None:
    """Bind ``host:port`` the way grpc will (SO_REUSEADDR, no SO_REUSEPORT) and say why
    that fails, if it does: grpc itself only reports "Failed to bind"."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        return MeshError(f"cannot serve on {host}:{port}: cannot resolve {host!r}: {e}")
    for family, kind, proto, _name, addr in infos:
        with socket.socket(family, kind, proto) as s:
            # As grpc does: a port whose old connections linger in TIME_WAIT is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return PortInUseError(host, port)
                return MeshError(f"cannot serve on {host}:{port}: {e.strerror or e}")
    return None


def _not_on_loop(loop: asyncio.AbstractEventLoop, what: str) -> None:
    # Waiting on the loop from its own thread would never return.
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if running is loop:
        raise RuntimeError(
            f"ControlPlane.{what}() blocks; call it from another thread, not from the "
            f"control plane's own event loop (e.g. via loop.run_in_executor)"
        )


def _bind_failure(host: str, port: int) -> MeshError:
    found = _probe(host, port) if port else None
    # Free again by now (the other server just exited): still report the bind failure.
    return found or MeshError(f"cannot serve on {host}:{port}: grpc could not bind it")


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

        Raises :class:`PortInUseError` when the port is taken (checked first, so grpc does
        not log its own bind error), MeshError for another bind failure.
        """
        if self._port:
            failure = _probe(self._host, self._port)
            if failure is not None:
                raise failure
        loop = shared_loop()
        _not_on_loop(loop, "start")
        started = asyncio.run_coroutine_threadsafe(self._start_server(loop), loop)
        port = started.result(_START_TIMEOUT)
        self._loop = loop
        return port

    async def _start_server(self, loop: asyncio.AbstractEventLoop) -> int:
        server = grpc.aio.server(options=_OPTIONS, maximum_concurrent_rpcs=self._max_rpcs)
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
        if loop is None or server is None:
            return
        _not_on_loop(loop, "stop")
        self._loop = self._server = None
        done = asyncio.run_coroutine_threadsafe(server.stop(grace), loop)
        try:
            done.result(max(5.0, (grace or 0) + 5.0))
        except concurrent.futures.TimeoutError:
            _log.warning("control plane on %s:%s did not stop in time", self._host, self._port)
