"""pymesh: a proxyless, client-side service mesh for Python.

Subscribe to an xDS control plane and get Envoy's routing, load balancing and
resilience in process for httpx clients and grpc channels.
"""

from pymesh import grpc
from pymesh._mesh import Mesh
from pymesh.errors import (
    BootstrapError,
    ClusterUnavailableError,
    ConfigFileError,
    ConfigTimeoutError,
    FaultAbortError,
    MeshClosedError,
    MeshError,
    NoHealthyUpstreamError,
    NoRouteError,
    PermissionDeniedError,
    ResourceDoesNotExistError,
    ResourceInvalid,
    TlsConfigError,
    UnknownHostError,
    UpstreamOverflowError,
    XdsDataError,
    XdsStreamError,
)
from pymesh.transports import AsyncMeshTransport, MeshTransport

__version__ = "0.1.0"

__all__ = [
    "AsyncMeshTransport",
    "BootstrapError",
    "ClusterUnavailableError",
    "ConfigFileError",
    "ConfigTimeoutError",
    "FaultAbortError",
    "Mesh",
    "MeshClosedError",
    "MeshError",
    "MeshTransport",
    "NoHealthyUpstreamError",
    "NoRouteError",
    "PermissionDeniedError",
    "ResourceDoesNotExistError",
    "ResourceInvalid",
    "TlsConfigError",
    "UnknownHostError",
    "UpstreamOverflowError",
    "XdsDataError",
    "XdsStreamError",
    "__version__",
    "grpc",
]
