"""asyncio TLS sub-channels: :class:`AioTlsEndpoint` and its per-config views.

A view's call returns at once, as grpc.aio calls do. Once the endpoint is verified for
the current material generation that is the real call on that generation's channel;
before, it is a :class:`_PendingCall` that runs the pre-check in a worker thread (the
event loop never blocks; concurrent calls share one check) and then starts the real
call, to which it delegates everything. See :mod:`pymesh.grpc._tls`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable
from typing import Any

import grpc
import grpc.aio

from pymesh.grpc._core import DEADLINE, LocalStatus
from pymesh.grpc._tls import (
    CHECK_ERRORS,
    CHECK_TIMEOUT,
    CLOSED,
    Binding,
    Generations,
    Inner,
    TlsAioRpcError,
    TlsEndpoint,
    refusal,
    tls_options,
)
from pymesh.security._grpc import verify_grpc_peer

__all__ = ["AioTlsEndpoint", "AioTlsView"]

_IDLE = grpc.ChannelConnectivity.IDLE


def _status_error(status: LocalStatus) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(), status.details
    )


def _deadline_error() -> grpc.aio.AioRpcError:
    return _status_error(DEADLINE)


class AioTlsEndpoint(TlsEndpoint[grpc.aio.Channel], grpc.aio.Channel):  # type: ignore[misc]
    """The aio sub-channel of an endpoint used by TLS clusters (see :class:`TlsEndpoint`).

    ``get_state`` reports the newest real channel's state (IDLE before there is one), so
    the mesh channel avoids an endpoint in TRANSIENT_FAILURE as any other.
    """

    def __init__(
        self,
        address: str,
        authority: str,
        options: Iterable[tuple[str, Any]],
        compression: grpc.Compression | None,
        plain: grpc.aio.Channel | None = None,
    ) -> None:
        opts = tuple(options)

        def secure(creds: grpc.ChannelCredentials, target_name: str) -> grpc.aio.Channel:
            return grpc.aio.secure_channel(
                address, creds, tls_options(opts, authority, target_name), compression
            )

        def insecure() -> grpc.aio.Channel:
            return grpc.aio.insecure_channel(address, opts, compression)

        super().__init__(address, secure, insecure, self._close_later, plain)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._newest: grpc.aio.Channel | None = plain
        self.on_channel = self._remember

    def _remember(self, channel: grpc.aio.Channel) -> None:
        self._newest = channel

    def _close_later(self, channel: grpc.aio.Channel) -> None:
        # Called from sync code on the loop (a call's done callback): close in a task.
        if channel is self._newest:
            self._newest = None
        task = asyncio.ensure_future(channel.close(None))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_view(self, binding: Binding[grpc.aio.Channel]) -> AioTlsView:
        return AioTlsView(binding)

    # grpc.aio.Channel: the endpoint object itself carries no calls (views and the
    # plaintext channel do); these serve plaintext so that it is a complete channel.
    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.view(None).unary_unary(method, *args, **kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.view(None).unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.view(None).stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.view(None).stream_stream(method, *args, **kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        newest = self._newest
        return _IDLE if newest is None else newest.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        newest = self._newest
        if newest is not None:
            await newest.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        newest = self._newest
        if newest is not None:
            await newest.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        """Close every real channel (plaintext and every generation of every config)."""
        self._newest = None
        for c in self.take_all():
            await c.close(grace)

    async def __aenter__(self) -> AioTlsEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)


class AioTlsView(grpc.aio.Channel):  # type: ignore[misc]
    """The aio channel of one endpoint for one cluster TLS config."""

    def __init__(self, binding: Binding[grpc.aio.Channel]) -> None:
        self.binding = binding
        self._check: tuple[Generations, asyncio.Future[Inner[grpc.aio.Channel] | None]] | None = (
            None
        )

    def __repr__(self) -> str:
        return f"<AioTlsView {self.binding!r}>"

    async def prepare(self, timeout: float | None) -> tuple[Inner[grpc.aio.Channel], float | None]:
        """Verify (once per generation, shared by concurrent calls); the inner and time left.

        Raises TlsAioRpcError (check failed) or an AioRpcError (deadline, channel closed).
        """
        b = self.binding
        start = time.monotonic()
        inner = b.ready()
        if inner is None:
            if b.closed:
                raise _status_error(CLOSED)
            gens = b.materials()[2]
            error = b.failed(gens)
            if error is not None:
                raise TlsAioRpcError(refusal(error, b.tls, b.address), error)
            check = self._check
            if check is None or check[0] != gens or check[1].done():
                # A finished check of this generation was used already (its inner is
                # current unless the binding was superseded or closed): check again.
                fut = asyncio.ensure_future(self._verify_and_install())
                # Every waiter may give up at its deadline: retrieve the outcome regardless.
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())
                check = self._check = (gens, fut)
            try:
                inner = await asyncio.wait_for(asyncio.shield(check[1]), timeout)
            except asyncio.TimeoutError:
                raise _deadline_error() from None
            except CHECK_ERRORS as exc:
                raise TlsAioRpcError(refusal(exc, b.tls, b.address), exc) from None
            if inner is None:
                raise _status_error(CLOSED)
        if timeout is None:
            return inner, None
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise _deadline_error()
        return inner, left

    async def _verify_and_install(self) -> Inner[grpc.aio.Channel] | None:
        """The pre-check in a worker thread, then the channel of that generation.

        Shared by every call waiting for it; its outcome does not depend on any of them
        (a waiter may give up at its deadline while the check goes on).
        """
        b = self.binding
        ident, roots, gens = b.materials()
        try:
            peer = await asyncio.to_thread(verify_grpc_peer, b.tls, b.address, CHECK_TIMEOUT)
        except CHECK_ERRORS as exc:
            b.fail(gens, exc)
            raise
        return b.install(ident, roots, gens, peer)

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMC:
        return _AioMC(self, "unary_unary", method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMC:
        return _AioMC(self, "unary_stream", method, request_serializer, response_deserializer)

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMC:
        return _AioMC(self, "stream_unary", method, request_serializer, response_deserializer)

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _AioMC:
        return _AioMC(self, "stream_stream", method, request_serializer, response_deserializer)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        cur = self.binding.current
        return _IDLE if cur is None else cur.channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        cur = self.binding.current
        if cur is not None:
            await cur.channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        cur = self.binding.current
        if cur is not None:
            await cur.channel.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        return None  # the endpoint owns the real channels

    async def __aenter__(self) -> AioTlsView:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _AioMC(
    grpc.aio.UnaryUnaryMultiCallable,  # type: ignore[misc]
    grpc.aio.UnaryStreamMultiCallable,  # type: ignore[misc]
    grpc.aio.StreamUnaryMultiCallable,  # type: ignore[misc]
    grpc.aio.StreamStreamMultiCallable,  # type: ignore[misc]
):
    def __init__(self, view: AioTlsView, kind: str, method: str, ser: Any, deser: Any) -> None:
        self._view = view
        self._kind = kind
        self._method = method
        self._ser = ser
        self._deser = deser

    def _invoke(
        self,
        inner: Inner[grpc.aio.Channel],
        request: Any,
        timeout: float | None,
        kw: dict[str, Any],
    ) -> Any:
        view = self._view
        call = inner.multicallable(self._kind, self._method, self._ser, self._deser)(
            request, timeout=timeout, **kw
        )
        view.binding.begin(inner)
        end = view.binding.end
        call.add_done_callback(lambda _c: end(inner))
        return call

    def __call__(
        self,
        request: Any = None,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        kw = {
            "metadata": metadata,
            "credentials": credentials,
            "wait_for_ready": wait_for_ready,
            "compression": compression,
        }
        inner = self._view.binding.ready()
        if inner is not None:
            return self._invoke(inner, request, timeout, kw)

        async def start() -> Any:
            ready, left = await self._view.prepare(timeout)
            return self._invoke(ready, request, left, kw)

        return _PendingCall(start())


class _PendingCall(
    grpc.aio.UnaryUnaryCall,  # type: ignore[misc]
    grpc.aio.UnaryStreamCall,  # type: ignore[misc]
    grpc.aio.StreamUnaryCall,  # type: ignore[misc]
    grpc.aio.StreamStreamCall,  # type: ignore[misc]
):
    """A call waiting for its endpoint's pre-check; then it is the real call.

    Fails with the check's TlsAioRpcError (UNAVAILABLE) without sending anything.
    """

    def __init__(self, start: Coroutine[Any, Any, Any]) -> None:
        self._call: Any = None
        self._task: asyncio.Task[Any] = asyncio.ensure_future(start)
        self._task.add_done_callback(self._started)

    def _started(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._call = task.result()

    async def _failed(self) -> grpc.aio.AioRpcError | None:
        """The local error when the call never started (None once the real call runs)."""
        try:
            await asyncio.shield(self._task)
        except grpc.aio.AioRpcError as err:
            return err
        except asyncio.CancelledError:
            if self._task.cancelled():
                return grpc.aio.AioRpcError(
                    grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(), ""
                )
            raise
        return None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result().__await__()

    async def _result(self) -> Any:
        call = await self._task
        return await call

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        call = await self._task
        async for item in call:
            yield item

    async def read(self) -> Any:
        call = await self._task
        return await call.read()

    async def write(self, request: Any) -> None:
        call = await self._task
        await call.write(request)

    async def done_writing(self) -> None:
        call = await self._task
        await call.done_writing()

    async def initial_metadata(self) -> Any:
        err = await self._failed()
        return err.initial_metadata() if err is not None else await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        err = await self._failed()
        return err.trailing_metadata() if err is not None else await self._call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        err = await self._failed()
        code: grpc.StatusCode = err.code() if err is not None else await self._call.code()
        return code

    async def details(self) -> str:
        err = await self._failed()
        if err is not None:
            return err.details() or ""
        details: str = await self._call.details()
        return details

    async def wait_for_connection(self) -> None:
        call = await self._task
        await call.wait_for_connection()

    def cancelled(self) -> bool:
        call = self._call
        return self._task.cancelled() or (call is not None and bool(call.cancelled()))

    def done(self) -> bool:
        if not self._task.done():
            return False
        call = self._call
        return call is None or bool(call.done())

    def time_remaining(self) -> float | None:
        call = self._call
        return call.time_remaining() if call is not None else None

    def cancel(self) -> bool:
        call = self._call
        if call is not None:
            return bool(call.cancel())
        return self._task.cancel()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        def started(_task: asyncio.Task[Any]) -> None:
            call = self._call
            if call is None:
                callback(self)  # never started: done now
            else:
                call.add_done_callback(lambda _c: callback(self))

        self._task.add_done_callback(started)
