"""Recording when a sync grpc channel is closed, and whether grpcio's connectivity
poller still ran then (pymesh._grpcio.close_channel must wait for it to stop)."""

from __future__ import annotations

import threading

import grpc

from pymesh._grpcio import poller_runs


def record_close(channel: grpc.Channel) -> tuple[list[bool | None], threading.Event]:
    """Wrap ``channel.close``: the list gets whether the poller ran at each close, and
    the event is set once it was called."""
    polling_at_close: list[bool | None] = []
    closed = threading.Event()
    real_close = channel.close

    def close() -> None:
        polling_at_close.append(poller_runs(channel))
        real_close()
        closed.set()

    channel.close = close  # type: ignore[method-assign]
    return polling_at_close, closed
