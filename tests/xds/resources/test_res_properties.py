"""Property tests (hypothesis) for the small numeric conversions."""

from __future__ import annotations

import math

from _resbuild import cla, first_route, route_config
from hypothesis import given, settings
from hypothesis import strategies as st

from pymesh.errors import ResourceInvalid
from pymesh.xds.resources.endpoint import parse_cluster_load_assignment
from pymesh.xds.resources.matchers import FractionalPercent
from pymesh.xds.resources.route import RouteAction, parse_route_configuration

_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def _action(rc: object) -> RouteAction:
    action = parse_route_configuration(rc).virtual_hosts[0].routes[0].action
    assert isinstance(action, RouteAction)
    return action


@_SETTINGS
@given(st.integers(0, 10**9), st.integers(0, 999_999_999))
def test_duration_to_seconds(seconds: int, nanos: int) -> None:
    rc = route_config()
    t = first_route(rc).route.idle_timeout
    t.seconds, t.nanos = seconds, nanos
    got = _action(rc).idle_timeout
    if seconds == 0 and nanos == 0:
        assert got is None  # 0 disables the idle timeout
    else:
        assert got is not None
        assert math.isclose(got, seconds + nanos / 1e9, rel_tol=1e-12)


@_SETTINGS
@given(st.integers(-(10**6), -1), st.integers(-999_999_999, 0))
def test_negative_durations_nack(seconds: int, nanos: int) -> None:
    rc = route_config()
    t = first_route(rc).route.timeout
    t.seconds, t.nanos = seconds, nanos
    try:
        parse_route_configuration(rc)
    except ResourceInvalid as exc:
        assert exc.field == "virtual_hosts[0].routes[0].route.timeout"
    else:
        raise AssertionError("negative duration accepted")


@_SETTINGS
@given(st.integers(0, 2**32 - 1), st.sampled_from([(0, 100), (1, 10_000), (2, 1_000_000)]))
def test_fraction_and_drop_ppm(numerator: int, denom: tuple[int, int]) -> None:
    enum, value = denom
    rc = route_config()
    f = first_route(rc).match.runtime_fraction.default_value
    f.numerator, f.denominator = numerator, enum
    got = parse_route_configuration(rc).virtual_hosts[0].routes[0].match.runtime_fraction
    assert got == FractionalPercent(numerator, value)
    assert 0.0 <= got.as_fraction() <= 1.0
    m = cla("c")
    d = m.policy.drop_overloads.add(category="x")
    d.drop_percentage.numerator, d.drop_percentage.denominator = numerator, enum
    ppm = parse_cluster_load_assignment(m).drop_overloads[0].parts_per_million
    assert ppm == min(numerator * 1_000_000 // value, 1_000_000)


@_SETTINGS
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5))
def test_weighted_cluster_totals(weights: list[int]) -> None:
    rc = route_config()
    a = first_route(rc).route
    for i, w in enumerate(weights):
        a.weighted_clusters.clusters.add(name=f"c{i}").weight.value = w
    total = sum(weights)
    try:
        got = _action(rc)
    except ResourceInvalid as exc:
        assert total == 0 or total > 2**32 - 1
        assert exc.field.endswith("weighted_clusters.clusters")
    else:
        assert 0 < total <= 2**32 - 1
        assert got.total_weight == total
        assert [c.weight for c in got.weighted_clusters] == weights


_TOKENS = st.sampled_from(["5xx", "reset", "gateway-error", "unavailable", "retriable-4xx"])


@_SETTINGS
@given(st.lists(st.tuples(_TOKENS, st.sampled_from(["", " ", "  "])), max_size=6))
def test_retry_on_tokens(parts: list[tuple[str, str]]) -> None:
    rc = route_config()
    rp = first_route(rc).route.retry_policy
    rp.retry_on = ",".join(f"{pad}{tok}{pad}" for tok, pad in parts)
    got = _action(rc).retry_policy
    assert got is not None and got.retry_on == frozenset(tok for tok, _ in parts)
