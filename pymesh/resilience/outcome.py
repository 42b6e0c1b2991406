"""What one upstream attempt produced, in the terms retry and outlier detection need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Outcome", "grpc_to_http_status"]

# Envoy's Grpc::Utility::grpcToHttpStatus (used by its router to feed gRPC results to
# outlier detection); anything unknown maps to 500.
_GRPC_TO_HTTP: dict[int, int] = {
    0: 200,  # OK
    1: 499,  # CANCELLED
    2: 500,  # UNKNOWN
    3: 400,  # INVALID_ARGUMENT
    4: 504,  # DEADLINE_EXCEEDED
    5: 404,  # NOT_FOUND
    6: 409,  # ALREADY_EXISTS
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 400,  # FAILED_PRECONDITION
    10: 409,  # ABORTED
    11: 400,  # OUT_OF_RANGE
    12: 501,  # UNIMPLEMENTED
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    15: 500,  # DATA_LOSS
    16: 401,  # UNAUTHENTICATED
}


def grpc_to_http_status(grpc_status: int) -> int:
    """Map a gRPC status code to the HTTP status Envoy reports for it."""
    return _GRPC_TO_HTTP.get(grpc_status, 500)


@dataclass(slots=True)
class Outcome:
    """The result of one attempt (one try of a request against one endpoint).

    Exactly one of two shapes is expected:

    * a response: ``status`` (HTTP) and/or ``grpc_status`` set, ``headers`` the response
      headers (lower-case names; for gRPC include trailers such as ``grpc-status``);
    * a local-origin failure: ``connect_failure``, ``reset``, ``timeout`` (the per-try
      timeout fired) or ``refused_stream`` set, with ``local_origin`` True.

    Use :meth:`response` and :meth:`failure` to build them.
    """

    status: int | None = None
    grpc_status: int | None = None
    reset: bool = False
    connect_failure: bool = False
    timeout: bool = False
    refused_stream: bool = False
    headers: Mapping[str, str] | None = None
    local_origin: bool = False

    @classmethod
    def response(
        cls,
        status: int | None,
        headers: Mapping[str, str] | None = None,
        *,
        grpc_status: int | None = None,
    ) -> Outcome:
        """An attempt that got a response (HTTP status and/or final gRPC status)."""
        return cls(status=status, grpc_status=grpc_status, headers=headers)

    @classmethod
    def failure(
        cls,
        *,
        connect_failure: bool = False,
        reset: bool = False,
        timeout: bool = False,
        refused_stream: bool = False,
    ) -> Outcome:
        """An attempt that failed before a response: a local-origin error (Envoy's term)."""
        return cls(
            reset=reset,
            connect_failure=connect_failure,
            timeout=timeout,
            refused_stream=refused_stream,
            local_origin=True,
        )

    @property
    def is_local_failure(self) -> bool:
        """True when no response was received (connect failure, reset, timeout, refused)."""
        return (
            self.local_origin
            or self.connect_failure
            or self.reset
            or self.timeout
            or self.refused_stream
        )
