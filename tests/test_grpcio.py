"""pymesh._grpcio.close_channel: a sync grpc channel someone watched is closed only once
grpcio's connectivity poller thread has stopped (closed under it, that thread raises)."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest

from pymesh._grpcio import close_channel, poller_runs
from pymesh.testing.envoy import free_port
from tests._grpc_close import record_close

TIMEOUT = 30.0


def _watched_channel() -> tuple[grpc.Channel, list[bool | None], threading.Event]:
    """A channel with grpcio's poller running (a subscription just dropped), whose
    close() records whether that poller still ran, and says when it was called."""
    channel = grpc.insecure_channel(f"127.0.0.1:{free_port()}")
    reported = threading.Event()

    def watch(_: grpc.ChannelConnectivity) -> None:
        reported.set()

    channel.subscribe(watch)
    assert reported.wait(TIMEOUT)  # grpc reported a state: its poller runs
    channel.unsubscribe(watch)
    polling_at_close, closed = record_close(channel)
    return channel, polling_at_close, closed


@pytest.fixture
def thread_errors() -> Any:
    """Exceptions raised in other threads (grpcio's poller) during the test."""
    errors: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    yield errors
    threading.excepthook = hook


def test_a_watched_channel_closes_once_grpcs_poller_has_stopped(
    thread_errors: list[BaseException | None],
) -> None:
    channel, polling_at_close, closed = _watched_channel()
    assert poller_runs(channel)  # still in its 0.2 s wait
    close_channel(channel)
    assert closed.wait(TIMEOUT)
    assert polling_at_close == [False]
    assert thread_errors == []


def test_an_unwatched_channel_closes_at_once() -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{free_port()}")
    assert not poller_runs(channel)
    close_channel(channel)
    with pytest.raises(ValueError):  # grpc's own answer for a closed channel
        channel.unary_unary("/x/y")(b"", timeout=1)
