"""Closing grpcio's sync channels whose connectivity someone watched.

grpcio runs a thread per sync channel with connectivity subscriptions (its
``_poll_connectivity``): it waits on the channel's state 0.2 s at a time, and between two
waits checks whether any subscription is left. When the channel is closed in that gap,
its next wait raises "Cannot monitor channel state: Channel closed!" in that thread,
which Python prints as an unhandled exception (and pytest turns into a failure). It
happens to any grpcio user who subscribes and closes; pymesh watches every sync
sub-channel (an endpoint in TRANSIENT_FAILURE is avoided), so it closes them here:
once no subscription is left the poller stops by itself within a wait or two, and the
channel is closed after that (:func:`close_channel`).
"""

from __future__ import annotations

import threading
import time

import grpc

__all__ = ["close_channel", "poller_runs"]

#: The longest a close waits for grpcio's poller to stop (it stops within one or two of
#: its 0.2 s waits of the last unsubscription; later only on a starved machine, and then
#: the close goes ahead).
POLLER_STOP_WAIT = 2.0
_CHECK_EVERY = 0.02

_lock = threading.Lock()
_pending: list[tuple[grpc.Channel, float]] = []  # channel, when to close it anyway
_closer: threading.Thread | None = None


def poller_runs(channel: grpc.Channel) -> bool | None:
    """Whether grpcio's connectivity poller thread of ``channel`` still runs (its private
    ``_connectivity_state.polling``); None where grpcio does not show it."""
    state = getattr(channel, "_connectivity_state", None)
    polling = getattr(state, "polling", None)
    return polling if isinstance(polling, bool) else None


def close_channel(channel: grpc.Channel) -> None:
    """Close ``channel``, whose subscriptions the caller has dropped: at once when
    grpcio's poller does not run, else once it has stopped (bounded by
    :data:`POLLER_STOP_WAIT`) on a background thread, so that a caller on the request
    path never waits for it."""
    if not poller_runs(channel):
        channel.close()
        return
    global _closer
    with _lock:
        _pending.append((channel, time.monotonic() + POLLER_STOP_WAIT))
        if _closer is None:
            _closer = threading.Thread(target=_close_pending, name="pymesh-grpc-close")
            _closer.daemon = True
            _closer.start()


def _close_pending() -> None:
    """The background closer: runs while channels wait for their poller to stop."""
    global _closer
    pause = threading.Event()
    while True:
        pause.wait(_CHECK_EVERY)
        now = time.monotonic()
        with _lock:
            due = [(c, d) for c, d in _pending if not poller_runs(c) or now >= d]
            for item in due:
                _pending.remove(item)
            if not _pending and not due:
                _closer = None
                return
        for channel, _ in due:
            channel.close()
