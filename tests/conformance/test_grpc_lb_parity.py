"""Load balancing on gRPC against grpcio's own xds:/// client (the gRFCs' reference):
the same control-plane config, the same real backends, the same outcome."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "grpc"))
sys.path.insert(0, str(Path(__file__).parent.parent))

from _backend import Backend, bootstrap
from _edit import add_http_filter, edited_mesh, stateful_session

import pymesh
import pymesh.grpc
from pymesh.server import ControlPlane

TARGET = "xds:///echo:50051"
COOKIE = "grpc-session"

# Run by both clients (grpcio's in a fresh interpreter: GRPC_XDS_BOOTSTRAP must be set
# before grpc initialises). Each call: (backend, the session cookie it was answered
# with or None); ``cookie`` given: sent as the session cookie on every call.
CLIENT = r"""
import grpc

def run(channel, n, cookie=None):
    out = []
    for _ in range(n):
        md = [("cookie", f"grpc-session={cookie}")] if cookie else None
        reply, call = channel.unary_unary("/pymesh.test.Echo/Echo").with_call(
            b"p", timeout=20, metadata=md, wait_for_ready=True
        )
        got = None
        for k, v in call.initial_metadata() or ():
            if k == "set-cookie":
                name, _, rest = v.split(";")[0].partition("=")
                if name.strip() == "grpc-session":
                    got = rest.strip().strip('"')
        out.append([reply.split(b":")[0].decode(), got])
    return out
"""

MAIN = r"""
import json, sys
import grpc
args = json.loads(sys.argv[1])
with grpc.insecure_channel("xds:///echo:50051") as channel:
    print(json.dumps(run(channel, *args)))
"""


def grpcio_run(cp: ControlPlane, tmp_path: Path, n: int, cookie: str | None = None) -> Any:
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap(cp.address, "grpcio-lb")))
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(path)}
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT + MAIN, json.dumps([n, cookie])],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pymesh_run(cp: ControlPlane, n: int, cookie: str | None = None) -> Any:
    namespace: dict[str, Any] = {}
    exec(CLIENT, namespace)
    with (
        pymesh.Mesh(bootstrap(cp.address, "pymesh-lb"), seed=5) as mesh,
        pymesh.grpc.insecure_channel(TARGET, mesh) as channel,
    ):
        return namespace["run"](channel, n, cookie)


def _service(addresses: list[str]) -> dict[str, Any]:
    return {"services": {"echo": {"port": 50051, "protocol": "grpc", "endpoints": addresses}}}


@pytest.mark.timeout(240)
def test_degraded_endpoints_are_not_used_as_by_grpcio(tmp_path: Path) -> None:
    """A27: grpcio uses only HEALTHY and UNKNOWN endpoints; so do pymesh's channels
    (its HTTP path gives a DEGRADED endpoint Envoy's degraded-tier share instead)."""

    def degraded(cla: Any) -> None:
        cla.endpoints[0].lb_endpoints[1].health_status = 5  # DEGRADED

    with Backend("ok") as ok, Backend("deg") as deg, ControlPlane() as cp:
        cp.set_snapshot(edited_mesh(_service([ok.address, deg.address]), endpoints=degraded))
        native = grpcio_run(cp, tmp_path, 30)
        ours = pymesh_run(cp, 30)
        assert cp.nacks == []
    assert {host for host, _ in native} == {"ok"}
    assert {host for host, _ in ours} == {"ok"}


def _session_filter(lis: Any) -> None:
    add_http_filter(
        lis, "envoy.filters.http.stateful_session", stateful_session(COOKIE, ttl_s=60, path="/")
    )


@pytest.mark.timeout(240)
def test_session_cookies_as_grpcio_a55(tmp_path: Path) -> None:
    """A55 with grpcio: the first call is answered with a set-cookie naming its backend,
    calls carrying it stay there, and each client honours the other's cookie."""
    with Backend("a") as a, Backend("b") as b, Backend("c") as c, ControlPlane() as cp:
        service = _service([a.address, b.address, c.address])
        cp.set_snapshot(edited_mesh(service, listener=_session_filter))
        native = grpcio_run(cp, tmp_path, 1)
        ours = pymesh_run(cp, 1)
        assert cp.nacks == []
        (n_host, n_cookie), (o_host, o_cookie) = native[0], ours[0]
        assert n_cookie is not None and o_cookie is not None
        # The same value for the same backend: base64 of "ip:port;cluster".
        addresses = {"a": a.address, "b": b.address, "c": c.address}
        for host, cookie in ((n_host, n_cookie), (o_host, o_cookie)):
            raw = base64.b64decode(cookie).decode()
            assert raw == f"{addresses[host]};outbound|50051||echo", raw
        # Each one's cookie, sent to the other, pins the calls to the backend it names.
        assert {h for h, _ in pymesh_run(cp, 6, n_cookie)} == {n_host}
        assert {h for h, _ in grpcio_run(cp, tmp_path, 6, o_cookie)} == {o_host}
        # And neither sets a new cookie while the one sent is good.
        assert all(got is None for _, got in pymesh_run(cp, 3, o_cookie))
        assert all(got is None for _, got in grpcio_run(cp, tmp_path, 3, n_cookie))
