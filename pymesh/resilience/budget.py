"""Per-cluster circuit breaker: Envoy's resource manager thresholds and retry budget.

Counters are plain ints updated without a lock. ``+=`` on an attribute is not atomic
in CPython (load, add, store), so under heavy thread contention a count can drift by
the odd unit; Envoy's own limits are likewise approximate across workers. What matters
is that the request path never blocks on a lock. In a single thread counts are exact.

The call engine takes and gives back request and retry slots (pymesh.call); the
HTTP/1.1 pools take pending and connection slots (pymesh.transports._pool), as Envoy's
router and connection pools do.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymesh.xds.resources.cluster import CircuitBreakers

__all__ = ["CircuitBreaker", "OverflowCounters"]


@dataclass(slots=True)
class OverflowCounters:
    """How often each limit refused (Envoy's upstream_rq_pending_overflow, which also
    counts max_requests refusals of HTTP/1.1 pools, upstream_rq_retry_overflow,
    upstream_cx_overflow and, for max_requests at admission, upstream_rq_overflow)."""

    requests: int = 0
    pending: int = 0
    retries: int = 0
    connections: int = 0


class CircuitBreaker:
    """Concurrency limits of one cluster (DEFAULT priority).

    ``try_acquire_*`` returns False (and counts an overflow) when the limit is reached;
    every successful acquire must be paired with its ``release_*``.
    """

    __slots__ = (
        "active_connections",
        "active_requests",
        "active_retries",
        "max_requests",
        "overflow",
        "pending_requests",
        "thresholds",
    )

    def __init__(self, thresholds: CircuitBreakers) -> None:
        self.thresholds = thresholds
        #: ``thresholds.max_requests``, one attribute read away: admission checks it
        #: inline (pymesh.call.admit) and calls :meth:`try_acquire_request` only when
        #: the limit is reached, to count the overflow.
        self.max_requests = thresholds.max_requests
        self.active_requests = 0
        self.pending_requests = 0
        self.active_retries = 0
        self.active_connections = 0
        self.overflow = OverflowCounters()

    def __repr__(self) -> str:
        t = self.thresholds
        return (
            f"CircuitBreaker(requests={self.active_requests}/{t.max_requests}, "
            f"pending={self.pending_requests}/{t.max_pending_requests}, "
            f"retries={self.active_retries}/{self.retry_limit}, "
            f"connections={self.active_connections}/{t.max_connections})"
        )

    # Requests -------------------------------------------------------------------------

    def try_acquire_request(self, attaching: bool = False) -> bool:
        """Admit one request (max_requests).

        ``attaching``: an HTTP/1.1 pool attaches a request to a ready connection, where
        Envoy checks max_requests and counts a refusal as a pending overflow
        (upstream_rq_pending_overflow).
        """
        active = self.active_requests
        if active >= self.max_requests:
            if attaching:
                self.overflow.pending += 1
            else:
                self.overflow.requests += 1
            return False
        self.active_requests = active + 1
        return True

    def release_request(self) -> None:
        self.active_requests -= 1

    # Pending requests (waiting for a connection) ----------------------------------------

    def try_acquire_pending(self) -> bool:
        """Admit one request waiting for a connection (max_pending_requests)."""
        if self.pending_requests >= self.thresholds.max_pending_requests:
            self.overflow.pending += 1
            return False
        self.pending_requests += 1
        return True

    def release_pending(self) -> None:
        self.pending_requests -= 1

    # Retries ------------------------------------------------------------------------------

    @property
    def retry_limit(self) -> int:
        """Concurrent retries allowed now.

        With a retry budget (which then replaces max_retries, as in Envoy):
        ``max(budget_percent% of (active + pending requests), min_retry_concurrency)``,
        the percentage truncated to an integer as Envoy's uint64 conversion does.
        """
        budget = self.thresholds.retry_budget
        if budget is None:
            return self.thresholds.max_retries
        # Envoy's active + pending requests (HTTP/1.1 pools count a request pending until
        # it is attached, then active; elsewhere the slot is taken at admission).
        active = self.active_requests + self.pending_requests
        return max(int(budget.budget_percent / 100.0 * active), budget.min_retry_concurrency)

    def try_acquire_retry(self) -> bool:
        """Admit one retry; on False the caller returns the last response as is."""
        if self.active_retries >= self.retry_limit:
            self.overflow.retries += 1
            return False
        self.active_retries += 1
        return True

    def release_retry(self) -> None:
        self.active_retries -= 1

    # Connections ----------------------------------------------------------------------------

    def try_acquire_connection(self, first: bool = False) -> bool:
        """Account a new upstream connection of the cluster (max_connections, over all
        its endpoints); call from the pool that opens it.

        At the limit the overflow counts (Envoy's upstream_cx_overflow) and the answer
        is False, unless ``first``: the endpoint has no connection at all, and Envoy then
        opens one anyway (counted), so that its pending requests can ever be served.
        """
        if self.active_connections < self.thresholds.max_connections:
            self.active_connections += 1
            return True
        self.overflow.connections += 1
        if first:
            self.active_connections += 1
            return True
        return False

    def release_connection(self) -> None:
        self.active_connections -= 1
