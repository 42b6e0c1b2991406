"""The ADS stream on grpc's sync stack, bridged into the xDS client's event loop.

Why not grpc.aio: grpcio's aio stack has one completion queue per process and wakes every
event loop bound to it through one shared socket, a byte per completion. An xDS client
running grpc.aio on its own loop therefore woke up for every completion of the
application's grpc.aio calls, and drained and handed them over across threads: a native
grpc.aio client lost 10–30 % of its unary throughput as soon as a Mesh was open in its
process (benchmarks/grpc_channel.py --aio, ``grpcio-xds+mesh``). The sync stack has
completion queues of its own, so the xDS client costs the application's calls nothing.

The bridge keeps every piece of client state on the loop:

- requests are built on the loop when grpc's request thread asks for the next one (as
  an aio request generator was pulled), so what piles up meanwhile goes out as one;
- responses are read (and deserialized) by a reader thread per stream and handed to the
  loop one at a time;
- connectivity (gRFC A71's "can this server be reached?") comes from grpc's subscription
  callbacks, handed to the loop likewise.

Every thread here ends with its stream: a cancelled call ends the reader, and the request
thread stops asking once the stream is marked ended (within ``_POLL`` seconds, even when
the loop is already gone).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import grpc

from pymesh._grpcio import POLLER_STOP_WAIT, close_channel, poller_runs

#: How often grpc's request thread, waiting for the loop to build a request, checks
#: whether its stream has ended.
_POLL = 0.25

#: How long grpcio's connectivity poller may take to act on a subscription's "try to
#: connect" (it polls every 0.2 s), with a margin: what :meth:`Connectivity.close` waits
#: where grpcio does not show whether its poller still runs.
_KICK_TAKEN = 0.3


_END = object()


class StreamEnded(Exception):
    """The server closed the stream (the response iterator ended without an error)."""


class Stream:
    """One bidirectional ADS call whose requests come from, and responses go to, the
    loop. ``open`` starts it; ``next_response`` yields responses; ``close`` ends it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._responses: asyncio.Queue[Any] = asyncio.Queue()
        self._ended = threading.Event()
        self._call: Any = None

    def open(
        self,
        method: Callable[[Iterator[Any]], Any],
        next_request: Callable[[], Coroutine[Any, Any, Any | None]],
    ) -> None:
        """Start the call ``method`` (a stub's stream-stream method) with requests from
        ``next_request`` (a coroutine function run on the loop; None ends the requests)."""
        self._call = method(self._requests(next_request))
        threading.Thread(target=self._read, name="pymesh-xds-read", daemon=True).start()

    async def next_response(self) -> Any:
        """The next response; raises the call's grpc.RpcError, or StreamEnded."""
        item = await self._responses.get()
        if item is _END:
            raise StreamEnded
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """End the call (idempotent); the threads follow."""
        self._ended.set()
        if self._call is not None:
            self._call.cancel()

    def _requests(
        self, next_request: Callable[[], Coroutine[Any, Any, Any | None]]
    ) -> Iterator[Any]:
        # On grpc's request thread: each request is built on the loop when grpc is ready
        # to send it.
        loop, ended = self._loop, self._ended
        while not ended.is_set():
            try:
                fut = asyncio.run_coroutine_threadsafe(next_request(), loop)
            except RuntimeError:  # the loop is closed
                return
            while True:
                try:
                    request = fut.result(_POLL)
                    break
                except concurrent.futures.TimeoutError:
                    if ended.is_set():
                        fut.cancel()
                        return
                except (concurrent.futures.CancelledError, RuntimeError):
                    return
            if request is None:
                return
            yield request

    def _read(self) -> None:
        # On the reader thread: every response, then how the call ended, to the loop.
        item: object = _END
        try:
            for response in self._call:
                if not self._post(response):
                    return
        except grpc.RpcError as e:
            item = e
        except Exception as e:  # an undecodable response and the like
            item = e
        self._post(item)

    def _post(self, item: object) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._responses.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is reading any more
            self.close()
            return False
        return True


class Connectivity:
    """A sync channel's connectivity state, followed on the loop while something waits
    on it (``async with``): grpc calls back on its own thread; the loop sees each state
    in turn.

    grpcio polls a subscribed channel on a thread of its own, which lingers up to 0.2 s
    after the last unsubscription. So the channel is watched only while the client waits
    to connect (a connected stream has none, and its channel closes at once). A
    subscription made while that thread still runs leaves it a "try to connect" flag,
    which sends it round its loop once more; if the channel is closed meanwhile, the
    thread fails on it (a traceback on stderr). So after such a subscription
    :meth:`close` waits for the thread to stop first."""

    def __init__(self, channel: grpc.Channel, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = channel
        self._loop = loop
        self.state: grpc.ChannelConnectivity | None = None
        self._changed = asyncio.Event()
        self._subscribed = False  # ever: the first subscription leaves no flag behind
        self._watching = False  # subscribed now (inside ``async with``)
        # Loop time of the last flag-leaving subscription; None: none was made.
        self._kicked: float | None = None
        # A connect was asked for and the channel has not left IDLE since: an IDLE
        # report then is the state before that attempt, not a reason to ask again.
        self._asked = False

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._set, state)

    def _set(self, state: grpc.ChannelConnectivity) -> None:
        self.state = state
        if state != grpc.ChannelConnectivity.IDLE:
            self._asked = False
        self._changed.set()

    def _subscribe(self) -> None:
        if self._subscribed:
            self._kicked = self._loop.time()
        self._subscribed = self._asked = True
        self.channel.subscribe(self._on_state, try_to_connect=True)

    def kick_if_idle(self) -> None:
        """Ask the channel to connect if it is IDLE and not asked since (grpc has no
        other public way than a new subscription with try_to_connect)."""
        if self.state == grpc.ChannelConnectivity.IDLE and not self._asked:
            self.channel.unsubscribe(self._on_state)
            self._subscribe()

    async def __aenter__(self) -> Connectivity:
        self.state = None  # until grpc reports the current one
        self._watching = True
        self._subscribe()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._watching = False
        self.channel.unsubscribe(self._on_state)

    async def close(self) -> None:
        """Close the channel; after a "try to connect" subscription made while grpc's
        poller ran, once that poller has stopped (see the class)."""
        loop = self._loop
        try:
            if self._watching:  # the poller stops once no subscription is left
                self.channel.unsubscribe(self._on_state)
                self._watching = False
            if self._kicked is not None:
                runs = poller_runs(self.channel)
                if runs is None:  # grpcio does not say: give it the time to take the flag
                    wait = self._kicked + _KICK_TAKEN - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                else:
                    deadline = loop.time() + POLLER_STOP_WAIT
                    while runs and loop.time() < deadline:
                        await asyncio.sleep(0.02)
                        runs = bool(poller_runs(self.channel))
        finally:
            # Closed even when the wait is cancelled; without a kick (or past the wait)
            # the poller may still be between two of its waits: close_channel closes
            # once it has stopped, on a background thread if need be.
            close_channel(self.channel)

    async def changed(self, since: grpc.ChannelConnectivity | None) -> None:
        """Return once the state is other than ``since`` (at once if it already is)."""
        while self.state == since:
            self._changed.clear()
            await self._changed.wait()

    async def connects(self) -> bool:
        """Try to connect: True once READY, False on TRANSIENT_FAILURE."""
        while self.state != grpc.ChannelConnectivity.READY:
            if self.state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                return False
            self.kick_if_idle()
            await self.changed(self.state)
        return True


async def any_change(
    watches: list[Connectivity], seen: list[grpc.ChannelConnectivity | None] | None = None
) -> None:
    """Return once any of ``watches`` is in another state than ``seen`` (the states the
    caller last acted on; default: now). An IDLE channel is asked to connect first."""
    states = [w.state for w in watches] if seen is None else seen
    for w in watches:
        w.kick_if_idle()
    waits = [asyncio.ensure_future(w.changed(s)) for w, s in zip(watches, states, strict=True)]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
