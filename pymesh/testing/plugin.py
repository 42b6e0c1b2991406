"""pytest plugin registered through the ``pytest11`` entry point: pymesh's test fixtures.

Fixtures (all function-scoped, everything on 127.0.0.1 with OS-assigned ports):

``control_plane``
    a started :class:`pymesh.server.ControlPlane`, stopped after the test.
``mesh_bootstrap``
    a bootstrap dict pointing at ``control_plane``.
``mesh``
    a :class:`pymesh.Mesh` bound to it (seeded), closed after the test.
``echo_backend``
    one started :class:`pymesh.testing.EchoBackend` named ``echo``.
``echo_backends``
    a factory ``echo_backends(n, prefix="backend", **options)`` → list of started backends.
``push_mesh``
    ``push_mesh(config_dict, version=None)`` compiles a mesh file dict, serves it and waits
    until ``mesh`` has ACKed and applied it; returns the Snapshot.

pymesh's heavy imports happen inside the fixtures, so merely having pymesh installed
costs a pytest run nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pymesh._mesh import Mesh
    from pymesh.server import ControlPlane, Snapshot
    from pymesh.testing._echo import EchoBackend

__all__ = [
    "control_plane",
    "echo_backend",
    "echo_backends",
    "mesh",
    "mesh_bootstrap",
    "push_mesh",
]


@pytest.fixture
def control_plane() -> Iterator[ControlPlane]:
    """A started embedded xDS control plane on 127.0.0.1 (any free port)."""
    from pymesh.server import ControlPlane

    with ControlPlane(port=0) as cp:
        yield cp


@pytest.fixture
def mesh_bootstrap(control_plane: ControlPlane, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A bootstrap dict for ``control_plane``; the node id names the test."""
    from pymesh.testing._push import bootstrap_for

    return bootstrap_for(control_plane, node_id=f"pymesh-test/{request.node.name}")


@pytest.fixture
def mesh(mesh_bootstrap: dict[str, Any]) -> Iterator[Mesh]:
    """A Mesh bound to ``control_plane`` (seed 0), closed after the test."""
    from pymesh._mesh import Mesh

    with Mesh(bootstrap=mesh_bootstrap, seed=0) as m:
        yield m


@pytest.fixture
def echo_backend() -> Iterator[EchoBackend]:
    """One started echo backend named ``echo``."""
    from pymesh.testing._echo import EchoBackend

    with EchoBackend("echo") as backend:
        yield backend


@pytest.fixture
def echo_backends() -> Iterator[Callable[..., list[EchoBackend]]]:
    """Factory: ``echo_backends(n, prefix="backend", fail_rate=0, delay=0, seed=0)``."""
    from pymesh.testing._echo import start_echo_backends

    started: list[EchoBackend] = []

    def factory(n: int, prefix: str = "backend", **options: Any) -> list[EchoBackend]:
        backends = start_echo_backends(n, prefix, **options)
        started.extend(backends)
        return backends

    yield factory
    for backend in started:
        backend.close()


@pytest.fixture
def push_mesh(control_plane: ControlPlane, mesh: Mesh) -> Callable[..., Snapshot]:
    """``push_mesh(config, version=None, timeout=20)``: serve a mesh file dict, wait for ACK."""
    from pymesh.testing._push import push_mesh as _push

    def push(
        config: Mapping[str, Any], version: str | None = None, timeout: float = 20.0
    ) -> Snapshot:
        return _push(control_plane, mesh, config, version=version, timeout=timeout)

    return push
