"""Outlier detection for one cluster, following Envoy's DetectorImpl.

Four detectors, as Envoy:

* consecutive 5xx / consecutive gateway failure (502/503/504): evaluated inline in
  :meth:`OutlierDetector.record`; the host is ejected the moment the count reaches the
  threshold (if the ``enforcing_*`` roll succeeds), then that counter restarts;
* consecutive local-origin failure, only with ``split_external_local_origin_errors``;
* success rate (mean - stdev_factor/1000 x stdev over hosts with enough requests) and
  failure percentage, evaluated in :meth:`OutlierDetector.sweep` every ``interval`` over
  the interval that just ended; local-origin twins of both with the split.

Without the split, local-origin failures are folded into the HTTP counters as Envoy's
router reports them: connect failure / reset → 503, per-try timeout → 504. gRPC results
are counted through Envoy's grpc-status → HTTP status mapping.

Ejection (Envoy's ejectHost): allowed while ``100 x (ejected + 1) / hosts`` stays within
``max_ejection_percent``, or for the first ejection when ``always_eject_one_host``. An
ejected host stays out for ``min(base_ejection_time x multiplier, max_ejection_time)``
plus a random jitter in ``[0, max_ejection_time_jitter]``; the multiplier grows by one
per ejection (until ``multiplier x base`` reaches ``max + base``) and shrinks by one for
every sweep at least ``interval`` after the host's last return during which it stays in.
Un-ejection happens in :meth:`sweep` and resets the host's consecutive counters.

Thread-safety: :meth:`record` is lock-free on the hot path (approximate counters); any
change to the ejected set (inline ejection, sweep, set_hosts) takes one lock and calls
``on_change`` under it, so notifications arrive in order. ``on_change`` must be quick
and must not call back into the detector's mutating methods.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterable

from pymesh.resilience.outcome import Outcome, grpc_to_http_status
from pymesh.xds.resources.cluster import OutlierDetection

__all__ = ["EJECTION_TYPES", "OutlierDetector"]

#: Envoy's OutlierEjectionType names, as used in :attr:`OutlierDetector.stats` keys.
EJECTION_TYPES = (
    "consecutive_5xx",
    "consecutive_gateway_failure",
    "consecutive_local_origin_failure",
    "success_rate",
    "success_rate_local_origin",
    "failure_percentage",
    "failure_percentage_local_origin",
)


class _Host:
    """Envoy's DetectorHostMonitorImpl for one address.

    A plain class whose fields start as class-level defaults (all immutable): creating
    one is a bare object, about a third of a 17-field dataclass's ``__init__``, which
    matters when an EDS update brings 10 000 new hosts; each field becomes the
    instance's own on its first write."""

    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    consecutive_local: int = 0
    # Success-rate buckets: the current interval is written by record(); at each sweep
    # it becomes the "backup" the detectors read, and a fresh bucket starts.
    ext_total: int = 0
    ext_success: int = 0
    local_total: int = 0
    local_success: int = 0
    prev_ext_total: int = 0
    prev_ext_success: int = 0
    prev_local_total: int = 0
    prev_local_success: int = 0
    ejected: bool = False
    multiplier: int = 0  # Envoy's ejectTimeBackoff
    num_ejections: int = 0
    last_ejection: float = 0.0
    last_unejection: float | None = None
    jitter: float = 0.0


class OutlierDetector:
    """Passive health checking of one cluster's endpoints (by address string).

    Pure and deterministic given ``clock`` and ``rng``. The owner calls
    :meth:`set_hosts` on every EDS change, :meth:`record` after every attempt, and
    :meth:`sweep` every :attr:`interval` seconds.
    """

    def __init__(
        self,
        config: OutlierDetection,
        *,
        on_change: Callable[[frozenset[str]], None],
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        always_eject_one_host: bool = False,
    ) -> None:
        self.config = config
        self._on_change = on_change
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._always_eject_one_host = always_eject_one_host
        self._split = config.split_external_local_origin_errors
        self._hosts: dict[str, _Host] = {}
        self._ejected: frozenset[str] = frozenset()
        self._lock = threading.RLock()
        #: Counters: ``ejections_enforced_total``, ``ejections_overflow``,
        #: ``ejections_detected_<type>`` and ``ejections_enforced_<type>``.
        self.stats: dict[str, int] = {"ejections_enforced_total": 0, "ejections_overflow": 0}
        for kind in EJECTION_TYPES:
            self.stats[f"ejections_detected_{kind}"] = 0
            self.stats[f"ejections_enforced_{kind}"] = 0
        self._enforcing = {
            "consecutive_5xx": config.enforcing_consecutive_5xx,
            "consecutive_gateway_failure": config.enforcing_consecutive_gateway_failure,
            "consecutive_local_origin_failure": config.enforcing_consecutive_local_origin_failure,
            "success_rate": config.enforcing_success_rate,
            "success_rate_local_origin": config.enforcing_local_origin_success_rate,
            "failure_percentage": config.enforcing_failure_percentage,
            "failure_percentage_local_origin": config.enforcing_failure_percentage_local_origin,
        }

    def __repr__(self) -> str:
        return f"OutlierDetector(hosts={len(self._hosts)}, ejected={sorted(self._ejected)})"

    @property
    def interval(self) -> float:
        """Seconds between :meth:`sweep` calls (OutlierDetection.interval)."""
        return self.config.interval

    @property
    def ejected(self) -> frozenset[str]:
        """The currently ejected addresses (an immutable snapshot)."""
        return self._ejected

    def num_ejections(self, address: str) -> int:
        """How many times ``address`` has been ejected since it joined the cluster."""
        host = self._hosts.get(address)
        return host.num_ejections if host is not None else 0

    # Membership -------------------------------------------------------------------------

    def set_hosts(self, addresses: Iterable[str]) -> None:
        """Track exactly ``addresses``: new ones start fresh, removed ones are forgotten
        (and leave the ejected set)."""
        wanted = addresses if isinstance(addresses, (set, frozenset)) else set(addresses)
        with self._lock:
            current = self._hosts
            # C-level set differences: an EDS update of a 10 000-host cluster mostly
            # keeps its hosts, and walks none of them one by one here.
            removed = current.keys() - wanted
            added = wanted - current.keys()
            if not removed and not added:
                return
            hosts = dict(current)  # a new map: record() reads the old one lock-free
            for address in removed:
                del hosts[address]
            hosts.update({address: _Host() for address in added})
            self._hosts = hosts
            if removed & self._ejected:  # a new host is never ejected
                self._publish()

    # Hot path ----------------------------------------------------------------------------

    def record(self, address: str, outcome: Outcome) -> None:
        """Account one attempt's result against ``address`` (unknown addresses are
        ignored, as Envoy ignores hosts that already left the cluster)."""
        host = self._hosts.get(address)
        if host is None:
            return
        if outcome.is_local_failure:
            if self._split:
                host.local_total += 1
                host.consecutive_local += 1
                if host.consecutive_local == self.config.consecutive_local_origin_failure:
                    self._on_consecutive(address, host, "consecutive_local_origin_failure")
            else:
                self._put_http(address, host, 504 if outcome.timeout else 503)
            return
        if self._split:
            # The connection worked: a local-origin success (Envoy's
            # LocalOriginConnectSuccess), whatever the server then answered.
            host.local_total += 1
            host.local_success += 1
            host.consecutive_local = 0
        if outcome.grpc_status is not None:
            self._put_http(address, host, grpc_to_http_status(outcome.grpc_status))
        elif outcome.status is not None:
            self._put_http(address, host, outcome.status)

    def _put_http(self, address: str, host: _Host, code: int) -> None:
        # Envoy's putHttpResponseCode.
        host.ext_total += 1
        if 500 <= code < 600:
            if code in (502, 503, 504):
                host.consecutive_gateway += 1
                if host.consecutive_gateway == self.config.consecutive_gateway_failure:
                    self._on_consecutive(address, host, "consecutive_gateway_failure")
            else:
                host.consecutive_gateway = 0
            host.consecutive_5xx += 1
            if host.consecutive_5xx == self.config.consecutive_5xx:
                self._on_consecutive(address, host, "consecutive_5xx")
        else:
            host.ext_success += 1
            host.consecutive_5xx = 0
            host.consecutive_gateway = 0

    def _on_consecutive(self, address: str, host: _Host, kind: str) -> None:
        with self._lock:
            if self._hosts.get(address) is not host or host.ejected:
                return
            self.stats[f"ejections_detected_{kind}"] += 1
            changed = self._eject(address, host, kind, self._clock())
            # Restart this detector's count whether or not the ejection was enforced,
            # so a further bout of failures is detected again.
            if kind == "consecutive_5xx":
                host.consecutive_5xx = 0
            elif kind == "consecutive_gateway_failure":
                host.consecutive_gateway = 0
            else:
                host.consecutive_local = 0
            if changed:
                self._publish()

    # Ejection ----------------------------------------------------------------------------

    def _enforced(self, kind: str) -> bool:
        percent = self._enforcing[kind]
        if percent >= 100:
            return True
        if percent <= 0:
            return False
        return self._rng.randrange(100) < percent

    def _eject(self, address: str, host: _Host, kind: str, now: float) -> bool:
        """Envoy's ejectHost; True when the host was ejected. Caller holds the lock."""
        active = sum(1 for h in self._hosts.values() if h.ejected)
        max_percent = min(100, self.config.max_ejection_percent)
        allowed = 100.0 * (active + 1) / len(self._hosts) <= max_percent
        if self._always_eject_one_host and active == 0:
            allowed = True
        if not allowed:
            self.stats["ejections_overflow"] += 1
            return False
        if not self._enforced(kind):
            return False
        cfg = self.config
        host.ejected = True
        host.num_ejections += 1
        host.last_ejection = now
        jitter_max = cfg.max_ejection_time_jitter
        host.jitter = self._rng.random() * jitter_max if jitter_max > 0 else 0.0
        if (
            host.multiplier * cfg.base_ejection_time
            < cfg.max_ejection_time + cfg.base_ejection_time
        ):
            host.multiplier += 1
        self.stats["ejections_enforced_total"] += 1
        self.stats[f"ejections_enforced_{kind}"] += 1
        return True

    def _publish(self) -> None:
        ejected = frozenset(a for a, h in self._hosts.items() if h.ejected)
        if ejected != self._ejected:
            self._ejected = ejected
            self._on_change(ejected)

    # Interval sweep ------------------------------------------------------------------------

    def ejection_duration(self, address: str) -> float | None:
        """How long the current ejection of ``address`` lasts in total (None if it is
        not ejected)."""
        host = self._hosts.get(address)
        if host is None or not host.ejected:
            return None
        cfg = self.config
        return min(cfg.base_ejection_time * host.multiplier, cfg.max_ejection_time) + host.jitter

    def sweep(self, now: float | None = None) -> None:
        """Envoy's interval timer: return hosts whose time is up, close the interval's
        success-rate buckets, run the success-rate and failure-percentage detectors on
        them, and decay ejection multipliers of hosts that stayed healthy."""
        if now is None:
            now = self._clock()
        cfg = self.config
        with self._lock:
            for host in self._hosts.values():
                if host.ejected:
                    duration = (
                        min(cfg.base_ejection_time * host.multiplier, cfg.max_ejection_time)
                        + host.jitter
                    )
                    if duration <= now - host.last_ejection:
                        host.ejected = False
                        host.consecutive_5xx = 0
                        host.consecutive_gateway = 0
                        host.consecutive_local = 0
                        host.last_unejection = now
                host.prev_ext_total, host.prev_ext_success = host.ext_total, host.ext_success
                host.prev_local_total, host.prev_local_success = (
                    host.local_total,
                    host.local_success,
                )
                host.ext_total = host.ext_success = 0
                host.local_total = host.local_success = 0
            self._success_rate_ejections(now, local=False)
            self._success_rate_ejections(now, local=True)
            for host in self._hosts.values():
                if (
                    not host.ejected
                    and host.last_unejection is not None
                    and now - host.last_unejection >= cfg.interval
                    and host.multiplier > 0
                ):
                    host.multiplier -= 1
            self._publish()

    def _success_rate_ejections(self, now: float, *, local: bool) -> None:
        # Envoy's processSuccessRateEjections for one monitor type.
        cfg = self.config
        n_hosts = len(self._hosts)
        if (
            n_hosts < cfg.success_rate_minimum_hosts
            and n_hosts < cfg.failure_percentage_minimum_hosts
        ):
            return
        sr_hosts: list[tuple[str, _Host, float]] = []
        fp_hosts: list[tuple[str, _Host, float]] = []
        for address, host in self._hosts.items():
            if host.ejected:
                continue
            if local:
                total, success = host.prev_local_total, host.prev_local_success
            else:
                total, success = host.prev_ext_total, host.prev_ext_success
            if total == 0:
                continue
            rate = success * 100.0 / total
            if total >= cfg.success_rate_request_volume:
                sr_hosts.append((address, host, rate))
            if total >= cfg.failure_percentage_request_volume:
                fp_hosts.append((address, host, rate))
        if sr_hosts and len(sr_hosts) >= cfg.success_rate_minimum_hosts:
            mean = sum(rate for _, _, rate in sr_hosts) / len(sr_hosts)
            variance = sum((rate - mean) ** 2 for _, _, rate in sr_hosts) / len(sr_hosts)
            threshold = mean - (cfg.success_rate_stdev_factor / 1000.0) * math.sqrt(variance)
            kind = "success_rate_local_origin" if local else "success_rate"
            for address, host, rate in sr_hosts:
                if rate < threshold and not host.ejected:
                    self.stats[f"ejections_detected_{kind}"] += 1
                    self._eject(address, host, kind, now)
        if fp_hosts and len(fp_hosts) >= cfg.failure_percentage_minimum_hosts:
            kind = "failure_percentage_local_origin" if local else "failure_percentage"
            for address, host, rate in fp_hosts:
                if 100.0 - rate >= cfg.failure_percentage_threshold and not host.ejected:
                    self.stats[f"ejections_detected_{kind}"] += 1
                    self._eject(address, host, kind, now)
