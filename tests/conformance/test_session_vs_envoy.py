"""Stateful sessions (Envoy's stateful_session filter with the cookie extension) through
the real Envoy and through pymesh, with the same xDS config: the cookie each sets, the
endpoint a cookie pins requests to, and each one's cookies read by the other."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _edit import add_http_filter, stateful_session, via_aggregate
from _peers import EnvoyPair, envoy_listener_for

from pymesh.call._session import decode_address
from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Snapshot,
    compile_mesh,
)
from pymesh.testing import EchoBackend, push_snapshot

COOKIE = "pymesh-session"


def _with_filter(lis: Any, strict: bool) -> None:
    """Put the cookie stateful-session filter before the router of ``lis``."""
    session = stateful_session(
        COOKIE,
        ttl_s=120,
        path="/",
        strict=strict,
        attributes=(("SameSite", "Strict"), ("Secure", "")),
    )
    add_http_filter(lis, "envoy.filters.http.stateful_session", session)


def _listeners(snap: Snapshot, envoy_port: int, strict: bool) -> tuple[list[Any], Any]:
    """Copies of ``snap``'s api_listeners, and Envoy's socket listener for reviews:9080,
    each with the stateful session filter before the router."""
    listeners = []
    for lis in snap.get(LISTENER_TYPE).values():
        copy = type(lis)()
        copy.CopyFrom(lis)
        _with_filter(copy, strict)
        listeners.append(copy)
    envoy_lis = envoy_listener_for("reviews:9080", envoy_port)
    _with_filter(envoy_lis, strict)
    return listeners, envoy_lis


def _snapshots(
    endpoints: list[Any], envoy_port: int, strict: bool, statuses: tuple[int, ...] = ()
) -> tuple[Snapshot, Snapshot]:
    """The mesh's snapshot (api_listener) and Envoy's (socket listener), both with the
    stateful session filter before the router (``statuses``: the cluster's
    override_host_status)."""
    snap = compile_mesh({"services": {"reviews": {"port": 9080, "endpoints": endpoints}}})
    listeners, envoy_lis = _listeners(snap, envoy_port, strict)
    clusters = []
    for c in snap.get(CLUSTER_TYPE).values():
        copy = type(c)()
        copy.CopyFrom(c)
        if statuses:
            copy.common_lb_config.override_host_status.statuses.extend(statuses)
        clusters.append(copy)
    rest = {
        "routes": snap.get(ROUTE_TYPE).values(),
        "clusters": clusters,
        "endpoints": snap.get(ENDPOINT_TYPE).values(),
    }
    version = f"{snap.version}-{'strict' if strict else 'lax'}-{statuses}"
    return (
        Snapshot.of(version, listeners=listeners, **rest),
        Snapshot.of(version, listeners=[envoy_lis], **rest),
    )


class Pair(EnvoyPair):
    def __init__(self) -> None:
        super().__init__("pymesh-session", seed=3)
        self.backends = [EchoBackend(f"b{i}").start() for i in range(4)]

    def serve(
        self, strict: bool = False, degraded: str = "", statuses: tuple[int, ...] = ()
    ) -> None:
        endpoints = [
            {"address": b.address, "health": "DEGRADED" if b.name == degraded else "HEALTHY"}
            for b in self.backends
        ]
        mesh_snap, envoy_snap = _snapshots(endpoints, self.envoy_port, strict, statuses)
        self.cp.set_snapshot(envoy_snap, "envoy")
        self.start_envoy()
        self.cp.wait_for_ack(LISTENER_TYPE, envoy_snap.version, 30, "envoy")
        self.cp.wait_for_ack(ROUTE_TYPE, envoy_snap.version, 30, "envoy")
        push_snapshot(self.cp, self.mesh, mesh_snap, timeout=30)

    def address_of(self, name: str) -> str:
        return next(b.address for b in self.backends if b.name == name)

    def close(self) -> None:
        super().close()
        for b in self.backends:
            b.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def _cookie(resp: httpx.Response) -> str | None:
    """The session cookie's value in the response's Set-Cookie, quotes removed."""
    for value in resp.headers.get_list("set-cookie"):
        first = value.split(";")[0]
        name, _, v = first.partition("=")
        if name == COOKIE:
            return v.strip('"')
    return None


def _get(client: httpx.Client, cookie: str | None = None) -> httpx.Response:
    headers = {"cookie": f'{COOKIE}="{cookie}"'} if cookie is not None else {}
    client.cookies.clear()  # httpx's own cookie jar must not send the last one
    return client.get("/s", headers=headers)


def test_a_cookie_names_the_endpoint_and_pins_the_session_as_envoy(pair: Pair) -> None:
    pair.serve()
    seen: dict[str, dict[str, Any]] = {}
    for who, client in pair.clients().items():
        with client:
            first = _get(client)
            assert first.status_code == 200
            cookie = _cookie(first)
            assert cookie is not None, first.headers
            named = decode_address(cookie)
            served = first.headers["x-backend"]
            # Envoy's attributes, in Envoy's order.
            attrs = [a.strip() for a in first.headers["set-cookie"].split(";")[1:]]
            pinned = [_get(client, cookie) for _ in range(12)]
            seen[who] = {
                "named_is_served": named == pair.address_of(served),
                "attrs": attrs,
                "pinned": {r.headers["x-backend"] for r in pinned} == {served},
                "no_new_cookie": all(_cookie(r) is None for r in pinned),
            }
    assert seen["envoy"] == {
        "named_is_served": True,
        "attrs": ["Max-Age=120", "Path=/", "SameSite=Strict", "Secure", "HttpOnly"],
        "pinned": True,
        "no_new_cookie": True,
    }
    assert seen["pymesh"] == seen["envoy"]


def test_each_reads_the_others_cookies(pair: Pair) -> None:
    pair.serve()
    clients = pair.clients()
    cookies = {}
    for who, client in clients.items():
        # Several first requests: cookies naming different endpoints.
        cookies[who] = {}
        for _ in range(6):
            r = _get(client)
            cookies[who][r.headers["x-backend"]] = _cookie(r)
    # Envoy's old-style cookie (base64 of "ip:port") is read by both as well.
    old_style = {b.name: base64.b64encode(b.address.encode()).decode() for b in pair.backends}
    for who, client in clients.items():
        other = "pymesh" if who == "envoy" else "envoy"
        for source in (cookies[other], old_style):
            for backend, cookie in source.items():
                assert cookie is not None
                served = {_get(client, cookie).headers["x-backend"] for _ in range(4)}
                assert served == {backend}, (who, backend)
        client.close()


def test_unknown_endpoint_falls_back_and_strict_refuses_as_envoy(pair: Pair) -> None:
    gone = base64.b64encode(b"127.0.0.1:1").decode()
    pair.serve()
    outcome: dict[str, Any] = {}
    for who, client in pair.clients().items():
        with client:
            r = _get(client, gone)
            cookie = _cookie(r)
            outcome[who] = (
                r.status_code,
                cookie is not None
                and decode_address(cookie) == pair.address_of(r.headers["x-backend"]),
            )
    assert outcome["envoy"] == (200, True)  # normal load balancing, a new cookie
    assert outcome["pymesh"] == outcome["envoy"]
    pair.serve(strict=True)
    strict = {}
    for who, client in pair.clients().items():
        with client:
            strict[who] = (_get(client, gone).status_code, _get(client).status_code)
    assert strict["envoy"] == (503, 200)  # strict: that endpoint or nothing
    assert strict["pymesh"] == strict["envoy"]


@pytest.mark.parametrize(
    ("statuses", "pinned"),
    [((), True), ((1,), False)],  # default (UNKNOWN, HEALTHY, DEGRADED); HEALTHY only
    ids=["default-statuses", "healthy-only"],
)
def test_override_host_status_decides_a_degraded_endpoint_as_envoy(
    pair: Pair, statuses: tuple[int, ...], pinned: bool
) -> None:
    """A cookie naming a DEGRADED endpoint: Envoy's default override_host_status keeps
    the session there; ``[HEALTHY]`` sends it elsewhere (the degraded endpoint then
    takes no load: 3 healthy of 4 have health 100) with a new cookie."""
    pair.serve(degraded="b0", statuses=statuses)
    cookie = base64.b64encode(pair.address_of("b0").encode()).decode()  # old style
    seen = {}
    for who, client in pair.clients().items():
        with client:
            replies = [_get(client, cookie) for _ in range(6)]
            seen[who] = (
                {r.headers["x-backend"] == "b0" for r in replies},
                {_cookie(r) is None for r in replies},
            )
    assert seen["envoy"] == ({pinned}, {pinned})
    assert seen["pymesh"] == seen["envoy"]


def test_an_aggregate_cluster_ignores_the_cookie_as_envoy(pair: Pair) -> None:
    """Envoy 1.40 does not pin a session routed to an aggregate cluster (the cookie is
    still set): the same cookie through both spreads over the first leaf's endpoints."""
    b = pair.backends
    snap = compile_mesh(
        {
            "services": {
                "reviews": {
                    "port": 9080,
                    "versions": {
                        "primary": {"endpoints": [b[0].address, b[1].address]},
                        "fallback": {"endpoints": [b[2].address, b[3].address]},
                    },
                }
            }
        }
    )
    snap = via_aggregate(snap, ["outbound|9080|primary|reviews", "outbound|9080|fallback|reviews"])
    listeners, envoy_lis = _listeners(snap, pair.envoy_port, strict=False)
    rest = {
        "routes": snap.get(ROUTE_TYPE).values(),
        "clusters": snap.get(CLUSTER_TYPE).values(),
        "endpoints": snap.get(ENDPOINT_TYPE).values(),
    }
    pair.cp.set_snapshot(Snapshot.of("agg", listeners=[envoy_lis], **rest), "envoy")
    pair.start_envoy()
    pair.cp.wait_for_ack(ROUTE_TYPE, "agg", 30, "envoy")
    push_snapshot(pair.cp, pair.mesh, Snapshot.of("agg", listeners=listeners, **rest))
    cookie = base64.b64encode(pair.address_of("b0").encode()).decode()
    served = {}
    for who, client in pair.clients().items():
        with client:
            served[who] = {_get(client, cookie).headers["x-backend"] for _ in range(8)}
    assert served["envoy"] == {"b0", "b1"}  # round robin over the first leaf, not pinned
    assert served["pymesh"] == served["envoy"]
