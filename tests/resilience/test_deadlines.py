"""effective_deadline (Envoy route timeout, gRFC A31 table), per-try deadlines."""

from __future__ import annotations

import pytest

from pymesh.resilience import effective_deadline, parse_grpc_timeout, per_try_deadline

NOW = 500.0


# gRFC A31's table: application deadline, grpc_timeout_header_max, max_stream_duration.
@pytest.mark.parametrize(
    ("app", "header_max", "msd", "expected"),
    [
        (None, None, None, None),
        (None, None, 0.0, None),
        (None, None, 10.0, 10.0),
        (None, 0.0, 30.0, None),
        (None, 10.0, 30.0, 10.0),
        (20.0, None, None, 20.0),
        (20.0, None, 0.0, 20.0),
        (20.0, None, 10.0, 10.0),
        (20.0, 0.0, 5.0, 20.0),
        (20.0, 10.0, 5.0, 10.0),
    ],
)
def test_grpc_a31_table(
    app: float | None, header_max: float | None, msd: float | None, expected: float | None
) -> None:
    got = effective_deadline(
        NOW, None, app, max_stream_duration=msd, grpc_timeout_header_max=header_max
    )
    assert got == (None if expected is None else NOW + expected)


@pytest.mark.parametrize(
    ("route", "caller", "expected"),
    [
        (15.0, None, 15.0),
        (15.0, 3.0, 3.0),
        (2.0, 30.0, 2.0),
        (None, None, None),
        (None, 7.0, 7.0),
        (0.0, None, None),
    ],
)
def test_http_route_timeout_never_extends_caller(
    route: float | None, caller: float | None, expected: float | None
) -> None:
    got = effective_deadline(NOW, route, caller)
    assert got == (None if expected is None else NOW + expected)


def test_http_max_stream_duration_also_bounds() -> None:
    assert effective_deadline(NOW, 15.0, None, max_stream_duration=4.0) == NOW + 4.0


def test_grpc_timeout_header_is_a_caller_limit() -> None:
    assert effective_deadline(NOW, None, None, grpc_timeout_header=2.0) == NOW + 2.0
    assert (
        effective_deadline(NOW, None, None, grpc_timeout_header=20.0, grpc_timeout_header_max=5.0)
        == NOW + 5.0
    )
    assert effective_deadline(NOW, None, 1.0, grpc_timeout_header=20.0) == NOW + 1.0


def test_negative_caller_timeout_is_already_expired() -> None:
    assert effective_deadline(NOW, 15.0, -1.0) == NOW


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1S", 1.0),
        ("100m", 0.1),
        ("2M", 120.0),
        ("1H", 3600.0),
        ("250u", 0.00025),
        ("99999999n", 0.099999999),
        ("123456789S", None),
        ("10", None),
        ("S", None),
        ("1.5S", None),
        ("-1S", None),
    ],
)
def test_parse_grpc_timeout(value: str, seconds: float | None) -> None:
    got = parse_grpc_timeout(value)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds)


def test_per_try_deadline() -> None:
    assert per_try_deadline(NOW, NOW + 10, 2.0) == NOW + 2.0
    assert per_try_deadline(NOW, NOW + 1, 2.0) == NOW + 1
    assert per_try_deadline(NOW, None, 2.0) == NOW + 2.0
    assert per_try_deadline(NOW, NOW + 10, None) == NOW + 10
    assert per_try_deadline(NOW, None, None) is None
    assert per_try_deadline(NOW, NOW + 10, 0.0) == NOW + 10
