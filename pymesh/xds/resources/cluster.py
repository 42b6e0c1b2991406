"""Cluster → frozen dataclasses, with Envoy's defaults applied once here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pymesh.xds.resources.endpoint import ClusterLoadAssignment
from pymesh.xds.resources.tls import UpstreamTls

ClusterKind = Literal["EDS", "STATIC", "STRICT_DNS", "LOGICAL_DNS", "AGGREGATE"]

LbPolicyName = Literal[
    "round_robin",
    "least_request",
    "random",
    "ring_hash",
    "maglev",
    "pick_first",
    "peak_ewma",
    "client_side_weighted_round_robin",
]

#: Type URL of pymesh's own latency-aware balancer, usable in load_balancing_policy.
PEAK_EWMA_TYPE = "pymesh.lb.v1.PeakEwma"


@dataclass(frozen=True, slots=True)
class WrrConfig:
    """Envoy's ``ClientSideWeightedRoundRobin`` (gRFC A58), defaults applied (seconds).

    ``weight_update_period`` is at least 0.1 s (A58 raises smaller values).
    """

    enable_oob_load_report: bool = False
    oob_reporting_period: float = 10.0
    blackout_period: float = 10.0
    weight_expiration_period: float = 180.0
    weight_update_period: float = 1.0
    error_utilization_penalty: float = 1.0
    metric_names_for_computing_utilization: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SlowStart:
    """Envoy's SlowStartConfig (round robin and least request): an endpoint has its
    weight scaled by ``max(min_weight_percent/100, time_factor ** (1/aggression))`` for
    ``window`` seconds after it joined, ``time_factor`` being the time since it joined
    over the window (Envoy 1.40 ramps the hosts of the first assignment too)."""

    window: float  # seconds, > 0 (0 disables slow start and is parsed as None)
    aggression: float = 1.0
    min_weight_percent: float = 10.0

    def factor(self, age: float) -> float:
        """The weight multiplier of an endpoint that joined ``age`` seconds ago (Envoy's
        applySlowStartFactor: the age counts at least 1 ms)."""
        if age >= self.window:
            return 1.0
        time_factor = max(0.001, age) / self.window
        if self.aggression != 1.0:
            time_factor = time_factor ** (1.0 / self.aggression)
        return max(time_factor, self.min_weight_percent / 100.0)


@dataclass(frozen=True, slots=True)
class LbPolicy:
    """The endpoint-picking policy (from lb_policy or load_balancing_policy).

    ``locality_weighted``: weighted-target across localities (Envoy's
    locality_weighted_lb_config / gRPC's wrr_locality); otherwise localities are
    flattened within a priority.
    """

    name: LbPolicyName = "round_robin"
    choice_count: int = 2  # least_request
    active_request_bias: float = 1.0  # least_request
    min_ring_size: int = 1024  # ring_hash
    max_ring_size: int = 8 * 1024 * 1024  # ring_hash
    hash_function: Literal["XX_HASH", "MURMUR_HASH_2"] = "XX_HASH"
    table_size: int = 65537  # maglev
    locality_weighted: bool = False
    decay_time: float = 10.0  # peak_ewma (seconds)
    wrr: WrrConfig | None = None  # client_side_weighted_round_robin
    slow_start: SlowStart | None = None  # round_robin, least_request
    params: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class RetryBudget:
    budget_percent: float = 20.0
    min_retry_concurrency: int = 3


@dataclass(frozen=True, slots=True)
class CircuitBreakers:
    """Thresholds for the DEFAULT priority (Envoy defaults)."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    retry_budget: RetryBudget | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """envoy.config.cluster.v3.OutlierDetection with Envoy's defaults (seconds, percents)."""

    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    consecutive_local_origin_failure: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10
    enforcing_consecutive_5xx: int = 100
    enforcing_consecutive_gateway_failure: int = 0
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_success_rate: int = 100
    enforcing_local_origin_success_rate: int = 100
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900
    enforcing_failure_percentage: int = 0
    enforcing_failure_percentage_local_origin: int = 0
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    failure_percentage_threshold: int = 85
    split_external_local_origin_errors: bool = False
    max_ejection_time_jitter: float = 0.0


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    kind: ClusterKind = "EDS"
    eds_service_name: str = ""  # EDS resource name ("" → cluster name)
    load_assignment: ClusterLoadAssignment | None = None  # STATIC / DNS clusters
    aggregate_clusters: tuple[str, ...] = ()  # AGGREGATE, in priority order
    lb_policy: LbPolicy = LbPolicy()
    connect_timeout: float = 5.0
    circuit_breakers: CircuitBreakers = CircuitBreakers()
    outlier_detection: OutlierDetection | None = None
    tls: UpstreamTls | None = None
    healthy_panic_threshold: float = 50.0  # percent; 0 disables panic mode
    #: common_lb_config.override_host_status: EDS health statuses a stateful session's
    #: endpoint may have; None: the protocol's default (Envoy's / gRPC's).
    override_host_status: frozenset[str] | None = None
    max_requests_per_connection: int | None = None
    http2: bool = False  # upstream speaks HTTP/2 (http2_protocol_options)
    dns_refresh_rate: float = 5.0
    dns_failure_refresh_rate: float | None = None
    respect_dns_ttl: bool = False
    dns_lookup_family: Literal["AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL"] = "AUTO"
    unsupported: tuple[str, ...] = ()
    #: common_http_protocol_options.idle_timeout: how long an upstream connection may
    #: stay idle before it is closed. Envoy's default is 1 hour; None = never (Envoy: 0).
    idle_timeout: float | None = 3600.0

    @property
    def eds_resource_name(self) -> str:
        return self.eds_service_name or self.name


def parse_cluster(msg: Any) -> Cluster:
    """Parse a CDS resource.

    ``msg`` is a ``cluster_pb2.Cluster`` message. Raises
    :class:`pymesh.errors.ResourceInvalid` (field path and a reason) when the resource
    must be NACKed; set-but-unsupported fields are listed in ``unsupported`` and logged.
    """
    # Imported here: the parser modules import this module's dataclasses.
    from pymesh.xds.resources._parse_cluster import parse

    return parse(msg)
