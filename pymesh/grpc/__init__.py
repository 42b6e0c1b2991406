"""gRPC channels routed by the mesh (gRFC semantics: A28, A31, A32, A33, A42, A44, A48, A50).

::

    channel = pymesh.grpc.insecure_channel("xds:///reviews:50051", mesh=mesh)
    stub = reviews_pb2_grpc.ReviewsStub(channel)

See docs/grpc.md for what is supported and how it differs from grpcio's own xDS client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from pymesh._mesh import Mesh
from pymesh.grpc import aio
from pymesh.grpc._channel import MeshChannel
from pymesh.grpc._interceptor import MeshInterceptor
from pymesh.grpc._local import LocalRpcError

__all__ = [
    "LocalRpcError",
    "MeshChannel",
    "MeshInterceptor",
    "aio",
    "insecure_channel",
    "secure_channel",
]


def insecure_channel(
    target: str,
    mesh: Mesh,
    options: Iterable[tuple[str, Any]] | None = None,
    compression: grpc.Compression | None = None,
) -> MeshChannel:
    """A ``grpc.Channel`` for ``xds:///name`` whose calls are routed by ``mesh``.

    ``options`` and ``compression`` apply to every per-endpoint sub-channel.
    """
    return MeshChannel(target, mesh, options=options, compression=compression)


def secure_channel(
    target: str,
    credentials: grpc.ChannelCredentials,
    mesh: Mesh,
    options: Iterable[tuple[str, Any]] | None = None,
    compression: grpc.Compression | None = None,
) -> MeshChannel:
    """Like :func:`insecure_channel`, with ``credentials`` on every sub-channel.

    TLS is verified against the target's authority (the ``grpc.default_authority``).
    """
    return MeshChannel(
        target, mesh, credentials=credentials, options=options, compression=compression
    )
