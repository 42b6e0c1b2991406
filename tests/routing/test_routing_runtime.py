"""The per-route runtime compiled with the route table: effective retry and hedge
policies, the retry decider, and the fault filter overrides (most specific wins:
weighted cluster > route > virtual host, Envoy does not merge across levels)."""

from __future__ import annotations

from routing_helpers import match, req

from pymesh.routing import RouteTable
from pymesh.xds.resources.fault import FaultAbort, FaultConfig
from pymesh.xds.resources.matchers import FractionalPercent
from pymesh.xds.resources.route import (
    ClusterWeight,
    HedgePolicy,
    RetryPolicy,
    Route,
    RouteAction,
    RouteConfiguration,
    VirtualHost,
)

F = "envoy.filters.http.fault"


def _fault(status: int) -> FaultConfig:
    return FaultConfig(abort=FaultAbort(FractionalPercent(100), http_status=status))


def test_fault_overrides_most_specific_wins_and_injectors_are_shared() -> None:
    vhost_fault, route_fault, cw_fault = _fault(501), _fault(502), _fault(503)
    weighted = RouteAction(
        weighted_clusters=(
            ClusterWeight("a", 1, typed_per_filter_config={F: cw_fault}),
            ClusterWeight("b", 1),
        )
    )
    routes = (
        Route(match(path="/w"), weighted, typed_per_filter_config={F: route_fault}),
        Route(match(path="/r"), RouteAction(cluster="c"), typed_per_filter_config={F: route_fault}),
        Route(match(path="/v"), RouteAction(cluster="c")),
    )
    vh = VirtualHost("vh", ("*",), routes, typed_per_filter_config={F: vhost_fault})
    table = RouteTable.compile(RouteConfiguration("rc", (vh,)))

    def status(path: str, value: int = 0) -> int | None:
        decision = table.select(req(path), value)
        assert decision is not None
        return decision.fault_overrides[F].config.abort.http_status  # type: ignore[union-attr]

    assert status("/w", 0) == 503  # weighted cluster a's own override
    assert status("/w", 1) == 502  # cluster b has none: the route's
    assert status("/r") == 502
    assert status("/v") == 501  # only the virtual host's
    # One injector per config object: its max_active_faults count is shared.
    v1, v2 = table.select(req("/v"), 0), table.select(req("/r"), 0)
    assert v1 is not None and v2 is not None
    assert table.select(req("/v"), 5).fault_overrides[F] is v1.fault_overrides[F]  # type: ignore[union-attr]
    assert v2.fault_overrides[F] is not v1.fault_overrides[F]


def test_retry_and_hedge_policies_fall_back_to_the_virtual_host() -> None:
    vh_retry = RetryPolicy(retry_on=frozenset({"5xx"}), num_retries=2)
    no_retries = RetryPolicy(retry_on=frozenset({"5xx"}), num_retries=0)
    routes = (
        Route(match(path="/own"), RouteAction(cluster="c", retry_policy=no_retries)),
        Route(match(path="/vh"), RouteAction(cluster="c")),
    )
    vh = VirtualHost(
        "vh",
        ("*",),
        routes,
        retry_policy=vh_retry,
        hedge_policy=HedgePolicy(hedge_on_per_try_timeout=True),
    )
    table = RouteTable.compile(RouteConfiguration("rc", (vh,)))
    own = table.select(req("/own"), 0)
    inherited = table.select(req("/vh"), 0)
    assert own is not None and inherited is not None
    assert own.compiled.retry is no_retries and own.compiled.decider is None  # no retries
    assert inherited.compiled.retry is vh_retry
    decider = inherited.compiled.decider
    assert decider is not None and decider.num_retries == 2
    assert (
        inherited.compiled.hedge is not None and inherited.compiled.hedge.hedge_on_per_try_timeout
    )
