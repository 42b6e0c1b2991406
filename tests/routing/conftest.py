"""Fixtures for the routing tests."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from routing_envoy import ENVOY, Envoy, admin_get, bootstrap, wait_for


@pytest.fixture
def envoy_runner(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Envoy]]:
    """``run(route_config_json) -> Envoy``; every Envoy started is stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def run(route_config: dict[str, Any]) -> Envoy:
        n = len(procs)
        admin_path = tmp_path / f"admin{n}.txt"
        cfg = tmp_path / f"envoy{n}.json"
        log = tmp_path / f"envoy{n}.log"
        cfg.write_text(json.dumps(bootstrap(route_config)))
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    ENVOY,
                    "-c",
                    str(cfg),
                    "--admin-address-path",
                    str(admin_path),
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "-l",
                    "warning",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)

        def admin_address() -> str:
            return admin_path.read_text().strip() if admin_path.exists() else ""

        admin = wait_for(admin_address, 60, "admin address", proc, log)
        wait_for(lambda: admin_get(admin, "/ready") is not None, 60, "ready", proc, log)
        listeners = json.loads(
            wait_for(lambda: admin_get(admin, "/listeners?format=json"), 60, "listeners", proc, log)
        )
        address = listeners["listener_statuses"][0]["local_address"]["socket_address"]
        return Envoy(int(address["port_value"]))

    yield run
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
