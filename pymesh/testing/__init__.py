"""Test helpers for applications that use pymesh, with or without pytest.

Real HTTP backends on 127.0.0.1 (:class:`EchoBackend`), a bootstrap for an embedded
control plane (:func:`bootstrap_for`) and config pushes that wait for the mesh's ACK
(:func:`push_mesh`). The pytest fixtures in :mod:`pymesh.testing.plugin` (loaded
automatically once pymesh is installed) wrap these: ``control_plane``, ``mesh_bootstrap``,
``mesh``, ``echo_backend``, ``echo_backends`` and ``push_mesh``.

Example without pytest::

    from pymesh.server import ControlPlane
    from pymesh.testing import EchoBackend, bootstrap_for, push_mesh
    import httpx, pymesh

    with ControlPlane() as cp, EchoBackend("v1") as v1:
        with pymesh.Mesh(bootstrap=bootstrap_for(cp)) as mesh:
            push_mesh(cp, mesh, {"services": {"echo": {"port": 8080, "endpoints": [v1.address]}}})
            client = httpx.Client(transport=pymesh.MeshTransport(mesh))
            assert client.get("http://echo:8080/").headers["x-backend"] == "v1"
"""

from pymesh.testing._echo import EchoBackend, EchoRequest, start_echo_backends
from pymesh.testing._push import bootstrap_for, push_mesh, push_snapshot

__all__ = [
    "EchoBackend",
    "EchoRequest",
    "bootstrap_for",
    "push_mesh",
    "push_snapshot",
    "start_echo_backends",
]
