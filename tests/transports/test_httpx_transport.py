"""MeshTransport / AsyncMeshTransport against the real embedded control plane and real
HTTP backends on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _edit import edited_mesh

import pymesh
from pymesh.server import ControlPlane
from pymesh.testing import EchoBackend
from pymesh.testing.envoy import free_port

Push = Callable[..., Any]


def _service(backends: list[EchoBackend], **extra: Any) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "port": 9080,
        "versions": {b.name: {"endpoints": [b.address]} for b in backends},
    }
    svc.update(extra)
    return {"services": {"reviews": svc}}


def test_routes_split_and_header_match(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    v1, v2 = echo_backends(2, "v")
    push_mesh(
        _service(
            [v1, v2],
            routes=[
                {"match": {"headers": {"end-user": "jason"}}, "split": {v2.name: 100}},
                {"split": {v1.name: 75, v2.name: 25}},
            ],
        )
    )
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        seen = Counter(client.get("http://reviews:9080/r").headers["x-backend"] for _ in range(400))
        jason = {
            client.get("http://reviews:9080/r", headers={"end-user": "jason"}).headers["x-backend"]
            for _ in range(20)
        }
    assert jason == {v2.name}
    # 25 % of 400 = 100, sigma ~ 8.7: a 5-sigma window.
    assert 57 <= seen[v2.name] <= 143, seen
    assert seen[v1.name] + seen[v2.name] == 400


def test_no_route_is_a_local_404_naming_listener_and_path(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(
        _service(
            [echo_backend],
            routes=[{"match": {"prefix": "/api"}, "split": {echo_backend.name: 100}}],
        )
    )
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        resp = client.get("http://reviews:9080/web/index")
    assert resp.status_code == 404
    assert "reviews:9080" in resp.text and "/web/index" in resp.text
    assert resp.headers["x-pymesh-local-reply"] == "NR"
    assert echo_backend.request_count == 0


def test_unknown_host_passes_through_or_fails(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(_service([echo_backend]))
    # The control plane does not know 127.0.0.1:PORT: with passthrough it goes direct.
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        resp = client.get(f"{echo_backend.url}/direct")
    assert resp.status_code == 200 and resp.headers["x-backend"] == echo_backend.name
    strict = pymesh.MeshTransport(mesh, passthrough=False)
    with httpx.Client(transport=strict) as client, pytest.raises(pymesh.UnknownHostError) as info:
        client.get(f"{echo_backend.url}/direct")
    assert info.value.resource_name == echo_backend.address
    assert info.value.node_id == mesh.node_id


def test_upstream_sees_host_header_and_path(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(_service([echo_backend]))
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        resp = client.post("http://reviews:9080/p?q=1", content=b"hello", headers={"x-a": "b"})
    assert resp.status_code == 200
    req = echo_backend.requests[-1]
    assert req.path == "/p?q=1"
    assert req.header("host") == "reviews:9080"
    assert req.header("x-a") == "b"
    assert req.body == b"hello"


def test_retries_go_to_another_host_and_hide_a_failing_one(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    """Issue 4 #1: one of 3 endpoints answers 503; retry_on 5xx + previous_hosts hides it."""
    good = echo_backends(2, "good")
    bad = EchoBackend("bad", fail_rate=1.0).start()
    try:
        push_mesh(
            {
                "services": {
                    "reviews": {
                        "port": 9080,
                        "endpoints": [b.address for b in [*good, bad]],
                        "routes": [{"retries": {"attempts": 2, "on": "5xx"}}],
                    }
                }
            }
        )
        with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
            statuses = Counter(
                client.get(f"http://reviews:9080/x/{i}").status_code for i in range(1000)
            )
        assert statuses == {200: 1000}
        bad_paths = Counter(r.path for r in bad.requests)
        good_paths = Counter(r.path for b in good for r in b.requests)
        assert bad_paths, "round robin should have tried the bad host"
        # No retry went back to the host that just failed: the bad host saw each request
        # once, and each of those was then answered by a good host.
        assert max(bad_paths.values()) == 1
        assert all(good_paths[p] == 1 for p in bad_paths)
        assert sum(good_paths.values()) == 1000
    finally:
        bad.close()


async def test_async_transport_concurrent(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    backends = echo_backends(3, "a")
    push_mesh(_service(backends, routes=[{"split": {b.name: 1 for b in backends}}]))
    async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)) as client:
        resps = await asyncio.gather(
            *(client.get(f"http://reviews:9080/item/{i}") for i in range(200))
        )
    assert [r.status_code for r in resps] == [200] * 200
    paths = sorted(r.path for b in backends for r in b.requests)
    assert paths == sorted(f"/item/{i}" for i in range(200))  # none lost, none duplicated


def test_request_before_config_waits_instead_of_failing(
    control_plane: ControlPlane, mesh_bootstrap: dict[str, Any], echo_backend: EchoBackend
) -> None:
    from pymesh.server import compile_mesh

    # The first request arrives before the listener's config: it waits, then routes.
    control_plane.set_snapshot(compile_mesh(_service([echo_backend])))
    with (
        pymesh.Mesh(bootstrap=mesh_bootstrap) as fresh,
        httpx.Client(transport=pymesh.MeshTransport(fresh), timeout=20) as client,
    ):
        assert client.get("http://reviews:9080/").headers["x-backend"] == echo_backend.name


def test_request_mirror_is_fire_and_forget(
    mesh: pymesh.Mesh, control_plane: ControlPlane, echo_backends: Callable[..., list[EchoBackend]]
) -> None:
    from pymesh.testing import push_snapshot

    main, shadow = echo_backends(2, "m")
    shadow.fail_next(1000, status=500)  # the shadow's failures never reach the caller

    def add_mirror(rc: Any) -> None:
        for route in rc.virtual_hosts[0].routes:
            route.route.request_mirror_policies.add(cluster=f"outbound|9080|{shadow.name}|reviews")
            route.route.cluster = f"outbound|9080|{main.name}|reviews"
            route.route.ClearField("weighted_clusters")

    push_snapshot(control_plane, mesh, edited_mesh(_service([main, shadow]), route=add_mirror))
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        statuses = [
            client.post("http://reviews:9080/m", content=b"body").status_code for _ in range(20)
        ]
        # Mirrors are fire-and-forget: wait for them before closing the transport (a close
        # cuts shadow requests still in flight).
        shadowed = shadow.wait_for_requests(20, timeout=20)
    assert statuses == [200] * 20
    assert main.request_count == 20
    assert {r.header("host") for r in shadowed} == {"reviews:9080-shadow"}
    assert {r.body for r in shadowed} == {b"body"}, [
        (r.method, r.headers, r.body) for r in shadowed if r.body != b"body"
    ]


def test_default_port_finds_the_istio_style_listener(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    """httpx drops a written default port (``http://svc:80/`` arrives as ``svc``); the
    listener Istio names ``svc:80`` is still found."""
    config = _service([echo_backend])
    config["services"]["reviews"]["port"] = 80
    push_mesh(config)
    with httpx.Client(transport=pymesh.MeshTransport(mesh, passthrough=False)) as client:
        for url in ("http://reviews/a", "http://reviews:80/b"):
            resp = client.get(url)
            assert resp.headers["x-backend"] == echo_backend.name, url


def test_a_failed_passthrough_says_the_mesh_did_not_route_it(
    mesh: pymesh.Mesh, push_mesh: Push, echo_backend: EchoBackend
) -> None:
    push_mesh(_service([echo_backend]))
    dead = f"127.0.0.1:{free_port()}"  # closed again: refused
    with (
        httpx.Client(transport=pymesh.MeshTransport(mesh)) as client,
        pytest.raises(httpx.ConnectError) as info,
    ):
        client.get(f"http://{dead}/x", timeout=30)
    message = str(info.value)
    assert f"no listener '{dead}'" in message and f"pymesh status {dead}" in message

    async def run() -> str:
        async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)) as ac:
            with pytest.raises(httpx.ConnectError) as ainfo:
                await ac.get(f"http://{dead}/x", timeout=30)
        return str(ainfo.value)

    assert "outside the mesh" in asyncio.run(run())
