"""A route whose ``cluster_header`` names a cluster no route references, through Envoy
and through pymesh under the same xDS config: Envoy resolves it among all the clusters
it has; pymesh subscribes it on demand (the first request waits for it, the subscription
is kept), and a cluster that does not exist is a 503 NC in both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _edit import edited_mesh
from _peers import envoy_snapshot, start_envoy
from test_resilience_vs_envoy import Pair

from pymesh.server import ROUTE_TYPE
from pymesh.testing import EchoBackend

HEADER = "x-target-cluster"


def _by_header(rc: Any) -> None:
    if rc.name.startswith("reviews"):
        for vh in rc.virtual_hosts:
            for r in vh.routes:
                r.route.cluster_header = HEADER  # replaces the route's cluster


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def test_cluster_header_target_is_subscribed_on_demand(pair: Pair) -> None:
    reviews, ratings = EchoBackend("reviews").start(), EchoBackend("ratings").start()
    try:
        config = {
            "services": {
                "reviews": {"port": 9080, "endpoints": [reviews.address]},
                "ratings": {"port": 9080, "endpoints": [ratings.address]},
            }
        }
        snap = edited_mesh(config, route=_by_header)
        pair.cp.set_snapshot(snap)
        pair.cp.set_snapshot(envoy_snapshot(snap, {"reviews:9080": pair.envoy_port}), "envoy")
        pair.envoy = start_envoy(pair.cp.port, "envoy")
        pair.envoy.wait_listening([pair.envoy_port])
        pair.cp.wait_for_ack(ROUTE_TYPE, snap.version, 30, "envoy")
        seen: dict[str, list[tuple[int, str]]] = {}
        for who, client in pair.clients().items():
            rows = []
            with client:
                for target in (
                    "outbound|9080||ratings",  # only a route of another listener names it
                    "outbound|9080||ratings",
                    "outbound|9080||reviews",
                    "outbound|9080||ghost",  # no such cluster
                ):
                    r = client.get("/", headers={HEADER: target}, timeout=5)
                    rows.append((r.status_code, r.headers.get("x-backend", "")))
            seen[who] = rows
        assert seen["envoy"] == [(200, "ratings"), (200, "ratings"), (200, "reviews"), (503, "")]
        assert seen["pymesh"] == seen["envoy"]
        # The on-demand subscriptions are kept (not per request), the ghost one too.
        slot = pair.mesh._slots["reviews:9080"]
        wanted = [f"outbound|9080||{n}" for n in ("ghost", "ratings", "reviews")]
        assert sorted(slot.wanted) == wanted
    finally:
        reviews.close()
        ratings.close()
