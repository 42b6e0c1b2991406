"""Sync TLS sub-channels: the endpoint's :class:`SyncTlsEndpoint` and its per-config views.

A view's call blocks (in the caller's thread, never under the mesh channel's lock) until
the endpoint is verified for the current material generation, then runs on that
generation's real ``grpc`` secure channel. See :mod:`pymesh.grpc._tls`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from pymesh._grpcio import close_channel
from pymesh.grpc._core import DEADLINE
from pymesh.grpc._local import LocalRpcError
from pymesh.grpc._tls import (
    CHECK_ERRORS,
    CHECK_TIMEOUT,
    CLOSED,
    Binding,
    Inner,
    TlsEndpoint,
    TlsRpcError,
    refusal,
    tls_options,
)
from pymesh.security._grpc import verify_grpc_peer

__all__ = ["SyncTlsEndpoint", "SyncTlsView"]

Callback = Callable[[grpc.ChannelConnectivity], None]


def _deadline_error() -> LocalRpcError:
    return LocalRpcError(DEADLINE.code, DEADLINE.details)


class SyncTlsEndpoint(TlsEndpoint[grpc.Channel], grpc.Channel):  # type: ignore[misc]
    """The sub-channel of an endpoint used by TLS clusters (see :class:`TlsEndpoint`).

    Connectivity watchers (``subscribe``) follow every real channel it creates, so an
    endpoint whose channel is in TRANSIENT_FAILURE is avoided as any other.
    """

    def __init__(
        self,
        address: str,
        authority: str,
        options: Iterable[tuple[str, Any]],
        compression: grpc.Compression | None,
        plain: grpc.Channel | None = None,
    ) -> None:
        opts = tuple(options)

        def secure(creds: grpc.ChannelCredentials, target_name: str) -> grpc.Channel:
            return grpc.secure_channel(
                address, creds, tls_options(opts, authority, target_name), compression
            )

        def insecure() -> grpc.Channel:
            return grpc.insecure_channel(address, opts, compression)

        super().__init__(address, secure, insecure, self._close_channel, plain)
        self._callbacks: list[Callback] = []
        self.on_channel = self._watch

    def _close_channel(self, channel: grpc.Channel) -> None:
        """Close one real channel: our subscriptions dropped first, then once grpcio's
        connectivity poller has stopped (pymesh._grpcio)."""
        for cb in list(self._callbacks):
            channel.unsubscribe(cb)
        close_channel(channel)

    def _new_view(self, binding: Binding[grpc.Channel]) -> SyncTlsView:
        return SyncTlsView(binding)

    def _watch(self, channel: grpc.Channel) -> None:
        for cb in list(self._callbacks):
            channel.subscribe(cb, try_to_connect=False)

    # grpc.Channel: the endpoint object itself carries no calls (views and the plaintext
    # channel do); these serve plaintext so that it is a complete channel all the same.
    def subscribe(self, callback: Callback, try_to_connect: bool = False) -> None:
        self._callbacks.append(callback)
        for c in self.all_channels():
            c.subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback: Callback) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)
        for c in self.all_channels():
            c.unsubscribe(callback)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.view(None).unary_unary(method, *args, **kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.view(None).unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.view(None).stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.view(None).stream_stream(method, *args, **kwargs)

    def close(self) -> None:
        """Close every real channel (plaintext and every generation of every config)."""
        for c in self.take_all():
            self._close_channel(c)

    def __enter__(self) -> SyncTlsEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncTlsView(grpc.Channel):  # type: ignore[misc]
    """The channel of one endpoint for one cluster TLS config (verified per generation)."""

    def __init__(self, binding: Binding[grpc.Channel]) -> None:
        self.binding = binding

    def __repr__(self) -> str:
        return f"<SyncTlsView {self.binding!r}>"

    def ready(self, timeout: float | None) -> tuple[Inner[grpc.Channel], float | None]:
        """The verified channel of the current generation, and the call's time left.

        Raises TlsRpcError (check failed) or a LocalRpcError (deadline, channel closed).
        """
        b = self.binding
        inner = b.ready()
        if inner is not None:
            return inner, timeout
        start = time.monotonic()
        # The call's deadline bounds the check when it is the shorter of the two.
        deadline_bound = timeout is not None and timeout <= CHECK_TIMEOUT
        budget = timeout if timeout is not None and deadline_bound else CHECK_TIMEOUT
        if budget <= 0:
            raise _deadline_error()
        # Another call's check holds the lock for at most twice its budget (connect, then
        # handshake, each bounded by it).
        if not b.check_lock.acquire(timeout=budget if deadline_bound else 3 * CHECK_TIMEOUT):
            if deadline_bound:
                raise _deadline_error()
            raise LocalRpcError(
                grpc.StatusCode.UNAVAILABLE,
                f"pymesh: the TLS pre-check of endpoint {b.address} did not finish",
            )
        try:
            inner = b.ready()  # another call may have verified meanwhile
            if inner is None:
                inner = self._check(budget - (time.monotonic() - start), deadline_bound)
        finally:
            b.check_lock.release()
        if timeout is None:
            return inner, None
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise _deadline_error()
        return inner, left

    def _check(self, budget: float, deadline_bound: bool) -> Inner[grpc.Channel]:
        b = self.binding
        if b.closed:
            raise LocalRpcError(CLOSED.code, CLOSED.details)
        ident, roots, gens = b.materials()
        error = b.failed(gens)
        if error is None:
            if budget <= 0:
                raise _deadline_error()
            try:
                peer = verify_grpc_peer(b.tls, b.address, budget)
            except CHECK_ERRORS as exc:
                if isinstance(exc, TimeoutError) and deadline_bound:
                    raise _deadline_error() from exc  # the call's own deadline ran out
                b.fail(gens, exc)
                error = exc
            else:
                inner = b.install(ident, roots, gens, peer)
                if inner is None:
                    raise LocalRpcError(CLOSED.code, CLOSED.details)
                return inner
        raise TlsRpcError(refusal(error, b.tls, b.address), error)

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _UnaryResponse:
        return _UnaryResponse(
            self, "unary_unary", method, request_serializer, response_deserializer
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _UnaryResponse:
        return _UnaryResponse(
            self, "stream_unary", method, request_serializer, response_deserializer
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _StreamResponse:
        return _StreamResponse(
            self, "unary_stream", method, request_serializer, response_deserializer
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> _StreamResponse:
        return _StreamResponse(
            self, "stream_stream", method, request_serializer, response_deserializer
        )

    def subscribe(self, callback: Callback, try_to_connect: bool = False) -> None:
        return None  # connectivity is watched on the endpoint (SyncTlsEndpoint)

    def unsubscribe(self, callback: Callback) -> None:
        return None

    def close(self) -> None:
        return None  # the endpoint owns the real channels


class _MC:
    def __init__(self, view: SyncTlsView, kind: str, method: str, ser: Any, deser: Any) -> None:
        self._view = view
        self._kind = kind
        self._method = method
        self._ser = ser
        self._deser = deser

    def _start(self, timeout: float | None) -> tuple[Inner[grpc.Channel], float | None, Any]:
        inner, left = self._view.ready(timeout)
        mc = inner.multicallable(self._kind, self._method, self._ser, self._deser)
        self._view.binding.begin(inner)
        return inner, left, mc

    def _track(self, inner: Inner[grpc.Channel], call: Any) -> Any:
        end = self._view.binding.end
        call.add_done_callback(lambda _c: end(inner))  # runs at once if already done
        return call


class _UnaryResponse(_MC, grpc.UnaryUnaryMultiCallable, grpc.StreamUnaryMultiCallable):  # type: ignore[misc]
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self.with_call(request, timeout, metadata, credentials, wait_for_ready, compression)[
            0
        ]

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> tuple[Any, grpc.Call]:
        inner, left, mc = self._start(timeout)
        try:
            return mc.with_call(  # type: ignore[no-any-return]
                request, left, metadata, credentials, wait_for_ready, compression
            )
        finally:
            self._view.binding.end(inner)

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        try:
            inner, left, mc = self._start(timeout)
        except LocalRpcError as err:
            return err  # a failed future, as grpcio returns
        return self._track(
            inner, mc.future(request, left, metadata, credentials, wait_for_ready, compression)
        )


class _StreamResponse(_MC, grpc.UnaryStreamMultiCallable, grpc.StreamStreamMultiCallable):  # type: ignore[misc]
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        try:
            inner, left, mc = self._start(timeout)
        except LocalRpcError as err:
            return err  # grpc raises a streaming call's error on iteration
        return self._track(
            inner, mc(request, left, metadata, credentials, wait_for_ready, compression)
        )
