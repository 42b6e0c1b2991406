"""Fixtures: a real embedded control plane and a Mesh bound to it; for TLS clusters a
test PKI, the client's certificate files, meshes with certificate providers and an mTLS
gRPC backend (shared by the sync and aio TLS tests)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _backend import bootstrap
from _grpc_tls_helpers import TlsGrpcBackend
from _sec_helpers import Pki

import pymesh
from pymesh.server import ControlPlane
from pymesh.testing import bootstrap_for


@pytest.fixture
def cp() -> Iterator[ControlPlane]:
    with ControlPlane() as plane:
        yield plane


@pytest.fixture
def make_mesh(cp: ControlPlane) -> Iterator[Callable[..., pymesh.Mesh]]:
    meshes: list[pymesh.Mesh] = []

    def make(**kwargs: Any) -> pymesh.Mesh:
        kwargs.setdefault("seed", 7)
        m = pymesh.Mesh(bootstrap(cp.address), **kwargs)
        meshes.append(m)
        return m

    yield make
    for m in meshes:
        m.close()


@pytest.fixture
def tls_mesh(
    cp: ControlPlane, request: pytest.FixtureRequest
) -> Iterator[Callable[..., pymesh.Mesh]]:
    """``tls_mesh(providers)``: a Mesh whose bootstrap has those certificate providers."""
    meshes: list[pymesh.Mesh] = []

    def make(providers: dict[str, Any]) -> pymesh.Mesh:
        boot = bootstrap_for(cp, node_id=f"pymesh-test/{request.node.name}")
        boot["certificate_providers"] = providers
        m = pymesh.Mesh(boot, seed=7)
        meshes.append(m)
        return m

    yield make
    for m in meshes:
        m.close()


@pytest.fixture
def backend(pki: Pki) -> Iterator[TlsGrpcBackend]:
    """An mTLS gRPC backend whose certificate says ``spiffe://.../sa/echo``."""
    b = TlsGrpcBackend(pki, pki.issue("echo"))
    yield b
    b.close()
