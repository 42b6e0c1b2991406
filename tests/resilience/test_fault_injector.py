"""FaultInjector: percentages, header control, matchers, max_active_faults, overrides."""

from __future__ import annotations

import math
import random

import pytest

from pymesh.resilience import NO_FAULT, FaultDecision, FaultInjector
from pymesh.xds.resources.fault import FaultAbort, FaultConfig, FaultDelay
from pymesh.xds.resources.matchers import FractionalPercent, HeaderMatcher, StringMatcher

N = 20_000


def within_binomial(hits: int, n: int, p: float) -> bool:
    """|hits - np| within 5 standard deviations (deterministic inputs; never flaky)."""
    sigma = math.sqrt(n * p * (1 - p))
    return abs(hits - n * p) <= 5 * sigma + 1


def values(seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(64) for _ in range(N)]


@pytest.mark.parametrize(
    ("numerator", "denominator"), [(10, 100), (50, 100), (25, 10_000), (1234, 1_000_000)]
)
def test_abort_percentage(numerator: int, denominator: int) -> None:
    fi = FaultInjector(
        FaultConfig(abort=FaultAbort(FractionalPercent(numerator, denominator), http_status=503))
    )
    decisions = [fi.decide({}, v) for v in values(numerator)]
    hits = sum(d.abort_http == 503 for d in decisions)
    assert within_binomial(hits, N, numerator / denominator)
    assert all(d == NO_FAULT or d == FaultDecision(abort_http=503) for d in decisions)


def test_percent_rule_is_modulo_denominator() -> None:
    fi = FaultInjector(FaultConfig(delay=FaultDelay(FractionalPercent(30, 100), fixed_delay=0.5)))
    assert fi.decide({}, 29).delay == 0.5
    assert fi.decide({}, 129).delay == 0.5
    assert fi.decide({}, 30).delay is None
    assert fi.decide({}, 199).delay is None


def test_delay_and_abort_are_rolled_independently() -> None:
    fi = FaultInjector(
        FaultConfig(
            delay=FaultDelay(FractionalPercent(50), fixed_delay=0.1),
            abort=FaultAbort(FractionalPercent(50), http_status=500),
        )
    )
    decisions = [fi.decide({}, v) for v in values(7)]
    both = sum(d.delay is not None and d.abort_http is not None for d in decisions)
    delayed = sum(d.delay is not None for d in decisions)
    aborted = sum(d.abort_http is not None for d in decisions)
    assert within_binomial(delayed, N, 0.5)
    assert within_binomial(aborted, N, 0.5)
    assert within_binomial(both, N, 0.25)  # independent, not the same roll
    # An explicit abort roll is honoured.
    assert fi.decide({}, 10, abort_random_value=99).abort_http is None
    assert fi.decide({}, 10, abort_random_value=3).abort_http == 500


def test_full_and_zero_percent() -> None:
    always = FaultInjector(FaultConfig(abort=FaultAbort(FractionalPercent(100), grpc_status=14)))
    never = FaultInjector(FaultConfig(abort=FaultAbort(FractionalPercent(0), grpc_status=14)))
    vs = values(3)[:500]
    assert all(always.decide({}, v) == FaultDecision(abort_grpc=14) for v in vs)
    assert all(never.decide({}, v) == NO_FAULT for v in vs)


HEADER_DELAY = FaultConfig(delay=FaultDelay(FractionalPercent(100), header_delay=True))
HEADER_ABORT = FaultConfig(abort=FaultAbort(FractionalPercent(100), header_abort=True))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-envoy-fault-delay-request": "250"}, 0.25),
        ({"x-envoy-fault-delay-request": "0"}, None),
        ({"x-envoy-fault-delay-request": "abc"}, None),
        ({"x-envoy-fault-delay-request": "-5"}, None),
        ({}, None),
    ],
)
def test_header_controlled_delay(headers: dict[str, str], expected: float | None) -> None:
    assert FaultInjector(HEADER_DELAY).decide(headers, 0).delay == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-envoy-fault-abort-request": "503"}, FaultDecision(abort_http=503)),
        ({"x-envoy-fault-abort-request": "200"}, FaultDecision(abort_http=200)),
        ({"x-envoy-fault-abort-request": "600"}, NO_FAULT),
        ({"x-envoy-fault-abort-request": "199"}, NO_FAULT),
        ({"x-envoy-fault-abort-grpc-request": "14"}, FaultDecision(abort_grpc=14)),
        ({"x-envoy-fault-abort-grpc-request": "0"}, FaultDecision(abort_grpc=0)),
        (
            {"x-envoy-fault-abort-request": "429", "x-envoy-fault-abort-grpc-request": "8"},
            FaultDecision(abort_http=429),
        ),
        ({"x-envoy-fault-abort-request": "x"}, NO_FAULT),
        ({}, NO_FAULT),
    ],
)
def test_header_controlled_abort(headers: dict[str, str], expected: FaultDecision) -> None:
    assert FaultInjector(HEADER_ABORT).decide(headers, 0) == expected


def test_header_percentage_is_capped_by_config() -> None:
    cfg = FaultConfig(abort=FaultAbort(FractionalPercent(40), header_abort=True))
    fi = FaultInjector(cfg)
    vs = values(11)
    base = {"x-envoy-fault-abort-request": "503"}
    lower = sum(
        fi.decide(
            {**base, "x-envoy-fault-abort-request-percentage": "10"}, 0, abort_random_value=v
        ).abort_http
        == 503
        for v in vs
    )
    capped = sum(
        fi.decide(
            {**base, "x-envoy-fault-abort-request-percentage": "90"}, 0, abort_random_value=v
        ).abort_http
        == 503
        for v in vs
    )
    default = sum(fi.decide(base, 0, abort_random_value=v).abort_http == 503 for v in vs)
    assert within_binomial(lower, N, 0.10)
    assert within_binomial(capped, N, 0.40)
    assert within_binomial(default, N, 0.40)


def test_delay_percentage_header() -> None:
    fi = FaultInjector(FaultConfig(delay=FaultDelay(FractionalPercent(100), header_delay=True)))
    headers = {"x-envoy-fault-delay-request": "10", "x-envoy-fault-delay-request-percentage": "25"}
    hits = sum(fi.decide(headers, v).delay == 0.01 for v in values(5))
    assert within_binomial(hits, N, 0.25)


def test_percentage_headers_do_not_affect_fixed_faults() -> None:
    fi = FaultInjector(FaultConfig(abort=FaultAbort(FractionalPercent(100), http_status=503)))
    headers = {"x-envoy-fault-abort-request-percentage": "0", "x-envoy-fault-abort-request": "400"}
    assert fi.decide(headers, 12345) == FaultDecision(abort_http=503)


def test_header_matchers_gate_the_fault() -> None:
    only_canary = HeaderMatcher("x-canary", string_match=StringMatcher.make("exact", "true"))
    fi = FaultInjector(
        FaultConfig(
            abort=FaultAbort(FractionalPercent(100), http_status=503), headers=(only_canary,)
        )
    )
    assert fi.decide({"x-canary": "true"}, 0).abort_http == 503
    assert fi.decide({"x-canary": "false"}, 0) == NO_FAULT
    assert fi.decide({}, 0) == NO_FAULT


def test_upstream_cluster_gate() -> None:
    fi = FaultInjector(
        FaultConfig(abort=FaultAbort(FractionalPercent(100), http_status=503), upstream_cluster="a")
    )
    assert fi.decide({}, 0, cluster="a").abort_http == 503
    assert fi.decide({}, 0, cluster="b") == NO_FAULT


def test_max_active_faults() -> None:
    fi = FaultInjector(
        FaultConfig(delay=FaultDelay(FractionalPercent(100), fixed_delay=1.0), max_active_faults=2)
    )
    first = fi.decide({}, 0)
    assert first.is_fault
    fi.enter()
    assert fi.decide({}, 0).is_fault
    fi.enter()
    assert fi.decide({}, 0) == NO_FAULT
    assert fi.decide({}, 0) == NO_FAULT
    assert fi.overflow == 2
    fi.exit()
    assert fi.decide({}, 0).delay == 1.0
    assert fi.active == 1
    # Requests that would not be faulted anyway never count as overflow.
    no_match = FaultInjector(
        FaultConfig(delay=FaultDelay(FractionalPercent(0), fixed_delay=1.0), max_active_faults=0)
    )
    assert no_match.decide({}, 0) == NO_FAULT
    assert no_match.overflow == 0
