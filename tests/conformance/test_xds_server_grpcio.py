"""grpcio's own xDS client (``xds:///`` with ``grpc.xds_channel_credentials``) calling a
``pymesh.grpc.server`` / ``pymesh.grpc.aio.server`` whose Listener comes from a
``pymesh serve`` process (the mesh file's ``inbound`` section).

Shown: mTLS succeeds with the client's identity seen by the server; a client expecting
another SAN refuses the server; RBAC allows and denies per policy (and by identity);
server certificates rotated under steady calls fail no call.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from _polling import wait_until
from _sec_helpers import SPIFFE, Pki, file_watcher

import pymesh
import pymesh.grpc
import pymesh.grpc.aio
from pymesh.errors import MeshError

SERVICE = "pymesh.test.Echo"
ECHO = f"/{SERVICE}/Echo"
ADMIN = f"/{SERVICE}/Admin"
TEMPLATE = "xds.istio.io/grpc/lds/inbound/%s"

POLICIES = [
    {
        "name": "client-calls",
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": ["cluster.local/ns/default/sa/client"]}}],
                "to": [{"operation": {"methods": ["POST"], "paths": [f"/{SERVICE}/*"]}}],
            }
        ],
    },
    {
        "name": "no-admin",
        "action": "DENY",
        "rules": [{"to": [{"operation": {"paths": ["*/Admin"]}}]}],
    },
]

# Runs in a fresh interpreter: GRPC_XDS_BOOTSTRAP must be set before grpc initialises.
# argv: a JSON list of [label, target, method(, wait_for_ready)]; prints {label: reply or
# status name}.
CLIENT = """
import json, sys
import grpc, grpc.experimental

creds = grpc.xds_channel_credentials(
    fallback_credentials=grpc.experimental.insecure_channel_credentials()
)
out = {}
for label, target, method, *wait in json.loads(sys.argv[1]):
    with grpc.secure_channel("xds:///" + target, creds) as channel:
        try:
            call = channel.unary_unary(method)
            out[label] = call(b"hi", timeout=30, wait_for_ready=bool(wait)).decode()
        except grpc.RpcError as e:
            out[label] = e.code().name
print(json.dumps(out))
"""

# Steady calls until the stop file appears; a new channel (so a new TLS handshake) every
# 10 calls. Prints {"ok": n, "failed": [...]}. wait_for_ready: a new grpcio xDS channel
# can try its first connection before its own certificate provider has delivered (seen
# once in CI under load: "Failed to create security handshaker" on all 10 calls of one
# channel, a client-side error); it then retries instead of failing fast. A server that
# refused handshakes after the rotation would still fail calls (DEADLINE_EXCEEDED).
STEADY = """
import json, os, sys
import grpc, grpc.experimental

creds = grpc.xds_channel_credentials(
    fallback_credentials=grpc.experimental.insecure_channel_credentials()
)
target, stop = sys.argv[1], sys.argv[2]
ok, failed = 0, []
while not os.path.exists(stop):
    with grpc.secure_channel("xds:///" + target, creds) as channel:
        echo = channel.unary_unary("/pymesh.test.Echo/Echo")
        for _ in range(10):
            try:
                echo(b"x", timeout=30, wait_for_ready=True)
                ok += 1
            except grpc.RpcError as e:
                failed.append(e.code().name + ": " + (e.details() or ""))
print(json.dumps({"ok": ok, "failed": failed}))
"""


class Calls:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def echo(self, _req: bytes, ctx: Any) -> bytes:
        with self.lock:
            self.n += 1
        sans = ctx.auth_context().get("x509_subject_alternative_name", [])
        return b",".join(s for s in sans if s.startswith(b"spiffe://"))


def _handlers(calls: Calls) -> grpc.GenericRpcHandler:
    h = grpc.unary_unary_rpc_method_handler(calls.echo)
    return grpc.method_handlers_generic_handler(SERVICE, {"Echo": h, "Admin": h})


class SyncServer:
    def __init__(self, mesh: pymesh.Mesh, calls: Calls, modes: Callable[..., None]) -> None:
        self.server = pymesh.grpc.server(mesh=mesh, on_serving_mode=modes)
        self.server.add_generic_rpc_handlers((_handlers(calls),))
        self.port = self.server.add_xds_port("127.0.0.1:0")

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None)


class AioServer:
    """The aio server on its own loop in a thread (the test body stays synchronous)."""

    def __init__(self, mesh: pymesh.Mesh, calls: Calls, modes: Callable[..., None]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def echo(req: bytes, ctx: Any) -> bytes:
            return calls.echo(req, ctx)

        async def build() -> Any:
            s = pymesh.grpc.aio.server(mesh=mesh, on_serving_mode=modes)
            h = grpc.unary_unary_rpc_method_handler(echo)
            s.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(SERVICE, {"Echo": h, "Admin": h}),)
            )
            return s

        self.server = self.run(build())
        self.port = self.server.add_xds_port("127.0.0.1:0")

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def start(self) -> None:
        self.run(self.server.start())

    def stop(self) -> None:
        self.run(self.server.stop(None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class World:
    """pymesh serve (subprocess) + the pymesh server + bootstraps for grpcio clients."""

    def __init__(self, tmp: Path, pki: Pki, kind: str) -> None:
        self.tmp = tmp
        self.pki = pki
        self.server_dir = tmp / "server"
        self.server_files = pki.write(self.server_dir, pki.issue("echo"))
        self.modes: queue.Queue[tuple[bool, MeshError | None]] = queue.Queue()
        self.calls = Calls()
        self.mesh_path = tmp / "mesh.yaml"
        self.mesh_path.write_text("services: {}\n")
        boot_out = tmp / "cp-bootstrap.json"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pymesh",
                "serve",
                str(self.mesh_path),
                "--port",
                "0",
                "--bootstrap-out",
                str(boot_out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(lambda: boot_out.exists() and boot_out.stat().st_size > 0, "pymesh serve")
        self.base = json.loads(boot_out.read_text())
        boot = dict(self.base, node={"id": "pymesh-server"})
        boot["certificate_providers"] = {"default": file_watcher(self.server_files, "1s")}
        boot["server_listener_resource_name_template"] = TEMPLATE
        self.mesh = pymesh.Mesh(boot)
        make = SyncServer if kind == "sync" else AioServer
        self.server = make(self.mesh, self.calls, lambda _a, s, e: self.modes.put((s, e)))
        self.port = self.server.port

    def configure(self, extra: dict[str, Any] | None = None) -> None:
        services: dict[str, Any] = {
            "echo": {
                "port": self.port,
                "protocol": "grpc",
                "endpoints": [f"127.0.0.1:{self.port}"],
                "traffic_policy": {"tls": {"mode": "ISTIO_MUTUAL"}},
                "inbound": {"mtls": "STRICT", "authorization": POLICIES},
            },
            **(extra or {}),
        }
        tmp = self.mesh_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump({"services": services}))
        os.replace(tmp, self.mesh_path)

    def wait_serving(self) -> None:
        while True:
            serving, err = self.modes.get(timeout=60)
            if serving:
                return
            # Before the edit is served the Listener does not exist yet; keep waiting.
            assert err is not None

    def client_env(self, identity: str) -> dict[str, str]:
        files = self.pki.write(self.tmp / identity, self.pki.issue(identity))
        boot = dict(self.base, node={"id": f"grpcio-{identity}"})
        boot["certificate_providers"] = {"default": file_watcher(files)}
        path = self.tmp / f"bootstrap-{identity}.json"
        path.write_text(json.dumps(boot))
        return {**os.environ, "GRPC_XDS_BOOTSTRAP": str(path)}

    def close(self) -> None:
        self.server.stop()
        self.mesh.close()
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture(params=["sync", "aio"])
def world(request: pytest.FixtureRequest, tmp_path: Path, pki: Pki) -> Iterator[World]:
    w = World(tmp_path, pki, request.param)
    try:
        yield w
    finally:
        w.close()


def run_client(env: dict[str, str], calls: list[list[str]]) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, json.dumps(calls)],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_grpcio_client_mtls_identity_san_and_rbac(world: World) -> None:
    wrong = SPIFFE + "someone-else"
    world.configure(
        {
            "impostor": {
                "port": world.port,
                "protocol": "grpc",
                "endpoints": [f"127.0.0.1:{world.port}"],
                "traffic_policy": {"tls": {"mode": "ISTIO_MUTUAL", "subject_alt_names": [wrong]}},
            }
        }
    )
    world.server.start()
    world.wait_serving()
    target = f"echo:{world.port}"
    seen = run_client(
        world.client_env("client"),
        [
            ["echo", target, ECHO],
            ["admin", target, ADMIN],
            ["impostor", f"impostor:{world.port}", ECHO],
        ],
    )
    # mTLS: the server sees the client's SPIFFE id; RBAC allows it on Echo.
    assert seen["echo"] == SPIFFE + "client"
    # The DENY policy wins over the ALLOW one.
    assert seen["admin"] == "PERMISSION_DENIED"
    # The client expects another SAN from the server: the handshake is refused.
    assert seen["impostor"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    # Another workload identity matches no ALLOW policy.
    other = run_client(world.client_env("intruder"), [["echo", target, ECHO]])
    assert other["echo"] == "PERMISSION_DENIED"
    assert world.calls.n == 1


def _server_serial(port: int, pki: Pki, files: dict[str, str]) -> int:
    """The serial of the certificate the server presents to a new connection."""
    from cryptography import x509

    ctx = ssl.create_default_context(cadata=pki.ca_pem.decode())
    ctx.check_hostname = False
    ctx.load_cert_chain(files["certificate_file"], files["private_key_file"])
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_server_certificate_rotation_under_steady_calls_fails_no_call(world: World) -> None:
    world.configure()
    world.server.start()
    world.wait_serving()
    env = world.client_env("client")
    probe = world.pki.write(world.tmp / "probe", world.pki.issue("client"))
    before = _server_serial(world.port, world.pki, probe)
    stop = world.tmp / "stop"
    proc = subprocess.Popen(
        [sys.executable, "-c", STEADY, f"echo:{world.port}", str(stop)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: world.calls.n >= 50, "steady calls before the rotation")
        world.pki.write(world.server_dir, world.pki.issue("echo"))  # os.replace each file
        wait_until(
            lambda: _server_serial(world.port, world.pki, probe) != before,
            "the rotated certificate on new connections",
        )
        mark = world.calls.n
        wait_until(lambda: world.calls.n >= mark + 50, "steady calls after the rotation")
    finally:
        stop.write_text("stop")
        out, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["failed"] == []
    assert result["ok"] >= 100


# grpcio's own xDS server (gRFC A36), for the same Listener: fixed port (it does not take
# port 0), xDS server credentials, the same handlers.
GRPCIO_SERVER = """
import sys
from concurrent import futures
import grpc

def echo(req, ctx):
    sans = ctx.auth_context().get("x509_subject_alternative_name", [])
    return b",".join(s for s in sans if s.startswith(b"spiffe://"))

h = grpc.unary_unary_rpc_method_handler(echo)
server = grpc.server(futures.ThreadPoolExecutor(4), xds=True)
server.add_generic_rpc_handlers(
    (grpc.method_handlers_generic_handler("pymesh.test.Echo", {"Echo": h, "Admin": h}),)
)
creds = grpc.xds_server_credentials(grpc.insecure_server_credentials())
server.add_secure_port("127.0.0.1:" + sys.argv[1], creds)
server.start()
sys.stdin.read()  # until the test closes stdin
server.stop(None)
"""


def test_grpcio_own_xds_server_accepts_the_inbound_listener(tmp_path: Path, pki: Pki) -> None:
    """The mesh file's server Listener is one grpcio's xDS server applies: zero NACKs,
    mTLS with the client's identity, the same RBAC decisions."""
    from pymesh.server import LISTENER_TYPE, ControlPlane, compile_mesh
    from pymesh.testing.envoy import free_port

    port = free_port()
    server_files = pki.write(tmp_path / "server", pki.issue("echo"))
    with ControlPlane() as cp:
        snap = compile_mesh(
            {
                "services": {
                    "echo": {
                        "port": port,
                        "protocol": "grpc",
                        "endpoints": [f"127.0.0.1:{port}"],
                        "traffic_policy": {"tls": {"mode": "ISTIO_MUTUAL"}},
                        "inbound": {
                            "mtls": "STRICT",
                            "authorization": POLICIES,
                            "listener_name_template": "grpc/server?address=%s",
                        },
                    }
                }
            },
            "test",
        )
        cp.set_snapshot(snap)
        boot = cp.client_bootstrap("grpcio-server")
        boot["certificate_providers"] = {"default": file_watcher(server_files)}
        boot["server_listener_resource_name_template"] = "grpc/server?address=%s"
        server_boot = tmp_path / "server-bootstrap.json"
        server_boot.write_text(json.dumps(boot))
        proc = subprocess.Popen(
            [sys.executable, "-c", GRPCIO_SERVER, str(port)],
            env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(server_boot)},
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            client_files = pki.write(tmp_path / "client", pki.issue("client"))
            cboot = cp.client_bootstrap("grpcio-client")
            cboot["certificate_providers"] = {"default": file_watcher(client_files)}
            path = tmp_path / "client-bootstrap.json"
            path.write_text(json.dumps(cboot))
            env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(path)}
            target = f"echo:{port}"
            seen = run_client(env, [["echo", target, ECHO, 1], ["admin", target, ADMIN]])
        finally:
            _, err = proc.communicate(input="", timeout=60)  # EOF on stdin stops it
        assert seen == {"echo": SPIFFE + "client", "admin": "PERMISSION_DENIED"}, err[-3000:]
        assert cp.nacks == []
        acked = {a.type_url for a in cp.acks if a.node_id == "grpcio-server"}
        assert LISTENER_TYPE in acked
