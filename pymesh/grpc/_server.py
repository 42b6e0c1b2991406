"""xDS-driven gRPC servers (gRFC A36), sync and asyncio: ``pymesh.grpc.server`` and
``pymesh.grpc.aio.server``.

The application registers servicers as usual and adds ports; an xDS port
(:meth:`XdsServer.add_xds_port`) takes its transport security from the Listener's
DownstreamTlsContext, a port added with ``add_insecure_port`` / ``add_secure_port`` keeps
the credentials given (as grpcio's own xDS server honours non-xDS credentials), and every
port serves only while its Listener is valid. Each call passes
:func:`~pymesh.grpc._xds_server.authorize` (filter chain, SAN matchers, route with
``non_forwarding_action``) in a server interceptor placed before the application's.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from pymesh._mesh import Mesh
from pymesh.errors import MeshError
from pymesh.grpc._xds_server import (
    Denied,
    ServingConfig,
    ServingModeCallback,
    XdsPort,
    authorize,
    server_credentials,
)
from pymesh.xds.resources.server_listener import DownstreamTls

log = logging.getLogger("pymesh.grpc.server")

__all__ = ["AioXdsServer", "ServerSettings", "XdsServer"]

#: A36's default drain grace time is 10 minutes; in-flight calls on a grpcio server that
#: is replaced or stopped get this long.
DEFAULT_DRAIN_GRACE = 600.0


def _authority(context: Any) -> str:
    """The call's ``:authority`` where grpcio exposes it (sync servers); else ``""``,
    which only wildcard (``*``) virtual hosts match."""
    event = getattr(context, "_rpc_event", None)
    host = getattr(getattr(event, "call_details", None), "host", None)
    if isinstance(host, bytes):
        return host.decode("ascii", "replace")
    return host if isinstance(host, str) else ""


@dataclass(eq=False)
class _Port:
    xds: XdsPort
    #: None: security from xDS; else fixed credentials given by the application.
    credentials: grpc.ServerCredentials | None
    insecure: bool = False
    server: Any = None  # the grpcio server bound to the port now
    key: object = None  # the security it was bound with
    #: Replaced or unbound grpcio servers still draining (stop() shortens their grace).
    draining: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class ServerSettings:
    """What :func:`pymesh.grpc.server` and :func:`pymesh.grpc.aio.server` take besides
    the mesh (and the sync server's thread pool): the same for both, replayed on every
    grpcio server a port binds."""

    handlers: Sequence[Any] | None = None
    interceptors: Sequence[Any] | None = None
    options: Sequence[tuple[str, Any]] | None = None
    maximum_concurrent_rpcs: int | None = None
    compression: grpc.Compression | None = None
    on_serving_mode: ServingModeCallback | None = None
    drain_grace: float = DEFAULT_DRAIN_GRACE


class _Base:
    def __init__(self, mesh: Mesh, settings: ServerSettings) -> None:
        self.mesh = mesh
        self._interceptors = list(settings.interceptors or ())
        self._options = list(settings.options or ())
        self._max_rpcs = settings.maximum_concurrent_rpcs
        self._compression = settings.compression
        self._on_serving_mode = settings.on_serving_mode
        self.drain_grace = settings.drain_grace
        self._generic: list[Any] = []
        self._registered: list[tuple[str, Any]] = []
        self._ports: list[_Port] = []
        self._started = False
        self._stopped = False
        if settings.handlers:
            self.add_generic_rpc_handlers(settings.handlers)

    def __repr__(self) -> str:
        ports = ", ".join(repr(p.xds) for p in self._ports)
        return f"<{type(self).__name__} [{ports}]>"

    # -- what the application registers, replayed on every grpcio server -------------
    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[Any]) -> None:
        self._generic.extend(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        self._registered.append((service_name, method_handlers))

    def _add(self, address: str, credentials: grpc.ServerCredentials | None, insecure: bool) -> int:
        if self._started:
            raise MeshError("add ports before start()")
        holder: list[_Port] = []
        xds = XdsPort(
            self.mesh, address, lambda cfg: self._changed(holder[0], cfg), self._on_serving_mode
        )
        port = _Port(xds, credentials, insecure)
        holder.append(port)
        self._ports.append(port)
        return xds.port

    def add_xds_port(self, address: str) -> int:
        """Listen on ``address`` (``IP:PORT``, port 0 picks one) with the transport
        security of the Listener's filter chains (DownstreamTlsContext: certificates from
        the bootstrap's certificate providers, rotated without dropping calls; plaintext
        when the chains have none). Returns the port."""
        return self._add(address, None, False)

    def add_insecure_port(self, address: str) -> int:
        """An xDS-governed port (serving state, routes) that stays plaintext whatever
        the Listener's TLS says. Returns the port."""
        return self._add(address, None, True)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        """An xDS-governed port with fixed ``server_credentials``. Returns the port."""
        return self._add(address, server_credentials, False)

    @property
    def ports(self) -> list[XdsPort]:
        """The xDS ports (their ``config`` is None while not serving)."""
        return [p.xds for p in self._ports]

    @staticmethod
    def _key(port: _Port, cfg: ServingConfig) -> object:
        """What grpcio fixes when binding: a new key means a new grpcio server."""
        if port.insecure:
            return "insecure"
        if port.credentials is not None:
            return "fixed"
        return cfg.security

    def _credentials(self, port: _Port, key: object) -> grpc.ServerCredentials | None:
        if port.insecure:
            return None
        if port.credentials is not None:
            return port.credentials
        if key is None:
            return None
        assert isinstance(key, DownstreamTls)
        return server_credentials(self.mesh, key)

    def _watch(self) -> None:
        self._started = True
        for p in self._ports:
            p.xds.start()

    def _changed(self, port: _Port, cfg: ServingConfig | None) -> None:
        raise NotImplementedError

    def _apply_steps(
        self, port: _Port, cfg: ServingConfig | None
    ) -> Generator[grpc.ServerCredentials | None, Any, None]:
        """The port's move to ``cfg``, for both servers: it yields the credentials when
        a new grpcio server must be bound and is sent that server (or thrown why it could
        not be bound); the caller binds it, synchronously or on its loop."""
        old = port.server
        if cfg is None:
            port.server, port.key = None, None
        else:
            key = self._key(port, cfg)
            if old is not None and port.key == key:
                # Same transport security: the new config is already published.
                port.xds.mark_serving(cfg)
                return
            try:
                creds = self._credentials(port, key)
                port.server, port.key = (yield creds), key
                port.xds.mark_serving(cfg)
            except Exception as e:  # grpcio could not bind or start: say so, keep going
                port.server, port.key = None, None
                _bind_failed(port, e)
        if old is not None:
            self._drain(old)
            port.draining = [*port.draining[-7:], old]

    def _drain(self, server: Any) -> None:
        raise NotImplementedError

    def _server_kwargs(self, interceptor: Any) -> dict[str, Any]:
        """grpcio server arguments: pymesh's interceptor runs before the application's."""
        return {
            "interceptors": [interceptor, *self._interceptors],
            "options": self._options,
            "maximum_concurrent_rpcs": self._max_rpcs,
            "compression": self._compression,
        }

    def _add_to(self, server: Any, port: _Port, creds: grpc.ServerCredentials | None) -> None:
        """Give a new grpcio server the application's handlers and the port."""
        if self._generic:
            server.add_generic_rpc_handlers(self._generic)
        for name, handlers in self._registered:
            server.add_registered_method_handlers(name, handlers)
        address = port.xds.address
        bound = (
            server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        )
        if bound != port.xds.port:
            raise MeshError(f"grpcio could not bind {address}")


#: What ``next(_apply_steps(...))`` gives when no grpcio server needs binding.
_SETTLED: Any = object()


def _resume(steps: Generator[Any, Any, None], outcome: Any) -> None:
    """Hand a bound grpcio server (or the exception binding raised) back to
    :meth:`_Base._apply_steps`, which then runs to its end."""
    with contextlib.suppress(StopIteration):
        if isinstance(outcome, Exception):
            steps.throw(outcome)
        else:
            steps.send(outcome)


def _bind_failed(port: _Port, exc: Exception) -> None:
    error = exc if isinstance(exc, MeshError) else MeshError(f"grpcio: {exc}")
    log.error("xDS server %s: cannot serve: %s", port.xds.address, error)
    port.xds.config = None
    port.xds._serving = False
    port.xds._notify(False, error)


def _check(xds: XdsPort, details: Any, context: Any) -> Denied | None:
    return authorize(
        xds.config, context, details.method, details.invocation_metadata, _authority(context)
    )


class _SyncInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, xds: XdsPort) -> None:
        self.xds = xds

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        xds = self.xds

        def guard(inner: Callable[..., Any]) -> Callable[..., Any]:
            def behavior(request: Any, context: Any) -> Any:
                denied = _check(xds, details, context)
                if denied is not None:
                    context.abort(denied.code, denied.message)
                return inner(request, context)

            return behavior

        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            inner = getattr(handler, kind)
            if inner is not None:
                return handler._replace(**{kind: guard(inner)})
        return handler


class XdsServer(_Base, grpc.Server):  # type: ignore[misc]
    """A ``grpc.Server`` whose ports are governed by xDS Listeners (gRFC A36).

    Build it with :func:`pymesh.grpc.server`.
    """

    def __init__(
        self, mesh: Mesh, settings: ServerSettings, thread_pool: futures.Executor | None = None
    ) -> None:
        super().__init__(mesh, settings)
        self._own_pool = thread_pool is None
        self._pool = thread_pool or futures.ThreadPoolExecutor(
            max_workers=16, thread_name_prefix="pymesh-grpc-server"
        )
        self._done = threading.Event()

    def start(self) -> None:
        """Start watching each port's Listener; ports serve once theirs is valid."""
        if not self._started:
            self._watch()

    def _changed(self, port: _Port, cfg: ServingConfig | None) -> None:
        # On the xDS thread: grpcio's start and stop(grace) do not block.
        with port.lock:
            if self._stopped:
                return
            steps = self._apply_steps(port, cfg)
            creds = next(steps, _SETTLED)
            if creds is not _SETTLED:
                try:
                    outcome: Any = self._bind(port, creds)
                except Exception as e:
                    outcome = e
                _resume(steps, outcome)

    def _drain(self, server: grpc.Server) -> None:
        server.stop(self.drain_grace)

    def _bind(self, port: _Port, creds: grpc.ServerCredentials | None) -> grpc.Server:
        server = grpc.server(self._pool, **self._server_kwargs(_SyncInterceptor(port.xds)))
        self._add_to(server, port, creds)
        server.start()
        return server

    def stop(self, grace: float | None) -> threading.Event:
        """Stop every port (in-flight calls get ``grace`` seconds) and the xDS watches."""
        events = []
        for p in self._ports:
            with p.lock:
                self._stopped = True
                if p.server is not None:
                    events.append(p.server.stop(grace))
                    p.server = None
                # A smaller grace stops the draining ones sooner (grpcio's stop()).
                events.extend(old.stop(grace) for old in p.draining)
                p.draining = []
            p.xds.close()
        done = self._done

        def wait() -> None:
            for e in events:
                e.wait()
            if self._own_pool:
                self._pool.shutdown(wait=False)
            done.set()

        threading.Thread(target=wait, name="pymesh-grpc-server-stop", daemon=True).start()
        return done

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` completes; False on timeout."""
        return self._done.wait(timeout)


# ---------------------------------------------------------------- asyncio


class _AioInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, xds: XdsPort) -> None:
        self.xds = xds

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        xds = self.xds

        async def deny(context: Any) -> None:
            denied = _check(xds, details, context)
            if denied is not None:
                await context.abort(denied.code, denied.message)

        def unary(inner: Callable[..., Any]) -> Callable[..., Any]:
            async def behavior(request: Any, context: Any) -> Any:
                await deny(context)
                result = inner(request, context)
                return await result if inspect.isawaitable(result) else result

            return behavior

        def streaming(inner: Callable[..., Any]) -> Callable[..., Any]:
            async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
                await deny(context)
                result = inner(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                elif inspect.isawaitable(result):
                    await result  # a handler that writes with context.write()
                else:
                    for item in result:
                        yield item

            return behavior

        if handler.unary_unary is not None:
            return handler._replace(unary_unary=unary(handler.unary_unary))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=unary(handler.stream_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=streaming(handler.unary_stream))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=streaming(handler.stream_stream))
        return handler


class AioXdsServer(_Base, grpc.aio.Server):  # type: ignore[misc]
    """A ``grpc.aio.Server`` whose ports are governed by xDS Listeners (gRFC A36).

    Build it with :func:`pymesh.grpc.aio.server`; use it from one event loop.
    """

    def __init__(self, mesh: Mesh, settings: ServerSettings) -> None:
        super().__init__(mesh, settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._apply_lock: asyncio.Lock | None = None

    async def start(self) -> None:
        """Start watching each port's Listener; ports serve once theirs is valid."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self._apply_lock = asyncio.Lock()
        self._watch()

    def _changed(self, port: _Port, cfg: ServingConfig | None) -> None:
        # On the xDS thread: hand over to the server's loop, in order.
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def schedule() -> None:
            t = loop.create_task(self._apply(port, cfg))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(schedule)

    async def _apply(self, port: _Port, cfg: ServingConfig | None) -> None:
        assert self._apply_lock is not None
        async with self._apply_lock:
            if self._stopped:
                return
            if cfg is not None and cfg is not port.xds.config:
                return  # superseded by a newer update, which is queued
            steps = self._apply_steps(port, cfg)
            creds = next(steps, _SETTLED)
            if creds is not _SETTLED:
                try:
                    outcome: Any = await self._bind(port, creds)
                except Exception as e:
                    outcome = e
                _resume(steps, outcome)

    def _drain(self, server: grpc.aio.Server) -> None:
        assert self._loop is not None
        t = self._loop.create_task(server.stop(self.drain_grace))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _bind(self, port: _Port, creds: grpc.ServerCredentials | None) -> grpc.aio.Server:
        server = grpc.aio.server(**self._server_kwargs(_AioInterceptor(port.xds)))
        self._add_to(server, port, creds)
        await server.start()
        return server

    async def stop(self, grace: float | None) -> None:
        """Stop every port (in-flight calls get ``grace`` seconds) and the xDS watches."""
        self._stopped = True
        servers = []
        for p in self._ports:
            if p.server is not None:
                servers.append(p.server)
                p.server = None
            servers.extend(p.draining)  # a smaller grace stops them sooner
            p.draining = []
            p.xds.close()
        await asyncio.gather(*(s.stop(grace) for s in servers))
        if self._done is not None:
            self._done.set()

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`stop` completes; False on timeout."""
        if self._done is None:
            return True
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True
