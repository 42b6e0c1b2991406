"""The attempt loop, written once: a generator of I/O steps that every driver runs.

:func:`steps` is the whole retry / back-off / hedging loop of one call, sans-I/O. It
yields what it needs done and is sent the result:

* a :class:`Ticket` — send this attempt and wait for its :class:`Reply`;
* a ``float`` — sleep that many seconds (retry back-off);
* :class:`Launch` — start this attempt without waiting (hedging);
* :class:`Wait` — wait until an attempt in flight ends, at most ``timeout`` seconds;
  answer ``[(ticket, reply), ...]`` (possibly empty);
* :class:`Discard` — close this attempt's dropped answer (a retried response);
* :class:`Abandon` — cancel these attempts in flight (they lost the race).

It returns the caller's answer: a :class:`~pymesh.call.LocalReply`, or the Ticket whose
``reply`` (an answer, or the last failure) goes to the caller. :func:`run_sync` and
:func:`run_async` are the only two loops that perform the steps, for any protocol (a
call allowed one attempt only skips the generator: nothing to loop over);
a driver supplies the protocol I/O (:class:`SyncIO` / :class:`AsyncIO`). An exception of
the driver's I/O is thrown into the generator, which gives back what the call holds.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Generator, Sequence
from typing import Any, Protocol

from pymesh.call._admit import Reply, Ticket
from pymesh.call._attempts import Attempts
from pymesh.call._plan import LocalReply

__all__ = [
    "Abandon",
    "AsyncIO",
    "Discard",
    "Launch",
    "Step",
    "SyncIO",
    "Wait",
    "run_async",
    "run_sync",
    "steps",
]


class Launch:
    """Start ``ticket``'s attempt and do not wait for it (hedging)."""

    __slots__ = ("ticket",)

    def __init__(self, ticket: Ticket) -> None:
        self.ticket = ticket


class Wait:
    """Wait for one of ``tickets`` (in flight) to end, at most ``timeout`` seconds."""

    __slots__ = ("tickets", "timeout")

    def __init__(self, tickets: Sequence[Ticket], timeout: float | None) -> None:
        self.tickets = tickets
        self.timeout = timeout


class Discard:
    """Close ``ticket``'s answer: it was dropped (retried, or lost to another)."""

    __slots__ = ("ticket",)

    def __init__(self, ticket: Ticket) -> None:
        self.ticket = ticket


class Abandon:
    """Cancel ``tickets`` still in flight (already given back to the engine)."""

    __slots__ = ("tickets",)

    def __init__(self, tickets: Sequence[Ticket]) -> None:
        self.tickets = tickets


Step = Ticket | float | Launch | Wait | Discard | Abandon
Steps = Generator[Step, Any, "Ticket | LocalReply"]


def steps(a: Attempts) -> Steps:
    """The attempts of one call, as steps (see the module docstring)."""
    if a.hedging:
        return (yield from _hedged(a))
    while True:
        t = a.start()
        if type(t) is not Ticket:
            return t  # a LocalReply
        try:
            reply = yield t
        except BaseException:
            t.abandon()
            raise
        if reply.refused is not None:
            return a.refuse(t, reply)
        if not a.settle(t, reply):
            return t
        if reply.failure is None:
            yield Discard(t)
        delay = a.backoff()
        if delay is None:
            return a.deadline_exceeded()
        if delay > 0:
            yield delay


def _hedged(a: Attempts) -> Steps:
    """Envoy's ``hedge_on_per_try_timeout``: a per-try timeout does not cancel the
    attempt; it counts as a timeout for outlier detection and, if the retry policy allows
    a retry, another attempt starts after the usual back-off while the first goes on.
    The first answer that does not match retry_on wins and the others are cancelled; a
    retriable answer nobody can retry is dropped while others are in flight and is the
    answer only when it is the last; the route timeout ends everything (local 504)."""
    inflight: list[Ticket] = []
    try:
        result = yield from _race(a, inflight)
    except GeneratorExit:
        for t in inflight:
            t.abandon()
        raise
    except BaseException:
        for t in inflight:
            t.abandon()
        if inflight:
            yield Abandon(tuple(inflight))
        raise
    if inflight:
        for t in inflight:
            t.abandon()
        yield Abandon(tuple(inflight))
    return result


def _race(a: Attempts, inflight: list[Ticket]) -> Steps:
    launch_at: float | None = 0.0  # when the next attempt starts; None: none pending
    while True:
        if launch_at is not None and time.monotonic() >= launch_at:
            launch_at = None
            t = a.start()
            if type(t) is not Ticket:
                if not inflight:
                    return t  # a LocalReply
            else:
                try:
                    yield Launch(t)
                except BaseException:
                    t.abandon()
                    raise
                inflight.append(t)
        wake = _wake_in(inflight, launch_at, time.monotonic())
        if not inflight:
            yield wake or 0.0  # only a back-off before the next attempt
            continue
        finished: list[tuple[Ticket, Reply]] = yield Wait(tuple(inflight), wake)
        for t, reply in finished:
            if t not in inflight:
                continue  # ended after it was abandoned
            inflight.remove(t)
            others = bool(inflight) or launch_at is not None
            if reply.refused is not None:
                refused = a.refuse(t, reply)
                if others:
                    continue  # the attempts in flight may still answer
                return refused
            if a.settle(t, reply):
                if reply.failure is None:
                    yield Discard(t)
                delay = a.backoff()
                if delay is not None:
                    launch_at = time.monotonic() + delay
                elif not others:
                    return a.deadline_exceeded()
                continue
            if others and (reply.failure is not None or a.retriable):
                # A retriable answer (or failure) nobody will retry: wait for the others.
                if reply.failure is None:
                    t.release()
                    yield Discard(t)
                continue
            return t
        now = time.monotonic()
        for t in tuple(inflight):
            due = not t.hedged and t.hedge_at is not None and t.hedge_at <= now
            if due and a.hedge(t):
                delay = a.backoff()
                if delay is not None:
                    launch_at = now + delay


def _wake_in(inflight: list[Ticket], launch_at: float | None, now: float) -> float | None:
    """Seconds until the next launch or soft per-try timeout; None = only answers."""
    due = launch_at
    for t in inflight:
        at = t.hedge_at
        if not t.hedged and at is not None and (due is None or at < due):
            due = at
    return None if due is None else max(due - now, 0.0)


class SyncIO(Protocol):
    """A blocking driver's protocol I/O for :func:`run_sync`."""

    def send(self, t: Ticket) -> Reply: ...
    def start(self, t: Ticket) -> Any: ...  # a future with add_done_callback(fn(future))
    def collect(self, t: Ticket) -> Reply: ...
    def discard(self, t: Ticket) -> None: ...
    def cancel(self, t: Ticket) -> None: ...


class AsyncIO(Protocol):
    """An asyncio driver's protocol I/O for :func:`run_async`."""

    async def send(self, t: Ticket) -> Reply: ...
    def start(self, t: Ticket) -> asyncio.Future[Any]: ...
    def collect(self, t: Ticket) -> Reply: ...
    async def discard(self, t: Ticket) -> None: ...
    async def cancel(self, t: Ticket) -> None: ...


def run_sync(a: Attempts, io: SyncIO) -> Ticket | LocalReply:
    """Perform the steps of ``a``'s attempts, blocking; returns the caller's answer."""
    if a.limit == 1:  # one attempt (no retries, or a body sent once): nothing to loop
        t = a.start()
        if type(t) is Ticket:
            try:
                reply = io.send(t)
            except BaseException:
                t.abandon()
                raise
            if reply.refused is not None:
                return a.refuse(t, reply)
            a.settle(t, reply)
        return t
    gen = steps(a)
    done: queue.SimpleQueue[Ticket] | None = None
    try:
        step = next(gen)
        while True:
            try:
                kind = type(step)
                value: Any = None
                if kind is Ticket:
                    value = io.send(step)  # type: ignore[arg-type]
                elif kind is float:
                    time.sleep(step)  # type: ignore[arg-type]
                elif kind is Discard:
                    io.discard(step.ticket)  # type: ignore[union-attr]
                elif kind is Launch:
                    if done is None:
                        done = queue.SimpleQueue()
                    t = step.ticket  # type: ignore[union-attr]
                    handle = t.handle = io.start(t)
                    handle.add_done_callback(lambda _f, t=t, q=done: q.put(t))
                elif kind is Wait:
                    assert done is not None
                    value = []
                    try:
                        ended = [done.get(timeout=step.timeout)]  # type: ignore[union-attr]
                    except queue.Empty:
                        ended = []
                    while not done.empty():
                        ended.append(done.get_nowait())
                    live = step.tickets  # type: ignore[union-attr]
                    # (an attempt abandoned earlier may end now: nobody reads it)
                    value = [(t, io.collect(t)) for t in ended if t in live]
                else:
                    for t in step.tickets:  # type: ignore[union-attr]
                        io.cancel(t)
            except BaseException as exc:
                step = gen.throw(exc)
                continue
            step = gen.send(value)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(a: Attempts, io: AsyncIO) -> Ticket | LocalReply:
    """Perform the steps of ``a``'s attempts on the running event loop; returns the
    caller's answer."""
    if a.limit == 1:  # one attempt (no retries, or a body sent once): nothing to loop
        t = a.start()
        if type(t) is Ticket:
            try:
                reply = await io.send(t)
            except BaseException:
                t.abandon()
                raise
            if reply.refused is not None:
                return a.refuse(t, reply)
            a.settle(t, reply)
        return t
    gen = steps(a)
    try:
        step = next(gen)
        while True:
            try:
                kind = type(step)
                value: Any = None
                if kind is Ticket:
                    value = await io.send(step)  # type: ignore[arg-type]
                elif kind is float:
                    await asyncio.sleep(step)  # type: ignore[arg-type]
                elif kind is Discard:
                    await io.discard(step.ticket)  # type: ignore[union-attr]
                elif kind is Launch:
                    t = step.ticket  # type: ignore[union-attr]
                    t.handle = io.start(t)
                elif kind is Wait:
                    by_handle: dict[Any, Ticket] = {t.handle: t for t in step.tickets}  # type: ignore[union-attr]
                    ended, _ = await asyncio.wait(
                        by_handle,
                        timeout=step.timeout,  # type: ignore[union-attr]
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    value = [(by_handle[h], io.collect(by_handle[h])) for h in ended]
                else:
                    for t in step.tickets:  # type: ignore[union-attr]
                        await io.cancel(t)
            except BaseException as exc:
                step = gen.throw(exc)
                continue
            step = gen.send(value)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
