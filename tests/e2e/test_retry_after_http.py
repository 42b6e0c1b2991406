"""Retry-After through MeshTransport with real backends: both RFC 9110 forms
(delay-seconds and HTTP-date) of a reset header in rate_limited_retry_back_off make the
retry wait what the upstream asked for, sync and async."""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _edit import edited_mesh
from _http_server import QuietHandler, ThreadedServer

import pymesh
from pymesh.server import ControlPlane
from pymesh.testing import push_snapshot


class LimitedBackend(ThreadedServer):
    """Answers the first request 503 with ``Retry-After: retry_after()``, then 200;
    records when each request arrived."""

    def __init__(self, retry_after: Callable[[], str]) -> None:
        self.arrivals: list[float] = []
        lock = threading.Lock()
        backend = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                with lock:
                    backend.arrivals.append(time.monotonic())
                    first = len(backend.arrivals) == 1
                self.send_response(503 if first else 200)
                if first:
                    self.send_header("retry-after", retry_after())
                self.send_header("content-length", "0")
                self.end_headers()

        super().__init__(Handler)


def _rate_limited(rc: Any) -> None:
    for vh in rc.virtual_hosts:
        for r in vh.routes:
            rl = r.route.retry_policy.rate_limited_retry_back_off
            rl.reset_headers.add(name="Retry-After")  # format SECONDS
            rl.max_interval.FromSeconds(30)


FORMS: dict[str, Callable[[], str]] = {
    "delay-seconds": lambda: "2",
    # Two whole seconds ahead of the backend's clock: at least one second from the
    # client's current whole second when it reads it.
    "HTTP-date": lambda: email.utils.formatdate(int(time.time()) + 2, usegmt=True),
}


@pytest.mark.parametrize("transport", ["sync", "async"])
@pytest.mark.parametrize("form", list(FORMS))
def test_retry_waits_for_retry_after(
    form: str, transport: str, mesh: pymesh.Mesh, control_plane: ControlPlane
) -> None:
    backend = LimitedBackend(FORMS[form])
    try:
        config = {
            "services": {
                "reviews": {
                    "port": 9080,
                    "endpoints": [backend.address],
                    "routes": [
                        {
                            "timeout": "30s",
                            "retries": {"attempts": 1, "on": "5xx", "backoff": {"base": "1ms"}},
                        }
                    ],
                }
            }
        }
        push_snapshot(control_plane, mesh, edited_mesh(config, route=_rate_limited))
        if transport == "sync":
            with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=30) as c:
                status = c.get("http://reviews:9080/").status_code
        else:

            async def get() -> int:
                t = pymesh.AsyncMeshTransport(mesh)
                async with httpx.AsyncClient(transport=t, timeout=30) as c:
                    return (await c.get("http://reviews:9080/")).status_code

            status = asyncio.run(get())
        assert status == 200
        assert len(backend.arrivals) == 2
        # The retry waited what the upstream asked (the back-off alone is ≤ 1 ms); a
        # lower bound, which load cannot make flaky.
        assert backend.arrivals[1] - backend.arrivals[0] >= 1.0
    finally:
        backend.close()
