"""asyncio mesh gRPC channels to TLS clusters: mTLS from xDS, SAN pre-check, rotation."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from _grpc_tls_helpers import (
    CHAT,
    CLUSTER,
    ECHO,
    SPLIT,
    TARGET,
    AcceptCounter,
    TlsGrpcBackend,
    serial_of,
    tls_service,
)
from _sec_helpers import SPIFFE, Pki, file_watcher

import pymesh
import pymesh.grpc.aio
from pymesh.grpc._tls import TlsAioRpcError
from pymesh.grpc._tls_aio import AioTlsEndpoint
from pymesh.security import PeerIdentityError
from pymesh.server import ControlPlane
from pymesh.testing._push import push_mesh

MakeMesh = Callable[..., pymesh.Mesh]


async def test_aio_mtls_calls_succeed_and_server_sees_client_spiffe_id(
    cp: ControlPlane, tls_mesh: MakeMesh, client_files: dict[str, str], backend: TlsGrpcBackend
) -> None:
    mesh = tls_mesh({"default": file_watcher(client_files)})
    push_mesh(cp, mesh, tls_service(backend.address))
    async with pymesh.grpc.aio.insecure_channel(TARGET, mesh) as ch:
        echo = ch.unary_unary(ECHO)
        # Concurrent first calls all wait for the pre-check, then go out.
        replies = await asyncio.gather(*(echo(b"%d" % i, timeout=10) for i in range(5)))
        assert sorted(replies) == [b"echo:%d" % i for i in range(5)]
        call = echo(b"again", timeout=10)
        assert await call == b"echo:again"
        assert await call.code() is grpc.StatusCode.OK
        assert [r async for r in ch.unary_stream(SPLIT)(b"2", timeout=10)] == [
            b"echo:0",
            b"echo:1",
        ]
        chat = ch.stream_stream(CHAT)(timeout=10)
        await chat.write(b"w")
        await chat.done_writing()
        assert [r async for r in chat] == [b"echo:w"]
        endpoint = ch._subs[backend.address]
        assert isinstance(endpoint, AioTlsEndpoint)
        assert len(endpoint.all_channels()) == 1  # one verified channel for all of them
    assert backend.calls() == 8
    assert {s.client_uris for s in backend.seen} == {(SPIFFE + "client",)}


async def test_aio_wrong_san_is_refused_and_the_handler_never_runs(
    cp: ControlPlane, tls_mesh: MakeMesh, client_files: dict[str, str], backend: TlsGrpcBackend
) -> None:
    mesh = tls_mesh({"default": file_watcher(client_files)})
    push_mesh(cp, mesh, tls_service(backend.address, [SPIFFE + "ratings"]))
    async with pymesh.grpc.aio.insecure_channel(TARGET, mesh) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ch.unary_unary(ECHO)(b"secret", timeout=10)
        stream = ch.unary_stream(SPLIT)(b"2", timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            _ = [r async for r in stream]
        assert await stream.code() is grpc.StatusCode.UNAVAILABLE
    err = info.value
    assert isinstance(err, TlsAioRpcError)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    details = err.details() or ""
    assert CLUSTER in details and SPIFFE + "echo" in details
    assert isinstance(err.error, PeerIdentityError)
    assert streamed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert backend.calls() == 0


async def test_aio_unknown_provider_fails_closed_without_connecting(
    cp: ControlPlane, tls_mesh: MakeMesh, client_files: dict[str, str]
) -> None:
    mesh = tls_mesh({"other": file_watcher(client_files)})
    counter = AcceptCounter()
    try:
        push_mesh(cp, mesh, tls_service(counter.address))
        async with pymesh.grpc.aio.insecure_channel(TARGET, mesh) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ch.unary_unary(ECHO)(b"hi", timeout=10)
    finally:
        counter.close()
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "requires upstream TLS" in (info.value.details() or "")
    assert counter.accepted == 0


async def test_aio_rotation_during_steady_calls_has_no_failures(
    cp: ControlPlane,
    tls_mesh: MakeMesh,
    pki: Pki,
    client_files: dict[str, str],
    tmp_path: Path,
    backend: TlsGrpcBackend,
) -> None:
    mesh = tls_mesh({"default": file_watcher(client_files)})
    push_mesh(cp, mesh, tls_service(backend.address))
    new_leaf = pki.issue("client")
    new_serial = serial_of(new_leaf)
    failures: list[BaseException] = []
    async with pymesh.grpc.aio.insecure_channel(TARGET, mesh) as ch:
        echo = ch.unary_unary(ECHO)
        stop = asyncio.Event()

        async def steady() -> None:
            while not stop.is_set():
                try:
                    assert await echo(b"x", timeout=10) == b"echo:x"
                except Exception as exc:  # counted, asserted below
                    failures.append(exc)

        callers = [asyncio.create_task(steady()) for _ in range(3)]
        try:
            assert await asyncio.to_thread(backend.wait, lambda: backend.calls() >= 20)
            pki.write(tmp_path / "client", new_leaf)
            assert await asyncio.to_thread(backend.wait, lambda: new_serial in backend.serials())
            settled = backend.calls()
            assert await asyncio.to_thread(backend.wait, lambda: backend.calls() >= settled + 20)
        finally:
            stop.set()
            await asyncio.gather(*callers)
        before = backend.calls()
        await echo(b"y", timeout=10)
        assert backend.seen[before].client_serial == new_serial
        endpoint = ch._subs[backend.address]
        assert isinstance(endpoint, AioTlsEndpoint)
        # The previous generation's channel is closed once its last call ended.
        assert len(endpoint.all_channels()) == 1
    assert failures == []


async def test_aio_a_silent_endpoint_fails_the_call_at_its_deadline(
    cp: ControlPlane, tls_mesh: MakeMesh, client_files: dict[str, str]
) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # never accepts: the handshake hangs
    try:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        mesh = tls_mesh({"default": file_watcher(client_files)})
        push_mesh(cp, mesh, tls_service(address))
        async with pymesh.grpc.aio.insecure_channel(TARGET, mesh) as ch:
            echo = ch.unary_unary(ECHO)
            started = asyncio.get_running_loop().time()
            calls = [echo(b"hi", timeout=0.5) for _ in range(3)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            elapsed = asyncio.get_running_loop().time() - started
    finally:
        silent.close()
    codes = {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)}
    assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert len(results) == 3
    assert elapsed < 8  # at their deadline, not after the 10 s pre-check budget
