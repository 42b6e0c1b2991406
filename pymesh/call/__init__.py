"""The one call engine: plan → admit → attempts, for HTTP and gRPC, sync and async.

Protocol-neutral and sans-I/O (internal; not public API):

* :mod:`~pymesh.call._plan` — the route and weighted cluster of a call (:class:`Plan`),
  or the answer pymesh gives itself (:class:`LocalReply`);
* :mod:`~pymesh.call._admit` — the cluster's pick: drops, endpoint, breaker slot, as a
  :class:`Ticket` whose ``done(outcome)`` records load, outlier result and frees slots;
* :mod:`~pymesh.call._attempts` — retries, back-off, per-try timeouts, budgets, A44
  (and :func:`start_alone`, the one attempt of a call that has none of them);
* :mod:`~pymesh.call._steps` — the attempt / hedging loop as a generator of I/O steps,
  and the two runners (blocking, asyncio) every driver uses.

httpx transports and gRPC channels are drivers: they do the I/O and map their protocol's
answer (HTTP status, gRPC code, exception) to a :class:`Reply`.
"""

from pymesh.call._admit import Refused, Reply, Ticket, admit
from pymesh.call._attempts import GRPC_MAX_ATTEMPTS, Attempts, local, start_alone
from pymesh.call._plan import (
    LocalReply,
    PathRoute,
    Plan,
    aggregate_target,
    not_found,
    path_route,
    plan_by_path,
    plan_request,
)
from pymesh.call._steps import (
    Abandon,
    AsyncIO,
    Discard,
    Launch,
    Step,
    SyncIO,
    Wait,
    run_async,
    run_sync,
    steps,
)

__all__ = [
    "GRPC_MAX_ATTEMPTS",
    "Abandon",
    "AsyncIO",
    "Attempts",
    "Discard",
    "Launch",
    "LocalReply",
    "PathRoute",
    "Plan",
    "Refused",
    "Reply",
    "Step",
    "SyncIO",
    "Ticket",
    "Wait",
    "admit",
    "aggregate_target",
    "local",
    "not_found",
    "path_route",
    "plan_by_path",
    "plan_request",
    "run_async",
    "run_sync",
    "start_alone",
    "steps",
]
