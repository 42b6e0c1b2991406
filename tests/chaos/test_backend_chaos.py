"""Backends misbehave under live traffic: one is SIGKILLed, one accepts connections and
never answers. With retries and outlier detection configured, idempotent requests see
no failure, in httpx sync and async alike.

Backends are real child processes (or, for the black hole, a real listening socket);
the control plane is the embedded one, serving a mesh file.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from _procs import Child, Traffic, echo_backend

import pymesh
from pymesh.testing import EchoBackend

pytestmark = pytest.mark.timeout(300)

Push = Callable[..., Any]


def _resilient(endpoints: list[str]) -> dict[str, Any]:
    return {
        "services": {
            "reviews": {
                "port": 9080,
                "endpoints": endpoints,
                "routes": [
                    {
                        "timeout": "20s",
                        "retries": {
                            "attempts": 3,
                            "on": "5xx,reset,connect-failure",
                            "per_try_timeout": "500ms",
                            "backoff": {"base": "10ms", "max": "50ms"},
                        },
                    }
                ],
                "traffic_policy": {
                    "lb": "ROUND_ROBIN",
                    # Envoy's default allows 3 concurrent retries; 40 concurrent requests
                    # to a cluster with a dead host need more.
                    "circuit_breakers": {"max_retries": 100},
                    "outlier_detection": {
                        "consecutive_5xx": 2,
                        "consecutive_gateway_failure": 2,
                        "interval": "1s",
                        "base_ejection_time": "30s",
                        "max_ejection_percent": 50,
                    },
                },
            }
        }
    }


@pytest.fixture
def three_backends() -> Iterator[list[Child]]:
    children = [echo_backend(f"b{i}") for i in range(3)]
    yield children
    for c in children:
        c.kill()


def _address(child: Child) -> str:
    assert child.match is not None
    return f"127.0.0.1:{child.match[1]}"


def test_backend_killed_mid_traffic(
    mesh: pymesh.Mesh, push_mesh: Push, three_backends: list[Child]
) -> None:
    push_mesh(_resilient([_address(c) for c in three_backends]))
    victim = three_backends[0]
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        with Traffic(lambda: client.get("http://reviews:9080/", timeout=30)) as traffic:
            traffic.wait_for(100)
            victim.kill()
            before = Counter(traffic.answered_by)
            traffic.wait_for(300)
        after = traffic.answered_by - before
    assert not traffic.failures, traffic.failures
    assert after["b0"] == 0 and after["b1"] > 0 and after["b2"] > 0, after


class BlackHole:
    """Accepts TCP connections and never answers (nor closes them)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="black-hole").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


def test_backend_that_never_answers(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    hole = BlackHole()
    good = echo_backends(2, "ok")
    try:
        push_mesh(_resilient([hole.address, *(b.address for b in good)]))
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            answers = [client.get("http://reviews:9080/", timeout=30) for _ in range(40)]

        async def async_run() -> list[httpx.Response]:
            async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)) as ac:
                return await asyncio.gather(
                    *(ac.get("http://reviews:9080/", timeout=30) for _ in range(40))
                )

        answers += asyncio.run(async_run())
    finally:
        hole.close()
    assert [r.status_code for r in answers] == [200] * 80
    assert {r.headers["x-backend"] for r in answers} == {b.name for b in good}
    assert hole.accepted, "the black hole was never tried: the test proves nothing"
