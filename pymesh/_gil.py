"""Letting request threads run while the xDS thread does a long stretch of Python work.

A thread that wants the GIL waits for its holder to release it, or for the switch
interval (5 ms by default) to pass, after which CPython makes the holder hand it over. A
request needs the GIL several times (after each socket call), so while the xDS thread
decodes and applies a big response (a 10 000-endpoint assignment is ~25 ms of Python)
every request would wait up to 5 ms each time.

:func:`short_turns` lowers the switch interval to ``TURN`` while such work runs: a
waiting thread then gets the GIL within 0.5 ms, and CPython's forced switch waits until
it has it (a guaranteed hand-over). Nothing happens when no thread waits, unlike
releasing the GIL by sleeping, which on Linux sleeps ~50-90 µs (the kernel's timer
slack) each time whether a thread waits or not. The block sleeps once, as it lowers the
interval: a thread that began waiting before would otherwise wait out the 5 ms it began
with (CPython reads the interval as each wait starts).

The switch interval is process-wide; it is lowered only while the work runs, and put
back unless someone else changed it meanwhile.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["TURN", "short_turns"]

#: The switch interval (seconds) while :func:`short_turns` is active.
TURN = 0.0005

_lock = threading.Lock()
_active = 0  # short_turns() blocks running now, in any thread
_saved = 0.0  # the switch interval to put back when the last one ends
_ours = 0.0  # the interval as CPython reports it once set to TURN (whole microseconds)


@contextmanager
def short_turns() -> Iterator[None]:
    """Run the block with the switch interval at most ``TURN`` (see the module)."""
    global _active, _saved, _ours
    lowered = False
    with _lock:
        if _active == 0:
            _saved = sys.getswitchinterval()
            if _saved > TURN:
                sys.setswitchinterval(TURN)
                _ours = sys.getswitchinterval()
                lowered = True
        _active += 1
    if lowered:
        # A thread already waiting for the GIL waits out the interval it started with
        # (5 ms) before CPython makes us hand it over; let it have the GIL now, so that
        # from here on every wait is a short one. One release, ~0.1 ms, per block.
        time.sleep(0)
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            # Put back only what we changed: an application that set its own interval
            # meanwhile keeps it.
            if _active == 0 and _saved > TURN and sys.getswitchinterval() == _ours:
                sys.setswitchinterval(_saved)
