"""Fixtures: a real embedded control plane and a Mesh bound to it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _backend import bootstrap

import pymesh
from pymesh.server import ControlPlane


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
