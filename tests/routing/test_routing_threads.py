"""The table is shared between threads without locks; the authority cache races safely."""

from __future__ import annotations

import threading

from routing_helpers import req

from pymesh.routing import RouteTable
from pymesh.routing._domains import CACHE_SIZE
from pymesh.xds.resources.route import (
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)


def test_concurrent_selects_agree_while_the_cache_churns() -> None:
    def vh(name: str, domains: tuple[str, ...]) -> VirtualHost:
        return VirtualHost(name, domains, (Route(RouteMatch("prefix", "/"), RouteAction(name)),))

    table = RouteTable.compile(
        RouteConfiguration(
            "rc", (vh("wild", ("*.svc",)), vh("exact", ("a.svc",)), vh("any", ("*",)))
        )
    )
    hosts = [f"h{i}.svc" for i in range(CACHE_SIZE * 3)] + ["a.svc", "other"]
    expected = {h: "exact" if h == "a.svc" else "any" if h == "other" else "wild" for h in hosts}
    errors: list[str] = []
    start = threading.Barrier(4)

    def worker(offset: int) -> None:
        start.wait(timeout=60)
        for i in range(len(hosts)):
            host = hosts[(i * 7 + offset) % len(hosts)]
            d = table.select(req("/", authority=host), i)
            if d is None or d.cluster != expected[host]:
                errors.append(f"{host}: {d!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
