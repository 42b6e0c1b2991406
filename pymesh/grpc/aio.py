"""asyncio mesh channels: ``grpc.aio.Channel`` subclasses routed by a :class:`Mesh`.

::

    channel = pymesh.grpc.aio.insecure_channel("xds:///reviews:50051", mesh=mesh)
    reply = await stub.Get(request, timeout=2)

Same decisions as the sync channel; waiting and I/O never block the event loop. A call
starts when it is made (as in grpc.aio); unary-response calls go through the call engine
(pymesh.call: retries per A44 and the route, per-try timeout, hedging).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Iterable, Sequence
from typing import Any

import grpc
import grpc.aio

from pymesh._mesh import ListenerState, Mesh
from pymesh.call import Attempts, Reply, Ticket, run_async, start_alone
from pymesh.errors import MeshError
from pymesh.grpc._base import (
    DRAIN_POLL,
    MeshChannelBase,
    MultiCallableBase,
    Options,
    OutMetadata,
    Prepared,
    number_reply,
    reply_of,
)
from pymesh.grpc._core import (
    DEADLINE,
    LocalStatus,
    Metadata,
    status_code,
)
from pymesh.grpc._server import DEFAULT_DRAIN_GRACE, AioXdsServer, ServerSettings
from pymesh.grpc._session import AioCookieCall, session_cookie
from pymesh.grpc._xds_server import ServingModeCallback
from pymesh.telemetry._providers import off
from pymesh.telemetry._rpc import RpcObserver

__all__ = ["AioXdsServer", "MeshAioChannel", "insecure_channel", "secure_channel", "server"]

_log = logging.getLogger(__name__)
_TF = grpc.ChannelConnectivity.TRANSIENT_FAILURE
#: How often (seconds) the sub-channels are asked for their state, at most: a call picks
#: with what was seen at most this long ago (a failing endpoint's call fails fast).
_AVOID_REFRESH = 0.05
_READY = grpc.ChannelConnectivity.READY


def _error(status: LocalStatus) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(), status.details
    )


class _Pending:
    """A plan :meth:`MeshAioChannel.prepare_now` could not finish without waiting."""

    __slots__ = ("delay", "obs", "out", "start", "state")

    def __init__(
        self,
        obs: RpcObserver | None,
        start: float,
        state: ListenerState | None,
        delay: float,
        out: Prepared | LocalStatus | None,
    ) -> None:
        self.obs = obs
        self.start = start
        self.state = state
        self.delay = delay
        self.out = out


async def _raise(exc: BaseException) -> Any:
    raise exc


def _failed(exc: BaseException) -> _MeshCall:
    """A call that fails with ``exc`` when awaited (as grpc.aio reports errors)."""
    return _MeshCall(streaming=False).start(_raise(exc))


def _abandoned(p: Prepared, t: Ticket) -> None:
    """A one-attempt call cancelled locally: its attempt ends with no outcome (as the
    engine's run records it), and its telemetry with the cancellation."""
    t.abandon()
    if p.obs is not None:
        p.obs.error(asyncio.CancelledError())


#: The attribute of grpcio's Cython call that holds a finished call's status (code as a
#: number, details, trailing metadata), read synchronously in its done callback; where
#: grpcio does not have it, the status is awaited instead.
_STATUS = "_status"
_DEADLINE_NUMBER = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
#: The engine's view of a one-attempt call that ended OK (its value is grpc.aio's).
_OK = Reply(None, grpc_status=0)


class MeshAioChannel(MeshChannelBase[grpc.aio.Channel], grpc.aio.Channel):  # type: ignore[misc]
    """A ``grpc.aio.Channel`` for an ``xds:///name`` target, routed by a :class:`Mesh`."""

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
        self._direct: grpc.aio.Channel | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._avoid_until = 0.0  # when avoid() next asks the sub-channels

    # -- grpc.aio.Channel ---------------------------------------------------------------

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY once the listener has a config; IDLE before; TRANSIENT_FAILURE on error."""
        slot = self._slot
        if slot.state is not None:
            return grpc.ChannelConnectivity.READY
        if slot.settled:
            return _TF
        return grpc.ChannelConnectivity.IDLE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() is last_observed_state:
            with contextlib.suppress(MeshError):
                await self.mesh.wait_state_async(self._slot, None)
            if self.get_state() is last_observed_state:
                return  # settled without changing (e.g. an error that persists)

    async def channel_ready(self) -> None:
        await self.mesh.wait_state_async(self._slot, None)

    async def close(self, grace: float | None = None) -> None:
        """Close every sub-channel (``grace`` seconds for in-flight calls)."""
        with self._lock:
            self._closed = True
            subs, self._subs = self._subs, {}
            direct, self._direct = self._direct, None
        for sub in subs.values():
            await sub.close(grace)
        if direct is not None:
            await direct.close(grace)

    async def __aenter__(self) -> MeshAioChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)

    # -- sub-channels -------------------------------------------------------------------

    def _new_channel(self, address: str, options: Options) -> grpc.aio.Channel:
        if self._credentials is not None:
            return grpc.aio.secure_channel(address, self._credentials, options, self._compression)
        return grpc.aio.insecure_channel(address, options, self._compression)

    def _new_tls_endpoint(
        self, address: str, plain: grpc.aio.Channel | None, options: Options
    ) -> grpc.aio.Channel:
        # Sub-channel for TLS clusters (mTLS from xDS, verified per material generation).
        from pymesh.grpc._tls_aio import AioTlsEndpoint

        return AioTlsEndpoint(address, self.authority, options, self._compression, plain)

    def _close_sub(self, address: str, sub: grpc.aio.Channel) -> None:
        self._failing.discard(address)
        self.spawn(sub.close(None))

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _watch_draining(self) -> None:
        async def watch() -> None:
            while self.reap():
                await asyncio.sleep(DRAIN_POLL)

        self.spawn(watch())

    def avoid(self) -> set[str]:
        # aio channels answer get_state() cheaply, so ask (no watcher threads or tasks),
        # but at most every _AVOID_REFRESH seconds, not per call: asking every
        # sub-channel is as costly as the cluster is big. Sticky as gRPC's round_robin:
        # avoided from TRANSIENT_FAILURE to READY.
        failing = self._failing
        now = time.monotonic()
        if now < self._avoid_until:
            return failing
        self._avoid_until = now + _AVOID_REFRESH
        for address, sub in list(self._subs.items()):
            state = sub.get_state(False)
            if state is _TF:
                failing.add(address)
            elif state is _READY:
                failing.discard(address)
        return failing

    def direct(self) -> grpc.aio.Channel:
        if self._direct is None:
            self._direct = self._new_channel(self.authority, self._options)
        return self._direct

    # -- the call path ------------------------------------------------------------------

    def prepare_now(
        self, method: str, timeout: float | None, metadata: Metadata | None
    ) -> Prepared | _Pending | None:
        """:meth:`prepare_call`'s planning when it needs no waiting (the common case):
        the Prepared call, None for passthrough, or a :class:`_Pending` plan that
        :meth:`prepare_call` finishes (no config yet, a cluster_header target to
        subscribe, a fault delay). Raises AioRpcError for a local status."""
        start = time.monotonic()
        obs = None if off() else self.observe(method)  # off: the common, cheap answer
        state = self._slot.state
        if state is None:
            return _Pending(obs, start, None, 0.0, None)
        try:
            delay, out = self.plan_on(state, method, timeout, metadata, start)
            if delay or type(out) is not Prepared:
                return self.unfinished(obs, start, state, delay, out)
        except BaseException as exc:
            if obs is not None:
                obs.error(exc)
            raise
        if obs is not None:
            obs.planned(out.plan)
            out.obs = obs
        return out

    @staticmethod
    def unfinished(
        obs: RpcObserver | None,
        start: float,
        state: ListenerState,
        delay: float,
        out: Prepared | LocalStatus,
    ) -> _Pending:
        """A plan of :meth:`plan_on` that is not a Prepared call to make now: the
        :class:`_Pending` plan to finish (a fault delay, a cluster_header target to
        subscribe), or its local status raised as AioRpcError."""
        if delay or (isinstance(out, LocalStatus) and out.wait_cluster is not None):
            return _Pending(obs, start, state, delay, out)
        assert isinstance(out, LocalStatus)
        raise _error(out)

    async def prepare_call(
        self,
        method: str,
        timeout: float | None,
        metadata: Metadata | None,
        pending: _Pending | None = None,
    ) -> Prepared | None:
        """Plan a call this channel makes, waiting as needed; None means passthrough.
        Raises AioRpcError for a local status. The Prepared carries the call's
        telemetry observer (a local status or passthrough ends or drops it here).
        ``pending``: what :meth:`prepare_now` left to finish."""
        if pending is None:
            now = self.prepare_now(method, timeout, metadata)
            if not isinstance(now, _Pending):
                return now
            pending = now
        obs = pending.obs
        start = pending.start
        try:
            state = pending.state
            delay, out = pending.delay, pending.out
            if state is None:
                slot = self._slot
                try:
                    state = await self.mesh.wait_state_async(slot, timeout)
                except MeshError as exc:
                    raise _error(LocalStatus(grpc.StatusCode.UNAVAILABLE, str(exc))) from None
                if state is None:
                    return None
                delay, out = self.plan_on(state, method, timeout, metadata, start)
            if isinstance(out, LocalStatus) and out.wait_cluster is not None:
                # A cluster_header target not subscribed yet: wait for it, plan again.
                state = await self.mesh.wait_cluster_async(state, out.wait_cluster, timeout)
                delay, out = self.plan_on(state, method, timeout, metadata, start)
            if delay:
                await asyncio.sleep(delay)
            if isinstance(out, LocalStatus):
                raise _error(out)
        except BaseException as exc:
            if obs is not None:
                obs.error(exc)
            raise
        assert out is not None
        if obs is not None:
            obs.planned(out.plan)
            out.obs = obs
        return out

    def local_error(self, status: LocalStatus) -> grpc.aio.AioRpcError:
        return _error(status)

    async def unary_response(
        self,
        p: Prepared,
        invoke: Callable[[grpc.aio.Channel, float | None, OutMetadata], Any],
        on_call: Callable[[Any], None],
        a: Attempts | None = None,
    ) -> Any:
        """Run a unary-response call through the engine (retries per A44 and the route,
        per-try timeout, hedging); ``on_call`` learns each attempt's grpc.aio call.
        ``a``: the call's attempts, if already made."""
        if a is None:
            a = self.new_attempts(p)
        try:
            result = await run_async(a, _UnaryIO(self, p, a, invoke, on_call))
        except BaseException as exc:
            err = self.failed(p, exc)
            if err is exc:
                raise
            raise err from None
        return self.unary_answer(p, result)

    async def _unary_ended_async(
        self, p: Prepared, a: Attempts | None, t: Ticket, call: Any
    ) -> None:
        # ended() for a call whose status only an await shows (grpcio without
        # _status, or a TLS endpoint's call still waiting for its pre-check).
        try:
            try:
                code = await call.code()
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
            if code is grpc.StatusCode.CANCELLED and call.cancelled():
                _abandoned(p, t)
                return
            if t.wants_load_report:
                t.report_trailers(await call.trailing_metadata())
            self.stream_ended(p, a, t, code, await call.details())
        except Exception:
            t.abandon()  # the slot at least comes back
            _log.exception("pymesh: recording the end of a gRPC call failed")

    def streaming(
        self, p: Prepared, start: Callable[[grpc.aio.Channel, float | None, OutMetadata], Any]
    ) -> Any:
        """Start a call with a streaming side (one attempt, no retries)."""
        a, t, call = self.start_stream(p, start)

        async def finish() -> None:
            # The stream's status (or its cancellation) ends its span.
            details = None
            try:
                code = await call.code()
                if p.obs is not None:
                    details = await call.details()
                if t.wants_load_report:  # weighted round robin's per-call ORCA report
                    t.report_trailers(await call.trailing_metadata())
            except BaseException:
                code = grpc.StatusCode.CANCELLED
            self.stream_ended(p, a, t, code, details)

        self.spawn(finish())
        cookie = session_cookie(p.plan, t) if p.plan.session is not None else None
        return call if cookie is None else AioCookieCall(call, cookie)


class _UnaryRequest:
    """One unary-unary call's request and options: :meth:`send` starts an attempt of it
    on a sub-channel (the engine's ``invoke``) and, for a call allowed one attempt,
    :meth:`ended` is grpc.aio's done callback that records its end. Bound methods of
    one small object per call instead of a closure, an options dict and a partial."""

    __slots__ = ("a", "ch", "kw", "mc", "p", "request", "ticket")

    mc: _UnaryUnary
    ch: MeshAioChannel
    request: Any
    #: The call's options for grpc; None: grpc's defaults (no credentials,
    #: wait_for_ready or compression).
    kw: dict[str, Any] | None
    #: The call's plan, attempts and its one attempt's ticket, once started alone
    #: (``a`` None: admitted by pymesh.call.start_alone, without Attempts).
    p: Prepared
    a: Attempts | None
    ticket: Ticket

    def send(self, sub: grpc.aio.Channel, timeout: float | None, metadata: OutMetadata) -> Any:
        """Start an attempt on ``sub``: its grpc.aio call."""
        mc = self.mc
        hit = mc._cache.get(id(sub))
        real = hit[1] if hit is not None and hit[0] is sub else mc._real(sub, "unary_unary")
        kw = self.kw
        if kw is None:
            return real(self.request, timeout=timeout, metadata=metadata)
        return real(self.request, timeout=timeout, metadata=metadata, **kw)

    def ended(self, call: Any) -> None:
        """grpc.aio's done callback of the one attempt: what the engine's one-attempt
        run (run_async, unary_answer) records for the same end. A local cancel abandons
        the attempt (no outcome), any status settles it."""
        ch, p, a, t = self.ch, self.p, self.a, self.ticket
        cython_call: Any = getattr(call, "_cython_call", None)
        status = getattr(cython_call, _STATUS, None)  # grpcio's Cython call: private
        if status is None:  # no status to read here: ask for it
            ch.spawn(ch._unary_ended_async(p, a, t, call))
            return
        try:
            if cython_call.is_locally_cancelled():
                _abandoned(p, t)
                return
            if t.wants_load_report:  # weighted round robin's per-call ORCA report
                t.report_trailers(status.trailing_metadata())
            number = status.code()  # the status as a number: no StatusCode round trip
            if number == 0:
                reply = _OK  # the engine only reads a reply: one for every OK call
            elif number == _DEADLINE_NUMBER:  # perhaps a per-try timeout (reply_of)
                reply = number_reply(a, t, number)
            else:
                reply = Reply(None, grpc_status=number)
            if a is None:  # admitted alone (pymesh.call.start_alone): no retry state
                t.answered(reply)
            else:
                a.settle(t, reply)
                t.release()
            obs = p.obs
            if obs is not None:
                obs.finish(status_code(number), status.details())
        except Exception:  # never into grpc's completion path: the call is answered
            t.abandon()  # the slot at least comes back
            _log.exception("pymesh: recording the end of a gRPC call failed")


class _UnaryIO:
    """The asyncio I/O of one unary-response call's attempts (pymesh.call.AsyncIO)."""

    __slots__ = ("a", "ch", "invoke", "on_call", "p")

    def __init__(
        self,
        ch: MeshAioChannel,
        p: Prepared,
        a: Attempts,
        invoke: Callable[[grpc.aio.Channel, float | None, OutMetadata], Any],
        on_call: Callable[[Any], None],
    ) -> None:
        self.ch = ch
        self.p = p
        self.a = a
        self.invoke = invoke
        self.on_call = on_call

    async def send(self, t: Ticket) -> Reply:
        begun = self.ch.begin(self.p, self.a, t)
        if begun is None:
            return reply_of(self.a, t, grpc.StatusCode.DEADLINE_EXCEEDED, None, _error(DEADLINE))
        call = self.invoke(*begun)
        self.on_call(call)
        try:
            response = await call
            if t.wants_load_report:  # weighted round robin's per-call ORCA report
                t.report_trailers(await call.trailing_metadata())
        except grpc.aio.AioRpcError as err:
            if t.wants_load_report:
                t.report_trailers(err.trailing_metadata())
            return reply_of(self.a, t, err.code(), None, err)
        except BaseException:
            call.cancel()
            raise
        if self.p.plan.session is not None:
            cookie = session_cookie(self.p.plan, t)
            if cookie is not None:  # A55: the caller learns its session's endpoint
                self.on_call(AioCookieCall(call, cookie))
        return Reply(response, grpc_status=0)

    def start(self, t: Ticket) -> asyncio.Future[Reply]:
        return asyncio.ensure_future(self.send(t))

    def collect(self, t: Ticket) -> Reply:
        task: asyncio.Future[Reply] = t.handle  # type: ignore[assignment]
        return task.result()

    async def discard(self, t: Ticket) -> None:
        return None

    async def cancel(self, t: Ticket) -> None:
        t.handle.cancel()  # type: ignore[attr-defined]  # send() cancels its call
        obs = self.p.obs
        if obs is not None:
            obs.attempt_done(grpc.StatusCode.CANCELLED, attempt=t.trace)


class _MeshCall(
    grpc.aio.UnaryUnaryCall,  # type: ignore[misc]
    grpc.aio.UnaryStreamCall,  # type: ignore[misc]
    grpc.aio.StreamUnaryCall,  # type: ignore[misc]
    grpc.aio.StreamStreamCall,  # type: ignore[misc]
):
    """One mesh call in every grpc.aio shape; delegates to the current attempt's call.

    ``_task`` ends with the response (unary-response calls) or with the underlying call
    once it is started (streaming calls). A unary-response call starts when it is made,
    as in grpc.aio, except that a caller awaiting it at once runs it in its own task (the
    common ``await stub.Method(request)``): no task of its own and one event-loop round
    trip less per call.
    """

    def __init__(self, streaming: bool) -> None:
        self._streaming = streaming
        self._call: Any = None
        self._task: asyncio.Future[Any] | None = None
        self._callbacks: list[Callable[[Any], None]] = []
        #: A unary-response call not started yet; its runner task once started alone.
        self._coro: Any = None
        self._runner: asyncio.Task[Any] | None = None

    def start(self, coro: Any) -> _MeshCall:
        if self._streaming:
            self._task = asyncio.ensure_future(coro)
            return self
        loop = asyncio.get_running_loop()
        self._coro = coro
        self._task = loop.create_future()  # the call's end, whoever runs it
        loop.call_soon(self._kick)
        return self

    def _kick(self) -> None:
        """Start the call in a task of its own, unless a caller is already running it."""
        coro, self._coro = self._coro, None
        if coro is not None:
            self._runner = asyncio.ensure_future(self._drive(coro))

    async def _drive(self, coro: Any) -> Any:
        """Run the call; its end also settles ``_task`` (for callbacks and accessors)."""
        fut = self.task
        try:
            result = await coro
        except asyncio.CancelledError:
            self._ended(fut.cancel())
            raise
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # the awaiter or the runner task reports it, not this
            self._ended()
            raise
        if not fut.done():
            fut.set_result(result)
        self._ended()
        return result

    def _ended(self, *_: object) -> None:
        # Done callbacks run as the call ends, before its awaiter resumes (as they did
        # when every call was a task).
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self)

    def set_call(self, call: Any) -> None:
        self._call = call

    @property
    def task(self) -> asyncio.Future[Any]:
        assert self._task is not None
        return self._task

    async def _settled(self) -> Any:
        """The underlying call once known, or the AioRpcError pymesh answered with."""
        try:
            result = await asyncio.shield(self.task)
        except grpc.aio.AioRpcError as err:
            return self._call if self._call is not None else err
        if self._streaming:
            return result
        return self._call

    async def _underlying(self) -> Any:
        # For the streaming shapes: the real call, or raise the local error.
        return await self.task

    # unary response ------------------------------------------------------------------
    def __await__(self) -> Generator[Any, None, Any]:
        if self._streaming:
            return self._await_stream().__await__()
        coro, self._coro = self._coro, None
        if coro is not None:  # awaited before it started: run it here
            return self._drive(coro).__await__()
        if self._runner is not None:
            return self._runner.__await__()
        return asyncio.shield(self.task).__await__()  # awaited again, after its end

    async def _await_stream(self) -> Any:
        call = await self._underlying()
        return await call

    # streaming response ----------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        call = await self._underlying()
        async for item in call:
            yield item

    async def read(self) -> Any:
        call = await self._underlying()
        return await call.read()

    async def write(self, request: Any) -> None:
        call = await self._underlying()
        await call.write(request)

    async def done_writing(self) -> None:
        call = await self._underlying()
        await call.done_writing()

    # grpc.aio.Call ---------------------------------------------------------------------
    async def initial_metadata(self) -> Any:
        call = await self._settled()
        if isinstance(call, grpc.aio.AioRpcError):
            return call.initial_metadata()
        return await call.initial_metadata() if call is not None else grpc.aio.Metadata()

    async def trailing_metadata(self) -> Any:
        call = await self._settled()
        if isinstance(call, grpc.aio.AioRpcError):
            return call.trailing_metadata()
        return await call.trailing_metadata() if call is not None else grpc.aio.Metadata()

    async def code(self) -> grpc.StatusCode:
        call = await self._settled()
        if isinstance(call, grpc.aio.AioRpcError):
            return call.code()
        if call is None:
            return grpc.StatusCode.UNKNOWN
        code: grpc.StatusCode = await call.code()
        return code

    async def details(self) -> str:
        call = await self._settled()
        if isinstance(call, grpc.aio.AioRpcError):
            return call.details() or ""
        if call is None:
            return ""
        details: str = await call.details()
        return details

    async def wait_for_connection(self) -> None:
        call = await self._settled()
        if call is not None and not isinstance(call, grpc.aio.AioRpcError):
            await call.wait_for_connection()

    def cancelled(self) -> bool:
        call = self._call
        return self.task.cancelled() or (call is not None and call.cancelled())

    def done(self) -> bool:
        if not self.task.done():
            return False
        call = self._call
        return call is None or not self._streaming or bool(call.done())

    def time_remaining(self) -> float | None:
        call = self._call
        return call.time_remaining() if call is not None else None

    def cancel(self) -> bool:
        call = self._call
        cancelled = call.cancel() if call is not None else False
        coro, self._coro = self._coro, None
        if coro is not None:  # never started
            coro.close()
            self._ended(self.task.cancel())
            return True
        runner = self._runner
        if runner is not None:
            runner.cancel()
        return bool(self.task.cancel() or cancelled)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._streaming:
            self.task.add_done_callback(lambda _t: self._add_stream_callback(callback))
        elif self.task.done():
            callback(self)
        else:
            self._callbacks.append(callback)

    def _add_stream_callback(self, callback: Callable[[Any], None]) -> None:
        call = self._call
        if call is None:
            callback(self)
        else:
            call.add_done_callback(lambda _c: callback(self))


#: The base of this channel's multi-callables (shared with the other flavour).
_MultiCallable = MultiCallableBase[MeshAioChannel, grpc.aio.Channel]


class _UnaryUnary(_MultiCallable, grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[misc]
    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:  # grpc.aio.UnaryUnaryCall: grpcio's own, or a _MeshCall
        ch = self._channel
        kw: dict[str, Any] | None = None
        if credentials is not None or wait_for_ready is not None or compression is not None:
            kw = {"credentials": credentials, "wait_for_ready": wait_for_ready}
            kw["compression"] = compression
        req = object.__new__(_UnaryRequest)  # no __init__: no frame per call
        req.mc, req.ch, req.request, req.kw = self, ch, request, kw
        a: Attempts | None = None
        try:
            state = ch._slot.state
            first: Prepared | _Pending | None
            if state is not None and off():
                # The common call (a config, telemetry off): prepare_now()'s planning
                # without its frame.
                start = time.monotonic()
                delay, out = ch.plan_on(state, self._method, timeout, metadata, start)
                if delay or type(out) is not Prepared:
                    first = ch.unfinished(None, start, state, delay, out)
                else:
                    first = out
            else:
                first = ch.prepare_now(self._method, timeout, metadata)
            if first is None:  # passthrough: the direct channel's own call
                return req.send(ch.direct(), timeout, metadata)
            if type(first) is Prepared and first.plan.session is None:
                alone = None
                if first.obs is None:
                    # The common call: no retry policy, nothing to steer; no Attempts.
                    alone = start_alone(
                        first.plan, ch.mesh.rng, ch.avoid(), first.deadline, grpc=True
                    )
                if alone is None:
                    a = (
                        ch.attempts(first.plan, first.state, deadline=first.deadline)
                        if first.obs is None
                        else ch.new_attempts(first)
                    )
                if alone is not None or (a is not None and a.limit == 1):  # one attempt
                    req.p, req.a = first, a
                    # grpc.aio's own call, awaited directly by the caller: no task,
                    # future or coroutine of pymesh's between them. Its end is recorded
                    # by its done callback (_UnaryRequest.ended), which grpc.aio runs as
                    # the call ends, before its awaiter resumes, awaited or not; as the
                    # sync channel's single-attempt futures.
                    _, req.ticket, call = ch.start_stream(first, req.send, a, alone)
                    call.add_done_callback(req.ended)
                    return call
        except BaseException as exc:
            return _failed(exc)
        mesh_call = _MeshCall(streaming=False)

        async def run() -> Any:
            p = first
            if not isinstance(p, Prepared):
                planned = await ch.prepare_call(self._method, timeout, metadata, p)
                if planned is None:
                    call = req.send(ch.direct(), timeout, metadata)
                    mesh_call.set_call(call)
                    return await call
                p = planned
            return await ch.unary_response(p, req.send, mesh_call.set_call, a)

        return mesh_call.start(run())


async def _buffer(requests: Any) -> list[Any]:
    if isinstance(requests, AsyncIterable):
        return [r async for r in requests]
    return list(requests)


class _StreamUnary(_MultiCallable, grpc.aio.StreamUnaryMultiCallable):  # type: ignore[misc]
    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> _MeshCall:
        kw = {"credentials": credentials, "wait_for_ready": wait_for_ready}
        kw["compression"] = compression
        ch = self._channel
        if request_iterator is None:  # the write()/done_writing() API: one attempt
            mesh_call = _MeshCall(streaming=True)

            async def start_stream() -> Any:
                p = await ch.prepare_call(self._method, timeout, metadata)
                if p is None:
                    call = self._real(ch.direct(), "stream_unary")(
                        None, timeout=timeout, metadata=metadata, **kw
                    )
                    mesh_call.set_call(call)
                    return call
                call = ch.streaming(
                    p,
                    lambda sub, t, md: self._real(sub, "stream_unary")(
                        None, timeout=t, metadata=md, **kw
                    ),
                )
                mesh_call.set_call(call)
                return call

            return mesh_call.start(start_stream())

        mesh_call = _MeshCall(streaming=False)

        async def run() -> Any:
            p = await ch.prepare_call(self._method, timeout, metadata)
            if p is None:
                call = self._real(ch.direct(), "stream_unary")(
                    request_iterator, timeout=timeout, metadata=metadata, **kw
                )
                mesh_call.set_call(call)
                return await call
            requests = request_iterator
            if ch.new_attempts(p).limit > 1:
                requests = await _buffer(request_iterator)  # replayed by a retry

            def invoke(sub: grpc.aio.Channel, t: float | None, md: OutMetadata) -> Any:
                it = iter(requests) if isinstance(requests, list) else requests
                return self._real(sub, "stream_unary")(it, timeout=t, metadata=md, **kw)

            return await ch.unary_response(p, invoke, mesh_call.set_call)

        return mesh_call.start(run())


class _Streaming(_MultiCallable):
    _kind = ""

    def _call(
        self,
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        kw: dict[str, Any],
    ) -> _MeshCall:
        ch = self._channel
        mesh_call = _MeshCall(streaming=True)

        async def start_stream() -> Any:
            p = await ch.prepare_call(self._method, timeout, metadata)
            if p is None:
                call = self._real(ch.direct(), self._kind)(
                    request, timeout=timeout, metadata=metadata, **kw
                )
                mesh_call.set_call(call)
                return call
            call = ch.streaming(
                p,
                lambda sub, t, md: self._real(sub, self._kind)(
                    request, timeout=t, metadata=md, **kw
                ),
            )
            mesh_call.set_call(call)
            return call

        return mesh_call.start(start_stream())


class _UnaryStream(_Streaming, grpc.aio.UnaryStreamMultiCallable):  # type: ignore[misc]
    _kind = "unary_stream"

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> _MeshCall:
        kw = {"credentials": credentials, "wait_for_ready": wait_for_ready}
        kw["compression"] = compression
        return self._call(request, timeout, metadata, kw)


class _StreamStream(_Streaming, grpc.aio.StreamStreamMultiCallable):  # type: ignore[misc]
    _kind = "stream_stream"

    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> _MeshCall:
        kw = {"credentials": credentials, "wait_for_ready": wait_for_ready}
        kw["compression"] = compression
        return self._call(request_iterator, timeout, metadata, kw)


MeshAioChannel._kinds = {
    "unary_unary": _UnaryUnary,
    "unary_stream": _UnaryStream,
    "stream_unary": _StreamUnary,
    "stream_stream": _StreamStream,
}


def insecure_channel(
    target: str,
    mesh: Mesh,
    options: Iterable[tuple[str, Any]] | None = None,
    compression: grpc.Compression | None = None,
) -> MeshAioChannel:
    """A ``grpc.aio.Channel`` for ``xds:///name`` whose calls are routed by ``mesh``."""
    return MeshAioChannel(target, mesh, options=options, compression=compression)


def secure_channel(
    target: str,
    credentials: grpc.ChannelCredentials,
    mesh: Mesh,
    options: Iterable[tuple[str, Any]] | None = None,
    compression: grpc.Compression | None = None,
) -> MeshAioChannel:
    """Like :func:`insecure_channel`, with ``credentials`` on every sub-channel."""
    return MeshAioChannel(
        target, mesh, credentials=credentials, options=options, compression=compression
    )


def server(
    *,
    mesh: Mesh,
    handlers: Sequence[Any] | None = None,
    interceptors: Sequence[Any] | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
    maximum_concurrent_rpcs: int | None = None,
    compression: grpc.Compression | None = None,
    on_serving_mode: ServingModeCallback | None = None,
    drain_grace: float = DEFAULT_DRAIN_GRACE,
) -> AioXdsServer:
    """An xDS-driven ``grpc.aio.Server`` (gRFC A36); see :func:`pymesh.grpc.server`.

    ``interceptors`` are ``grpc.aio.ServerInterceptor``; ``await server.start()`` in the
    loop that serves.
    """
    settings = ServerSettings(
        handlers=handlers,
        interceptors=interceptors,
        options=options,
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        compression=compression,
        on_serving_mode=on_serving_mode,
        drain_grace=drain_grace,
    )
    return AioXdsServer(mesh, settings)
