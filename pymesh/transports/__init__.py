"""Transports: httpx (sync/async) and, in pymesh.grpc, grpc channels."""

from pymesh.transports._httpx import AsyncMeshTransport, MeshTransport

__all__ = ["AsyncMeshTransport", "MeshTransport"]
