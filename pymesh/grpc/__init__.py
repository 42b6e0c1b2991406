"""gRPC channels routed by the mesh (gRFC semantics: A28, A31, A32, A33, A42, A44, A48, A50).

::

    channel = pymesh.grpc.insecure_channel("xds:///reviews:50051", mesh=mesh)
    stub = reviews_pb2_grpc.ReviewsStub(channel)

See docs/grpc.md for what is supported and how it differs from grpcio's own xDS client.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent import futures
from typing import Any

import grpc

from pymesh._mesh import Mesh
from pymesh.grpc import aio
from pymesh.grpc._channel import MeshChannel
from pymesh.grpc._interceptor import MeshInterceptor
from pymesh.grpc._local import LocalRpcError
from pymesh.grpc._server import DEFAULT_DRAIN_GRACE, ServerSettings, XdsServer
from pymesh.grpc._xds_server import ServingModeCallback

__all__ = [
    "LocalRpcError",
    "MeshChannel",
    "MeshInterceptor",
    "XdsServer",
    "aio",
    "insecure_channel",
    "secure_channel",
    "server",
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


def server(
    thread_pool: futures.Executor | None = None,
    *,
    mesh: Mesh,
    handlers: Sequence[Any] | None = None,
    interceptors: Sequence[Any] | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
    maximum_concurrent_rpcs: int | None = None,
    compression: grpc.Compression | None = None,
    on_serving_mode: ServingModeCallback | None = None,
    drain_grace: float = DEFAULT_DRAIN_GRACE,
) -> XdsServer:
    """An xDS-driven ``grpc.Server`` (gRFC A36), like ``grpc.server(..., xds=True)``.

    ::

        server = pymesh.grpc.server(mesh=mesh)
        reviews_pb2_grpc.add_ReviewsServicer_to_server(Reviews(), server)
        port = server.add_xds_port("0.0.0.0:50051")
        server.start()

    Each port serves only once the Listener named by the bootstrap's
    ``server_listener_resource_name_template`` (``%s`` → ``IP:PORT``) is received and
    valid; a bad update keeps the last good one, a deleted Listener stops the port.
    ``on_serving_mode(address, serving, error)`` is told each change. TLS and client
    certificates come from the Listener's DownstreamTlsContext; each call must match a
    route with ``non_forwarding_action`` (else UNAVAILABLE). ``drain_grace``: seconds
    in-flight calls get when the port's server is replaced or stopped (A36: 10 min).
    """
    settings = ServerSettings(
        handlers=handlers,
        interceptors=interceptors,
        options=options,
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        compression=compression,
        on_serving_mode=on_serving_mode,
        drain_grace=drain_grace,
    )
    return XdsServer(mesh, settings, thread_pool)
