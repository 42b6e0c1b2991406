"""One place that maps httpcore's exceptions onto httpx's, and classifies failures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpcore
import httpx

from pymesh.resilience import Outcome

# httpcore → httpx, as httpx's own transport does (most specific first).
_MAP: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
)


def to_httpx(exc: Exception) -> Exception:
    """The httpx exception for an httpcore one (the most specific class wins)."""
    best: type[httpx.TransportError] | None = None
    for src, dst in _MAP:
        if isinstance(exc, src) and (best is None or issubclass(dst, best)):
            best = dst
    if best is None:
        return exc
    return best(str(exc))


@contextmanager
def map_httpcore_exceptions() -> Iterator[None]:
    """Re-raise httpcore errors as httpx errors (for response body streaming)."""
    try:
        yield
    except Exception as exc:
        mapped = to_httpx(exc)
        if mapped is exc:
            raise
        raise mapped from exc


def failure_outcome(exc: BaseException) -> Outcome:
    """Classify a transport failure as Envoy's retry/outlier machinery sees it."""
    if isinstance(exc, (httpcore.ConnectError, httpcore.ConnectTimeout, httpx.ConnectError)):
        return Outcome.failure(connect_failure=True)
    if isinstance(exc, (httpcore.TimeoutException, httpx.TimeoutException, TimeoutError)):
        return Outcome.failure(timeout=True)
    return Outcome.failure(reset=True)
