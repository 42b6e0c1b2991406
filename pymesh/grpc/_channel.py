"""The synchronous mesh channel: a grpc.Channel that routes every call through the mesh.

Per call: wait for the listener's state, plan the call (route, fault, cluster, hash),
then the call engine (pymesh.call) admits each attempt and this channel sends it through
one cached real grpc channel per endpoint address (a "sub-channel"). Unary-response
calls are retried per the route's policy (gRFC A44), with per-try timeouts and hedging.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any

import grpc

from pymesh._grpcio import close_channel
from pymesh._mesh import ListenerState, Mesh
from pymesh.call import Attempts, Reply, Ticket, run_sync
from pymesh.errors import MeshError
from pymesh.grpc._base import (
    DRAIN_POLL,
    MeshChannelBase,
    MultiCallableBase,
    Options,
    OutMetadata,
    Prepared,
    reply_of,
)
from pymesh.grpc._core import (
    DEADLINE,
    LocalStatus,
    Metadata,
)
from pymesh.grpc._local import LocalRpcError
from pymesh.grpc._session import CookieCall, session_cookie
from pymesh.telemetry._providers import off

_TF = grpc.ChannelConnectivity.TRANSIENT_FAILURE


#: ``prepare(wait=False)``: the call would have to wait (config or a fault delay).
MUST_WAIT = object()
#: The engine's view of a one-attempt call that ended OK (the response stays with the
#: call's _UnaryCall): the engine only reads a reply, so one serves every such call.
_OK = Reply(None, grpc_status=0)
#: grpc's defaults for credentials, wait_for_ready and compression.
_NO_OPTIONS: tuple[None, None, None] = (None, None, None)


def _local(status: LocalStatus) -> LocalRpcError:
    return LocalRpcError(status.code, status.details)


class MeshChannel(MeshChannelBase[grpc.Channel], grpc.Channel):  # type: ignore[misc]
    """A ``grpc.Channel`` for an ``xds:///name`` target, routed by a :class:`Mesh`.

    Build it with :func:`pymesh.grpc.insecure_channel` / :func:`secure_channel`.
    """

    def __init__(
        self,
        target: str,
        mesh: Mesh,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Iterable[tuple[str, Any]] | None = None,
        compression: grpc.Compression | None = None,
    ) -> None:
        super().__init__(
            target, mesh, credentials=credentials, options=options, compression=compression
        )
        self._watchers: dict[str, Callable[[grpc.ChannelConnectivity], None]] = {}
        self._direct: grpc.Channel | None = None
        self._executor: futures.ThreadPoolExecutor | None = None

    # -- grpc.Channel -----------------------------------------------------------------

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        """Reports READY once the listener has a config (TRANSIENT_FAILURE if it fails)."""

        def report() -> None:
            try:
                state = self.mesh.wait_state(self._slot, None)
            except MeshError:
                callback(_TF)
                return
            callback(grpc.ChannelConnectivity.READY if state is not None else _TF)

        threading.Thread(target=report, name="pymesh-grpc-subscribe", daemon=True).start()

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        return None

    def close(self) -> None:
        """Close every sub-channel (in-flight calls on them are cancelled, within
        ~0.2 s for a sub-channel grpcio's connectivity poller still watches)."""
        with self._lock:
            self._closed = True
            subs, self._subs = self._subs, {}
            direct, self._direct = self._direct, None
            executor, self._executor = self._executor, None
        for address, sub in subs.items():
            self._close_sub(address, sub)
        if direct is not None:
            direct.close()
        if executor is not None:
            executor.shutdown(wait=False)

    def __enter__(self) -> MeshChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sub-channels ---------------------------------------------------------------

    def _new_channel(self, address: str, options: Options) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(address, self._credentials, options, self._compression)
        return grpc.insecure_channel(address, options, self._compression)

    def _new_tls_endpoint(
        self, address: str, plain: grpc.Channel | None, options: Options
    ) -> grpc.Channel:
        # Sub-channel for TLS clusters (mTLS from xDS, verified per material generation).
        from pymesh.grpc._tls_sync import SyncTlsEndpoint

        return SyncTlsEndpoint(address, self.authority, options, self._compression, plain)

    def _on_new_sub(self, address: str, sub: grpc.Channel) -> None:
        # Sticky TRANSIENT_FAILURE (as gRPC's round_robin): an endpoint stays avoided
        # through its reconnect attempts until it is READY again.
        def watch(c: grpc.ChannelConnectivity) -> None:
            if c is _TF:
                self._failing.add(address)
            elif c is grpc.ChannelConnectivity.READY:
                self._failing.discard(address)

        sub.subscribe(watch, try_to_connect=False)
        self._watchers[address] = watch

    def _close_sub(self, address: str, sub: grpc.Channel) -> None:
        watch = self._watchers.pop(address, None)
        if watch is not None:
            sub.unsubscribe(watch)
        self._failing.discard(address)
        # Once grpcio's connectivity poller has stopped (pymesh._grpcio): at once, or
        # within ~0.2 s on a background thread, never waiting here (the request path
        # closes the sub-channels of endpoints that left).
        close_channel(sub)

    def avoid(self) -> set[str]:
        return self._failing.copy()

    def _watch_draining(self) -> None:
        def watch() -> None:
            while self.reap():
                time.sleep(DRAIN_POLL)

        threading.Thread(target=watch, name="pymesh-grpc-drain", daemon=True).start()

    def _avoid_source(self) -> Callable[[], set[str]]:
        # The engine asks for the failing sub-channels once per attempt: a copy of the
        # set, taken by a C method (no Python frame per call), and a snapshot the
        # watcher threads cannot change while admission iterates it.
        return self._failing.copy

    def direct(self) -> grpc.Channel:
        """The passthrough channel to the authority itself (listener unknown)."""
        direct = self._direct
        if direct is None:
            with self._lock:
                if self._direct is None:
                    self._direct = self._new_channel(self.authority, self._options)
                direct = self._direct
        return direct

    def executor(self) -> futures.ThreadPoolExecutor:
        ex = self._executor
        if ex is None:
            with self._lock:
                if self._executor is None:
                    self._executor = futures.ThreadPoolExecutor(
                        8, thread_name_prefix="pymesh-grpc-future"
                    )
                ex = self._executor
        return ex

    # -- the call path ----------------------------------------------------------------

    def prepare(
        self, method: str, timeout: float | None, metadata: Metadata | None, wait: bool = True
    ) -> Prepared | object | None:
        """Plan a call; None means passthrough. Raises LocalRpcError for a local status.

        With ``wait=False`` returns :data:`MUST_WAIT` instead of blocking (no config yet,
        or a fault delay to serve).
        """
        start = time.monotonic()
        slot = self._slot
        state = slot.state
        if state is None:
            if not wait:
                return MUST_WAIT
            try:
                state = self.mesh.wait_state(slot, timeout)
            except MeshError as exc:
                raise LocalRpcError(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
            if state is None:
                return None
        delay, out = self.plan_on(state, method, timeout, metadata, start)
        return self.planned(state, method, timeout, metadata, start, delay, out, wait)

    def planned(
        self,
        state: ListenerState,
        method: str,
        timeout: float | None,
        metadata: Metadata | None,
        start: float,
        delay: float,
        out: Prepared | LocalStatus,
        wait: bool = True,
    ) -> Prepared | object | None:
        """:meth:`prepare` after :meth:`plan_on` planned the call on ``state`` at
        ``start``: wait for what it must wait for (a cluster_header target, a fault
        delay), then the Prepared call, or its local status raised."""
        if isinstance(out, LocalStatus) and out.wait_cluster is not None:
            if not wait:
                return MUST_WAIT
            # A cluster_header target not subscribed yet: wait for it, then plan again.
            state = self.mesh.wait_cluster(state, out.wait_cluster, timeout)
            delay, out = self.plan_on(state, method, timeout, metadata, start)
        if delay:
            if not wait:
                return MUST_WAIT
            time.sleep(delay)
        if isinstance(out, LocalStatus):
            raise _local(out)
        return out

    def prepare_call(
        self, method: str, timeout: float | None, metadata: Metadata | None, wait: bool = True
    ) -> Prepared | object | None:
        """:meth:`prepare` for a call this channel makes: the Prepared carries the call's
        telemetry observer (a local status or passthrough ends or drops it here)."""
        obs = None if off() else self.observe(method)  # off: the common, cheap answer
        if obs is None:
            return self.prepare(method, timeout, metadata, wait)
        try:
            p = self.prepare(method, timeout, metadata, wait)
        except BaseException as exc:
            obs.error(exc)
            raise
        if isinstance(p, Prepared):
            obs.planned(p.plan)
            p.obs = obs
        return p

    def local_error(self, status: LocalStatus) -> LocalRpcError:
        return _local(status)

    def call_unary_response(
        self,
        p: Prepared,
        invoke: Callable[[grpc.Channel, float | None, OutMetadata], tuple[Any, grpc.Call]],
        start: Callable[[grpc.Channel, float | None, OutMetadata], Any],
    ) -> tuple[Any, grpc.Call]:
        """Run a unary-response call through the engine (retries per A44 and the route,
        per-try timeout, hedging): ``invoke`` sends one attempt and waits, ``start``
        sends one without waiting (a grpc future, for hedging)."""
        a = self.new_attempts(p)
        try:
            result = run_sync(a, _UnaryIO(self, p, a, invoke, start))
        except BaseException as exc:
            err = self.failed(p, exc)
            if err is exc:
                raise
            raise err from None
        return self.unary_answer(p, result)  # type: ignore[no-any-return]

    def call_streaming_response(
        self, p: Prepared, start: Callable[[grpc.Channel, float | None, OutMetadata], Any]
    ) -> Any:
        """Start a call that returns a grpc.Call at once: a streaming one (no retries once
        streaming) or a single-attempt unary future."""
        a, t, call = self.start_stream(p, start)

        def ended() -> None:
            # Runs once the call terminates (status, cancel or deadline); for a stream
            # that is when it finishes, so its span covers the whole stream.
            if t.wants_load_report:  # weighted round robin's per-call ORCA report
                t.report_trailers(call.trailing_metadata())
            self.stream_ended(p, a, t, call.code(), call.details())

        if not call.add_callback(ended):
            ended()
        cookie = session_cookie(p.plan, t) if p.plan.session is not None else None
        return call if cookie is None else CookieCall(call, cookie)


def _failed(a: Attempts, t: Ticket, err: grpc.RpcError) -> Reply:
    """The reply of an attempt grpc failed: its status (UNKNOWN when the error is not a
    grpc.Call), and its ORCA trailer reported when the ticket wants it."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    if t.wants_load_report and isinstance(err, grpc.Call):
        t.report_trailers(err.trailing_metadata())
    return reply_of(a, t, code, None, err)


def _collected(a: Attempts, p: Prepared, t: Ticket, *, with_call: bool) -> Reply:
    """The reply of a unary-response attempt started as a future (hedging): its
    response, with its call (a session cookie's wrapper when the plan pins a session)
    when ``with_call``; the ORCA trailer reported when the ticket wants it."""
    fut = t.handle
    try:
        response = fut.result()  # type: ignore[attr-defined]
    except grpc.RpcError as err:
        return _failed(a, t, err)
    if t.wants_load_report:
        t.report_trailers(fut.trailing_metadata())  # type: ignore[attr-defined]
    if not with_call:
        return Reply(response, grpc_status=0)
    cookie = session_cookie(p.plan, t) if p.plan.session is not None else None
    call: Any = fut if cookie is None else CookieCall(fut, cookie)
    return Reply((response, call), grpc_status=0)


class _FutureAttempts:
    """What the sync unary-response I/O objects share for an attempt started as a
    future (hedging): nothing to discard, and a cancel that tells telemetry."""

    __slots__ = ()
    p: Prepared

    def discard(self, t: Ticket) -> None:
        return None

    def cancel(self, t: Ticket) -> None:
        t.handle.cancel()  # type: ignore[attr-defined]
        obs = self.p.obs
        if obs is not None:
            obs.attempt_done(grpc.StatusCode.CANCELLED, attempt=t.trace)


class _UnaryIO(_FutureAttempts):
    """The blocking I/O of one unary-response call's attempts (pymesh.call.SyncIO)."""

    __slots__ = ("a", "ch", "invoke", "p", "start_one")

    def __init__(
        self,
        ch: MeshChannel,
        p: Prepared,
        a: Attempts,
        invoke: Callable[[grpc.Channel, float | None, OutMetadata], tuple[Any, grpc.Call]],
        start: Callable[[grpc.Channel, float | None, OutMetadata], Any],
    ) -> None:
        self.ch = ch
        self.p = p
        self.a = a
        self.invoke = invoke
        self.start_one = start

    def send(self, t: Ticket) -> Reply:
        begun = self.ch.begin(self.p, self.a, t)
        if begun is None:
            return reply_of(self.a, t, grpc.StatusCode.DEADLINE_EXCEEDED, None, _local(DEADLINE))
        try:
            value = self.invoke(*begun)
        except grpc.RpcError as err:
            return _failed(self.a, t, err)
        if t.wants_load_report:  # weighted round robin's per-call ORCA report
            t.report_trailers(value[1].trailing_metadata())
        cookie = session_cookie(self.p.plan, t) if self.p.plan.session is not None else None
        if cookie is not None:  # A55: the caller learns its session's endpoint
            value = (value[0], CookieCall(value[1], cookie))
        return Reply(value, grpc_status=0)

    def start(self, t: Ticket) -> Any:
        begun = self.ch.begin(self.p, self.a, t)
        if begun is None:
            return _local(DEADLINE)  # a finished, failed future
        return self.start_one(*begun)

    def collect(self, t: Ticket) -> Reply:
        return _collected(self.a, self.p, t, with_call=True)


#: The base of this channel's multi-callables (shared with the other flavour).
_MultiCallable = MultiCallableBase[MeshChannel, grpc.Channel]


class _UnaryCall(_FutureAttempts):
    """One unary-unary call through the engine: its request and options, and the
    engine's blocking I/O for its attempts (pymesh.call.SyncIO) as bound methods of
    this one small object per call (no closures, no separate I/O object).

    ``with_call``: the caller wants ``(response, call)``; otherwise an attempt that needs
    no grpc.Call (no ORCA trailer, no session cookie) is grpcio's plain blocking call,
    which builds no call object of its own.
    """

    __slots__ = ("a", "ch", "mc", "options", "p", "request", "value", "with_call")

    mc: _UnaryUnary
    ch: MeshChannel
    p: Prepared
    request: Any
    #: credentials, wait_for_ready, compression (None: grpc's defaults, all None).
    options: tuple[Any, Any, Any] | None
    with_call: bool
    a: Attempts
    #: The answer of a one-attempt call that ended OK (its reply is the shared _OK).
    value: Any

    def send(self, t: Ticket) -> Reply:
        p = self.p
        begun = self.ch.begin(p, self.a, t)
        if begun is None:
            return reply_of(self.a, t, grpc.StatusCode.DEADLINE_EXCEEDED, None, _local(DEADLINE))
        sub, timeout, md = begun
        hit = self.mc._cache.get(id(sub))  # the multi-callable's _real(), its hit inline
        real = hit[1] if hit is not None and hit[0] is sub else self.mc._real(sub, "unary_unary")
        credentials, wait_for_ready, compression = self.options or _NO_OPTIONS
        session = p.plan.session is not None
        try:
            if self.with_call or session or t.wants_load_report:
                response, call = real.with_call(
                    self.request, timeout, md, credentials, wait_for_ready, compression
                )
            else:
                response = real(self.request, timeout, md, credentials, wait_for_ready, compression)
                call = None
        except grpc.RpcError as err:
            return _failed(self.a, t, err)
        if call is None:
            value = response
        else:
            if t.wants_load_report:  # weighted round robin's per-call ORCA report
                t.report_trailers(call.trailing_metadata())
            cookie = session_cookie(p.plan, t) if session else None
            if cookie is not None:  # A55: the caller learns its session's endpoint
                call = CookieCall(call, cookie)
            value = (response, call) if self.with_call else response
        if self.a.limit == 1:
            self.value = value
            return _OK
        return Reply(value, grpc_status=0)

    def start(self, t: Ticket) -> Any:
        p = self.p
        begun = self.ch.begin(p, self.a, t)
        if begun is None:
            return _local(DEADLINE)  # a finished, failed future
        sub, timeout, md = begun
        credentials, wait_for_ready, compression = self.options or _NO_OPTIONS
        return self.mc._real(sub, "unary_unary").future(
            self.request, timeout, md, credentials, wait_for_ready, compression
        )

    def collect(self, t: Ticket) -> Reply:
        return _collected(self.a, self.p, t, with_call=self.with_call)


class _UnaryUnary(_MultiCallable, grpc.UnaryUnaryMultiCallable):  # type: ignore[misc]
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        *,
        _with_call: bool = False,
        _prepared: Prepared | object | None = MUST_WAIT,
    ) -> Any:
        # ``_with_call``: answer (response, call), for with_call() and future();
        # ``_prepared``: the call's plan when future() made it already.
        ch = self._channel
        p = _prepared
        if p is MUST_WAIT:
            state = ch._slot.state
            if state is not None and off():
                # The common call (a config, telemetry off): prepare()'s planning without
                # its frame or the observer's.
                start = time.monotonic()
                delay, p = ch.plan_on(state, self._method, timeout, metadata, start)
                if delay or type(p) is not Prepared:
                    p = ch.planned(state, self._method, timeout, metadata, start, delay, p)
            else:
                p = ch.prepare_call(self._method, timeout, metadata)
        if type(p) is not Prepared:  # passthrough: the direct channel's own call
            mc = self._real(ch.direct(), "unary_unary")
            call = mc.with_call if _with_call else mc
            return call(request, timeout, metadata, credentials, wait_for_ready, compression)
        uc = object.__new__(_UnaryCall)  # no __init__: no frame per call
        uc.mc, uc.ch, uc.p, uc.request, uc.with_call = self, ch, p, request, _with_call
        some = credentials is not None or wait_for_ready is not None or compression is not None
        uc.options = (credentials, wait_for_ready, compression) if some else None
        # The engine runs the call's attempts (retries per A44 and the route, per-try
        # timeout, hedging); uc's bound methods are its I/O.
        a = uc.a = (
            ch.new_attempts(p)
            if p.obs is not None
            else ch.attempts(p.plan, p.state, deadline=p.deadline)
        )
        try:
            result = run_sync(a, uc)
        except BaseException as exc:
            err = ch.failed(p, exc)
            if err is exc:
                raise
            raise err from None
        if type(result) is Ticket and result.reply is _OK:
            # The one attempt answered OK: unary_answer's answer, without its frames.
            result.release()
            if p.obs is not None:
                p.obs.finish(grpc.StatusCode.OK)
            return uc.value
        return ch.unary_answer(p, result)

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> tuple[Any, grpc.Call]:
        return self(  # type: ignore[no-any-return]
            request, timeout, metadata, credentials, wait_for_ready, compression, _with_call=True
        )

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        """A single-attempt call that needs no waiting is grpcio's own future (so
        ``cancel()`` cancels the RPC); anything else runs on a small per-channel pool."""
        ch = self._channel
        try:
            p = ch.prepare_call(self._method, timeout, metadata, wait=False)
            if p is None:
                mc = self._real(ch.direct(), "unary_unary")
                return mc.future(
                    request, timeout, metadata, credentials, wait_for_ready, compression
                )
            if isinstance(p, Prepared) and ch.new_attempts(p).limit == 1:

                def start(sub: grpc.Channel, t: float | None, md: OutMetadata) -> Any:
                    mc = self._real(sub, "unary_unary")
                    return mc.future(request, t, md, credentials, wait_for_ready, compression)

                return ch.call_streaming_response(p, start)
        except LocalRpcError as err:
            return err  # a failed future, as grpcio returns
        fut = ch.executor().submit(
            contextvars.copy_context().run,
            functools.partial(self, _with_call=True, _prepared=p),
            request,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
        )
        return _FutureCall(fut)


class _UnaryStream(_MultiCallable, grpc.UnaryStreamMultiCallable):  # type: ignore[misc]
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        ch = self._channel
        try:
            p = ch.prepare_call(self._method, timeout, metadata)
            if not isinstance(p, Prepared):
                mc = self._real(ch.direct(), "unary_stream")
                return mc(request, timeout, metadata, credentials, wait_for_ready, compression)

            def start(sub: grpc.Channel, t: float | None, md: OutMetadata) -> Any:
                mc = self._real(sub, "unary_stream")
                return mc(request, t, md, credentials, wait_for_ready, compression)

            return ch.call_streaming_response(p, start)
        except LocalRpcError as err:
            return err  # grpc raises a streaming call's error on iteration


class _StreamUnary(_MultiCallable, grpc.StreamUnaryMultiCallable):  # type: ignore[misc]
    def _invoke(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None,
        metadata: Metadata | None,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> tuple[Any, grpc.Call]:
        ch = self._channel
        p = ch.prepare_call(self._method, timeout, metadata)
        if not isinstance(p, Prepared):
            mc = self._real(ch.direct(), "stream_unary")
            return mc.with_call(  # type: ignore[no-any-return]
                request_iterator, timeout, metadata, credentials, wait_for_ready, compression
            )
        requests: Iterable[Any] = request_iterator
        if ch.new_attempts(p).limit > 1:
            requests = list(request_iterator)  # buffered so that a retry can replay it

        def invoke(sub: grpc.Channel, t: float | None, md: OutMetadata) -> tuple[Any, grpc.Call]:
            mc = self._real(sub, "stream_unary")
            return mc.with_call(  # type: ignore[no-any-return]
                iter(requests), t, md, credentials, wait_for_ready, compression
            )

        def start(sub: grpc.Channel, t: float | None, md: OutMetadata) -> Any:
            mc = self._real(sub, "stream_unary")
            return mc.future(iter(requests), t, md, credentials, wait_for_ready, compression)

        return ch.call_unary_response(p, invoke, start)

    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._invoke(
            request_iterator, timeout, metadata, credentials, wait_for_ready, compression
        )[0]

    def with_call(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> tuple[Any, grpc.Call]:
        return self._invoke(
            request_iterator, timeout, metadata, credentials, wait_for_ready, compression
        )

    def future(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        fut = self._channel.executor().submit(
            contextvars.copy_context().run,
            self._invoke,
            request_iterator,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
        )
        return _FutureCall(fut)


class _StreamStream(_MultiCallable, grpc.StreamStreamMultiCallable):  # type: ignore[misc]
    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        ch = self._channel
        try:
            p = ch.prepare_call(self._method, timeout, metadata)
            if not isinstance(p, Prepared):
                mc = self._real(ch.direct(), "stream_stream")
                return mc(
                    request_iterator, timeout, metadata, credentials, wait_for_ready, compression
                )

            def start(sub: grpc.Channel, t: float | None, md: OutMetadata) -> Any:
                mc = self._real(sub, "stream_stream")
                return mc(request_iterator, t, md, credentials, wait_for_ready, compression)

            return ch.call_streaming_response(p, start)
        except LocalRpcError as err:
            return err


class _FutureCall(grpc.Future, grpc.Call):  # type: ignore[misc]
    """A grpc.Future (and, once done, grpc.Call) over a thread-pool future."""

    def __init__(self, fut: futures.Future[tuple[Any, grpc.Call]]) -> None:
        self._fut = fut

    def _call(self) -> grpc.Call | None:
        if not self._fut.done() or self._fut.cancelled():
            return None
        exc = self._fut.exception()
        if exc is not None:
            return exc if isinstance(exc, grpc.Call) else None
        return self._fut.result()[1]

    def cancel(self) -> bool:
        return self._fut.cancel()

    def cancelled(self) -> bool:
        return self._fut.cancelled()

    def running(self) -> bool:
        return self._fut.running()

    def done(self) -> bool:
        return self._fut.done()

    def result(self, timeout: float | None = None) -> Any:
        return self._fut.result(timeout)[0]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._fut.exception(timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        exc = self._fut.exception(timeout)
        return exc.__traceback__ if exc is not None else None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._fut.add_done_callback(lambda _f: fn(self))

    def initial_metadata(self) -> Any:
        self._fut.exception()
        call = self._call()
        return call.initial_metadata() if call is not None else ()

    def trailing_metadata(self) -> Any:
        self._fut.exception()
        call = self._call()
        return call.trailing_metadata() if call is not None else ()

    def code(self) -> grpc.StatusCode:
        self._fut.exception()
        call = self._call()
        return call.code() if call is not None else grpc.StatusCode.UNKNOWN

    def details(self) -> str | None:
        self._fut.exception()
        call = self._call()
        return call.details() if call is not None else None

    def is_active(self) -> bool:
        return not self._fut.done()

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self._fut.done():
            return False
        self._fut.add_done_callback(lambda _f: callback())
        return True


MeshChannel._kinds = {
    "unary_unary": _UnaryUnary,
    "unary_stream": _UnaryStream,
    "stream_unary": _StreamUnary,
    "stream_stream": _StreamStream,
}
