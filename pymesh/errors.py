"""Typed errors. Every pymesh error is a :class:`MeshError`.

Errors carry the node id and the xDS resource name where one applies, so a log line
alone tells an operator which resource of which client went wrong.
"""

from __future__ import annotations

__all__ = [
    "BootstrapError",
    "ClusterUnavailableError",
    "ConfigFileError",
    "ConfigTimeoutError",
    "FaultAbortError",
    "MeshClosedError",
    "MeshError",
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
]


class MeshError(Exception):
    """Base class of every error pymesh raises.

    ``node_id`` and ``resource_name`` are filled in where they are known.
    """

    def __init__(
        self, message: str, *, node_id: str | None = None, resource_name: str | None = None
    ) -> None:
        self.message = message
        self.node_id = node_id
        self.resource_name = resource_name
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.resource_name:
            where.append(f"resource {self.resource_name!r}")
        if self.node_id:
            where.append(f"node {self.node_id!r}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class BootstrapError(MeshError):
    """The bootstrap (file, env var or dict) is unreadable or invalid.

    ``source`` names the file or variable; ``field`` is a dotted path such as
    ``xds_servers[0].server_uri``.
    """

    def __init__(self, source: str, field: str, reason: str) -> None:
        self.source = source
        self.field = field
        self.reason = reason
        super().__init__(f"bootstrap {source}: field {field!r}: {reason}")


class ConfigFileError(MeshError):
    """A mesh config file for the embedded control plane is invalid.

    ``where`` is a dotted field path (and the line where known).
    """

    def __init__(self, source: str, where: str, reason: str, *, line: int | None = None) -> None:
        self.source = source
        self.where = where
        self.reason = reason
        self.line = line
        loc = f"{source}:{line}" if line is not None else source
        super().__init__(f"{loc}: {where}: {reason}")


class ResourceInvalid(MeshError):
    """An xDS resource failed validation; the client NACKs it.

    ``field`` is the dotted path of the offending field inside the resource.
    """

    def __init__(self, resource_name: str, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}", resource_name=resource_name)


class ResourceDoesNotExistError(MeshError):
    """The control plane does not have an xDS resource the client needs.

    Raised (or reported to watchers) only on a definitive answer: the server said so
    (a ``resource_errors`` NOT_FOUND, gRFC A88), a full-state response that provably
    answered a request naming it left it out, the server deleted it, or the
    does-not-exist timer ran out while the stream was up. ``type_url`` says which
    resource type; a listener that does not exist is the only case where a request may
    pass through outside the mesh.
    """

    def __init__(
        self, message: str, *, type_url: str, node_id: str | None = None, resource_name: str
    ) -> None:
        self.type_url = type_url
        super().__init__(message, node_id=node_id, resource_name=resource_name)


class XdsDataError(MeshError):
    """An xDS resource the client had was replaced by one it rejected (NACK) or the
    server refused (PERMISSION_DENIED), and the server feature ``fail_on_data_errors``
    (gRFC A88) says to drop the cached value rather than keep serving it. Requests that
    need the resource fail with this error, naming it."""


class XdsStreamError(MeshError):
    """The ADS stream cannot deliver config: the server is unreachable, the stream
    failed, or a response was larger than the client accepts. Resources without a
    cached value fail with this; cached ones keep serving (gRFC A57)."""


class NoRouteError(MeshError):
    """No virtual host or route matched (gRPC: UNAVAILABLE; HTTP answers a local 404)."""


class UnknownHostError(MeshError):
    """The control plane does not know the host and passthrough is off."""


class ClusterUnavailableError(MeshError):
    """The selected cluster does not exist or has no usable config."""


class NoHealthyUpstreamError(MeshError):
    """The cluster has no endpoint that can take the request."""


class UpstreamOverflowError(MeshError):
    """A circuit breaker (max_requests, max_pending_requests, max_retries, budget) tripped."""


class FaultAbortError(MeshError):
    """The fault filter aborted the request (carries the HTTP and gRPC status)."""

    def __init__(
        self, message: str, *, http_status: int | None = None, grpc_status: int | None = None
    ) -> None:
        self.http_status = http_status
        self.grpc_status = grpc_status
        super().__init__(message)


class PermissionDeniedError(MeshError):
    """An RBAC policy (gRFC A41, Envoy's RBAC filter) denied the request on a pymesh server.

    ``policy`` names the DENY policy that matched (None when an ALLOW filter matched no
    policy), ``filter_name`` the RBAC http filter. Servers answer gRPC calls with
    ``grpc_status`` (7, PERMISSION_DENIED) and HTTP requests with ``http_status`` (403).
    """

    grpc_status = 7  # grpc.StatusCode.PERMISSION_DENIED
    http_status = 403

    def __init__(
        self,
        message: str,
        *,
        policy: str | None,
        filter_name: str,
        resource_name: str | None = None,
    ) -> None:
        self.policy = policy
        self.filter_name = filter_name
        super().__init__(message, resource_name=resource_name)


class ConfigTimeoutError(MeshError):
    """The listener's config did not arrive before the request's timeout."""


class TlsConfigError(MeshError):
    """A cluster's TLS config cannot be satisfied (unknown provider, unreadable files).

    Requests to the cluster fail with this error; pymesh never falls back to plaintext.
    """


class MeshClosedError(MeshError):
    """The mesh was closed."""
