"""Testing your own code against a mesh with pymesh's pytest fixtures.

Run: python -m pytest examples/fixtures_test.py   (needs pytest: pip install 'pymesh[examples]')

Installing pymesh registers the fixtures (``control_plane``, ``mesh``, ``echo_backends``,
``push_mesh``, ...) with pytest; no conftest.py is needed. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

import pymesh
from pymesh.server import Snapshot
from pymesh.testing import EchoBackend


def fetch_reviews(client: httpx.Client) -> str:
    """The application code under test: which backend served /reviews?"""
    return client.get("http://reviews:9080/reviews").headers["x-backend"]


def test_canary_gets_its_share(
    mesh: pymesh.Mesh,
    push_mesh: Callable[..., Snapshot],
    echo_backends: Callable[..., list[EchoBackend]],
) -> None:
    stable, canary = echo_backends(2, "reviews")
    config: dict[str, Any] = {
        "services": {
            "reviews": {
                "port": 9080,
                "versions": {
                    "stable": {"endpoints": [stable.address]},
                    "canary": {"endpoints": [canary.address]},
                },
                "routes": [{"split": {"stable": 75, "canary": 25}}],
            }
        }
    }
    push_mesh(config)
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        served = Counter(fetch_reviews(client) for _ in range(400))
    assert 60 <= served[canary.name] <= 140  # 25% of 400, generously


def test_retries_hide_a_failing_backend(
    mesh: pymesh.Mesh, push_mesh: Callable[..., Snapshot], echo_backend: EchoBackend
) -> None:
    echo_backend.fail_next(2, status=503)
    push_mesh(
        {
            "services": {
                "reviews": {
                    "port": 9080,
                    "endpoints": [echo_backend.address],
                    "routes": [{"retries": {"attempts": 2, "on": "5xx"}}],
                }
            }
        }
    )
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        assert fetch_reviews(client) == "echo"
    assert [r.status for r in echo_backend.requests] == [503, 503, 200]
