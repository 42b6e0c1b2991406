"""gRPC A55 stateful sessions on every call shape: the cookie metadata pins a call to
its endpoint, and a call sent elsewhere learns the endpoint from ``set-cookie`` in its
initial metadata (unary-response calls via ``with_call`` / aio ``initial_metadata()``,
streaming calls on the call object)."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from _backend import CHAT, ECHO, SPLIT, Backend, bootstrap
from _edit import add_http_filter, edited_mesh, stateful_session

import pymesh
import pymesh.grpc
from pymesh.server import ControlPlane

TARGET = "xds:///echo:50051"
COOKIE = "s"


def _session_filter(lis: Any) -> None:
    add_http_filter(lis, "envoy.filters.http.stateful_session", stateful_session(COOKIE))


def _named(metadata: Any) -> str | None:
    """The address the set-cookie entry of ``metadata`` names (None: no entry)."""
    for k, v in metadata or ():
        if k == "set-cookie":
            name, _, value = v.split(";")[0].partition("=")
            assert name == COOKIE
            return base64.b64decode(value).decode().partition(";")[0]
    return None


@pytest.fixture
def setup() -> Any:
    backends = [Backend(n) for n in ("a", "b", "c")]
    with ControlPlane() as cp:
        service = {
            "services": {
                "echo": {
                    "port": 50051,
                    "protocol": "grpc",
                    "endpoints": [b.address for b in backends],
                }
            }
        }
        cp.set_snapshot(edited_mesh(service, listener=_session_filter))
        with pymesh.Mesh(bootstrap(cp.address, "session"), seed=3) as mesh:
            yield mesh, {b.name: b.address for b in backends}
    for b in backends:
        b.close()


def _cookie_for(address: str) -> tuple[tuple[str, str], ...]:
    return (("cookie", f"{COOKIE}={base64.b64encode(address.encode()).decode()}"),)


def test_sync_streaming_calls(setup: Any) -> None:
    mesh, addresses = setup
    with pymesh.grpc.insecure_channel(TARGET, mesh) as ch:
        split = ch.unary_stream(SPLIT)
        call = split(b"2", timeout=20)
        replies = list(call)
        host = replies[0].split(b":")[0].decode()
        assert _named(call.initial_metadata()) == addresses[host]
        for name, address in addresses.items():
            call = split(b"2", timeout=20, metadata=_cookie_for(address))
            assert {r.split(b":")[0].decode() for r in call} == {name}
            assert _named(call.initial_metadata()) is None  # already there
        chat = ch.stream_stream(CHAT)
        call = chat(iter([b"x", b"y"]), timeout=20, metadata=_cookie_for(addresses["c"]))
        assert [r.split(b":")[0] for r in call] == [b"c", b"c"]


def test_aio_unary_and_streaming_calls(setup: Any) -> None:
    mesh, addresses = setup

    async def go() -> None:
        async with pymesh.grpc.aio.insecure_channel(TARGET, mesh) as ch:
            echo = ch.unary_unary(ECHO)
            call = echo(b"p", timeout=20)
            host = (await call).split(b":")[0].decode()
            assert _named(await call.initial_metadata()) == addresses[host]
            for name, address in addresses.items():
                call = echo(b"p", timeout=20, metadata=_cookie_for(address))
                assert (await call).split(b":")[0].decode() == name
                call = ch.unary_stream(SPLIT)(b"2", timeout=20, metadata=_cookie_for(address))
                assert {r.split(b":")[0].decode() async for r in call} == {name}
            call = ch.unary_stream(SPLIT)(b"1", timeout=20)
            replies = [r async for r in call]
            host = replies[0].split(b":")[0].decode()
            assert _named(await call.initial_metadata()) == addresses[host]

    asyncio.run(go())
