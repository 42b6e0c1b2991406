"""Per-cluster runtime state shared by every listener and transport of a Mesh.

The xDS thread replaces a cluster's config with :meth:`ClusterRuntime.update`; the
request path reads ``picker`` (one attribute) and the counters without locks.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING

from pymesh.lb import EndpointStates, Picker, build_picker
from pymesh.lb._aggregate import AggregatePicker
from pymesh.resilience import CircuitBreaker, OutlierDetector
from pymesh.xds.dependencies import ClusterConfig
from pymesh.xds.resources.cluster import Cluster
from pymesh.xds.resources.endpoint import ClusterLoadAssignment, Endpoint

if TYPE_CHECKING:
    from pymesh.security import ClientTls, MeshSecurity

log = logging.getLogger("pymesh.upstream")

_ADDRESS = attrgetter("address")


class ClusterRuntime:
    """Live state of one cluster: picker, circuit breaker, outlier detector, endpoints.

    ``picker`` is rebuilt (never mutated) when endpoints or the ejected set change.
    ``addresses`` is the frozenset of endpoint addresses, read by transports to close
    pools of endpoints that left.
    """

    __slots__ = (
        "_lock",
        "addresses",
        "aggregate_pickers",
        "breaker",
        "by_address",
        "cluster",
        "ejected",
        "endpoints",
        "error",
        "grpc_picker",
        "joined",
        "leaf_clusters",
        "localities",
        "name",
        "next_sweep",
        "outlier",
        "picker",
        "rng",
        "states",
    )

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.cluster: Cluster | None = None
        self.endpoints: ClusterLoadAssignment | None = None
        self.leaf_clusters: tuple[str, ...] = ()
        #: An aggregate cluster's merged priority set, per protocol (True: gRPC), cached
        #: by the request path (pymesh.call.aggregate_target) while its leaves' pickers
        #: stay the same.
        self.aggregate_pickers: dict[bool, AggregatePicker] = {}
        self.error: str | None = None
        self.states = EndpointStates()
        self.picker: Picker | None = None
        #: The picker gRPC calls use: ``picker`` itself unless some endpoint is DEGRADED,
        #: which gRPC (A27) does not use while Envoy (HTTP) has a degraded tier for it.
        self.grpc_picker: Picker | None = None
        self.breaker: CircuitBreaker | None = None
        self.outlier: OutlierDetector | None = None
        #: The outlier-ejected addresses the current pickers leave out: what requests
        #: see (the detector's own set is a moment ahead while a rebuild runs).
        self.ejected: frozenset[str] = frozenset()
        self.addresses: frozenset[str] = frozenset()
        #: Endpoint address -> endpoint (a stateful session's override host).
        self.by_address: dict[str, Endpoint] = {}
        #: When each endpoint joined the cluster: address → monotonic time. Slow start
        #: ramps endpoints up from then. As in Envoy (observed with 1.40: every host is
        #: in slow start from its creation, those of the first assignment too, and a
        #: changed Cluster resource re-creates them), the first assignment and a changed
        #: Cluster set every endpoint's time to now. None until the first assignment, and
        #: while the cluster has no slow start.
        self.joined: dict[str, float] | None = None
        #: Endpoint address -> its locality's name (telemetry), built with each EDS update.
        self.localities: dict[str, str] = {}
        self.next_sweep = 0.0
        # Serialises picker rebuilds (xDS updates, ejection changes). The request path
        # takes it only when an ejection changes. Lock order: the outlier detector's
        # lock, then this one.
        self._lock = threading.Lock()

    def update(self, cc: ClusterConfig) -> None:
        """Apply a new ClusterConfig (called on the xDS thread)."""
        with self._lock:
            self.error = cc.error
            self.leaf_clusters = cc.leaf_clusters
            self.aggregate_pickers = {}
            if cc.cluster is None:
                return
            old = self.cluster
            self.cluster = cc.cluster
            if old is None or old.circuit_breakers != cc.cluster.circuit_breakers:
                self.breaker = CircuitBreaker(cc.cluster.circuit_breakers)
            od = cc.cluster.outlier_detection
            if od is None:
                self.outlier = None
            elif self.outlier is None or old is None or old.outlier_detection != od:
                self.outlier = OutlierDetector(od, on_change=self._on_ejected, rng=self.rng)
            self.endpoints = cc.endpoints
            outlier = self.outlier
            if cc.endpoints is not None:
                # Each step walks every endpoint (10 000 in a big cluster). Requests take
                # this lock only when an ejection changes.
                previous = self.addresses
                endpoints = cc.endpoints.endpoints
                self.by_address = dict(zip(map(_ADDRESS, endpoints), endpoints, strict=True))
                self.addresses = frozenset(self.by_address)
                now = time.monotonic()
                if cc.cluster.lb_policy.slow_start is None:
                    # Only slow start reads join times, and a Cluster that turns it on is
                    # a changed Cluster (every host joins now): nothing to keep until then.
                    self.joined = None
                elif self.joined is None or (old is not None and old != cc.cluster):
                    self.joined = dict.fromkeys(self.addresses, now)
                else:
                    joined = {a: t for a, t in self.joined.items() if a in self.addresses}
                    for a in self.addresses - previous:
                        joined[a] = now
                    self.joined = joined
                localities: dict[str, str] = {}
                for loc in cc.endpoints.localities:  # a name per locality, not per host
                    name = str(loc.locality)
                    localities.update(dict.fromkeys(map(_ADDRESS, loc.endpoints), name))
                self.localities = localities
            addresses = self.addresses
        # Outside our lock: the detector calls _on_ejected (which takes our lock) while
        # holding its own, so our lock is never held while waiting for the detector's.
        if outlier is not None and cc.endpoints is not None:
            outlier.set_hosts(addresses)
        with self._lock:
            self._rebuild()

    def client_tls(self, security: MeshSecurity) -> ClientTls | None:
        """The client TLS state for connections to this cluster now (None: plaintext),
        from its UpstreamTlsContext; shared by the httpx pools and the gRPC sub-channels.
        Raises TlsConfigError when the config cannot be satisfied (never plaintext)."""
        cluster = self.cluster
        if cluster is None or cluster.tls is None:
            return None
        return security.client(self.name, cluster.tls)

    def _on_ejected(self, ejected: frozenset[str]) -> None:
        # Called from the request path (consecutive detectors) or the sweeper.
        with self._lock:
            self._rebuild()
        log.info("cluster %s: ejected hosts now %s", self.name, sorted(ejected) or "none")

    def _rebuild(self) -> None:
        if self.cluster is None or self.endpoints is None:
            self.picker = self.grpc_picker = None
            self.ejected = frozenset()
            return
        ejected = self.outlier.ejected if self.outlier is not None else frozenset()
        joined = self.joined
        picker = build_picker(
            self.cluster,
            self.endpoints,
            states=self.states,
            ejected=ejected,
            rng=self.rng,
            joined=joined,
        )
        grpc_picker = picker
        # Only a usable DEGRADED host makes the pickers differ (an ejected one is out of
        # both): the picker's own counts say whether there is one.
        if any(c.degraded for c in picker.level_counts):
            grpc_picker = build_picker(
                self.cluster,
                self.endpoints,
                states=self.states,
                ejected=ejected,
                rng=self.rng,
                degraded_tier=False,
                joined=joined,
            )
        # gRPC's first: a request reading ``picker`` never finds a stale ``grpc_picker``
        # newer than it (both are whole pickers either way).
        self.grpc_picker = grpc_picker
        self.picker = picker
        self.ejected = ejected  # after the pickers: whoever reads it finds them built

    def sweep(self, now: float) -> None:
        """Rebuild the picker when its slow-start weights have moved on, and run the
        outlier detector's interval sweep when it is due (the sweeper thread calls this
        every 0.1 s, so the request path never recomputes weights)."""
        picker = self.picker
        if picker is not None and picker.refresh_at and now >= picker.refresh_at:
            with self._lock:
                if self.picker is picker:  # not rebuilt meanwhile
                    self._rebuild()
        outlier = self.outlier
        if outlier is None:
            return
        if self.next_sweep == 0.0:
            self.next_sweep = now + outlier.interval
        elif now >= self.next_sweep:
            self.next_sweep = now + outlier.interval
            outlier.sweep(now)


class Sweeper:
    """A named daemon thread that runs outlier sweeps on each cluster's interval."""

    def __init__(self, clusters: Callable[[], list[ClusterRuntime]], tick: float = 0.1) -> None:
        self._clusters = clusters
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pymesh-outlier", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            for runtime in self._clusters():
                try:
                    runtime.sweep(now)
                except Exception:  # a sweep must never kill the thread
                    log.exception("outlier sweep of cluster %s failed", runtime.name)

    def close(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
