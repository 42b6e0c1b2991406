"""A grpc.aio server on its own event loop and thread, driven from synchronous code.

:class:`pymesh.server.ControlPlane` keeps a synchronous API (tests, ``pymesh serve``, the
demo) while its streams are coroutines: this runs the loop in one named daemon thread and
hands start/stop across with ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable

import grpc

from pymesh.errors import MeshError

__all__ = ["ServerThread"]

_log = logging.getLogger(__name__)

_START_TIMEOUT = 30.0


def _bind_failure(host: str, port: int) -> MeshError:
    return MeshError(f"cannot serve on {host}:{port}: grpc could not bind the address")


class ServerThread:
    """One ``grpc.aio.Server`` running on a private loop in the daemon thread ``name``.

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
        name: str = "pymesh-control-plane",
    ) -> None:
        self._setup = setup
        self._max_rpcs = maximum_concurrent_rpcs
        self._host, self._port = host, port
        self._credentials = credentials
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The server's event loop while running."""
        return self._loop

    def start(self) -> int:
        """Bind and serve; returns the bound port.

        Raises MeshError when the address cannot be bound.
        """
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._run, args=(loop, started), name=self._name, daemon=True
        )
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            return started.result(_START_TIMEOUT)
        except BaseException:
            thread.join(_START_TIMEOUT)
            self._loop = self._thread = None
            raise

    def _run(
        self, loop: asyncio.AbstractEventLoop, started: concurrent.futures.Future[int]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                port = loop.run_until_complete(self._start_server(loop))
            except BaseException as e:
                started.set_exception(e)
                return
            started.set_result(port)
            loop.run_forever()
        finally:
            _cancel_all(loop)
            loop.close()

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
        """Stop the server (ending every stream), then the loop; waits for both."""
        loop, thread, server = self._loop, self._thread, self._server
        self._loop = self._thread = self._server = None
        if loop is None or thread is None:
            return
        wait = max(5.0, (grace or 0) + 5.0)
        if server is not None and not loop.is_closed():
            done = asyncio.run_coroutine_threadsafe(server.stop(grace), loop)
            try:
                done.result(wait)
            except (concurrent.futures.TimeoutError, RuntimeError) as e:
                _log.warning("control plane did not stop cleanly: %s", e)
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(wait)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
