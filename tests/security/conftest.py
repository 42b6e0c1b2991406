"""Fixtures: a test PKI and a bootstrap whose ``default`` provider is a file_watcher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _sec_helpers import MtlsBackend, Pki, file_watcher, server_context

from pymesh.server import ControlPlane
from pymesh.testing import bootstrap_for


@pytest.fixture
def mesh_bootstrap(
    control_plane: ControlPlane, client_files: dict[str, str], request: pytest.FixtureRequest
) -> dict[str, Any]:
    """The plugin's bootstrap plus ``certificate_providers.default`` (refresh 1 s)."""
    boot = bootstrap_for(control_plane, node_id=f"pymesh-test/{request.node.name}")
    boot["certificate_providers"] = {"default": file_watcher(client_files, refresh="1s")}
    return boot


@pytest.fixture
def backend(pki: Pki, tmp_path: Path) -> Iterator[MtlsBackend]:
    """An mTLS backend whose certificate says ``spiffe://.../sa/reviews``."""
    b = MtlsBackend(server_context(pki, pki.issue("reviews"), tmp_path / "server"))
    yield b
    b.close()
