"""Letting request threads run while the xDS thread does a long stretch of Python work.

CPython hands the GIL to a waiting thread only every 5 ms (the switch interval), and a
request needs it several times (after each socket call). So a big xDS response decoded
and applied in one go held every request up ~6 ms at a time (benchmarks/xds_scale.py,
3 000 services), and a 10 000-endpoint assignment parsed in one go (~30 ms) held them up
by its whole length. :func:`pause` releases the GIL briefly once per 0.5 ms of work;
callers call it often (per resource, per 64 endpoints), and it is cheap when not due.
"""

from __future__ import annotations

import time

__all__ = ["SLICE", "pause"]

#: Seconds of work between two GIL releases.
SLICE = 0.0005

_perf = time.perf_counter
_sleep = time.sleep
# When the next release is due. Shared by threads: a race costs one early or late
# release, nothing else.
_next = 0.0


def pause() -> None:
    """Release the GIL if ``SLICE`` has passed since the last release. A first call, or
    one after more than a second without any, only starts the clock."""
    global _next
    now = _perf()
    if now >= _next:
        if now - _next < 1.0:  # work went on since the last release: it is due
            _sleep(0)  # releases the GIL; a waiting request thread takes it
        _next = _perf() + SLICE
