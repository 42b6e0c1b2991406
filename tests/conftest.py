"""Shared test set-up: make tests/ helpers (``_edit``) and the security helpers
(``_sec_helpers``, used by tests/security and tests/grpc) importable from every test
folder; the test-PKI fixtures both of those folders use."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
sys.path.insert(0, str(_HERE / "security"))

from _sec_helpers import Pki  # noqa: E402


@pytest.fixture
def pki() -> Pki:
    return Pki()


@pytest.fixture
def client_files(pki: Pki, tmp_path: Path) -> dict[str, str]:
    """The client's identity (SPIFFE ``sa/client``) + CA, as file_watcher paths."""
    return pki.write(tmp_path / "client", pki.issue("client"))
