"""OutlierDetector: consecutive detectors, ejection time, caps, sweeps (injected clock)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pymesh.resilience import Outcome, OutlierDetector
from pymesh.xds.resources.cluster import OutlierDetection

OK = Outcome.response(200)
E500 = Outcome.response(500)
E502 = Outcome.response(502)
CONNECT = Outcome.failure(connect_failure=True)
TIMEOUT = Outcome.failure(timeout=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(
        self, config: OutlierDetection, hosts: list[str], *, always_eject_one_host: bool = False
    ) -> None:
        self.clock = Clock()
        self.changes: list[frozenset[str]] = []
        self.det = OutlierDetector(
            config,
            on_change=self.changes.append,
            clock=self.clock,
            rng=random.Random(42),
            always_eject_one_host=always_eject_one_host,
        )
        self.det.set_hosts(hosts)

    def feed(self, address: str, outcome: Outcome, n: int) -> None:
        for _ in range(n):
            self.det.record(address, outcome)

    def sweep_at(self, t: float) -> None:
        self.clock.now = 1000.0 + t
        self.det.sweep()


HOSTS = [f"10.0.0.{i}:80" for i in range(1, 11)]  # 10 hosts
ALLOW_ALL = OutlierDetection(max_ejection_percent=100)


def test_five_consecutive_5xx_eject() -> None:
    h = Harness(ALLOW_ALL, HOSTS)
    h.feed(HOSTS[0], E500, 4)
    assert h.det.ejected == frozenset()
    h.feed(HOSTS[0], E500, 1)
    assert h.det.ejected == {HOSTS[0]}
    assert h.changes == [frozenset({HOSTS[0]})]
    assert h.det.stats["ejections_enforced_consecutive_5xx"] == 1
    assert h.det.num_ejections(HOSTS[0]) == 1


def test_success_resets_consecutive_count() -> None:
    h = Harness(ALLOW_ALL, HOSTS)
    h.feed(HOSTS[0], E500, 4)
    h.feed(HOSTS[0], OK, 1)
    h.feed(HOSTS[0], E500, 4)
    assert h.det.ejected == frozenset()
    h.feed(HOSTS[0], E500, 1)
    assert h.det.ejected == {HOSTS[0]}


def test_other_hosts_do_not_interfere() -> None:
    h = Harness(ALLOW_ALL, HOSTS)
    for _ in range(4):
        h.det.record(HOSTS[0], E500)
        h.det.record(HOSTS[1], E500)
    assert h.det.ejected == frozenset()


def test_grpc_unavailable_counts_as_5xx() -> None:
    h = Harness(ALLOW_ALL, HOSTS)
    h.feed(HOSTS[0], Outcome.response(200, grpc_status=14), 5)
    assert h.det.ejected == {HOSTS[0]}
    h2 = Harness(ALLOW_ALL, HOSTS)
    h2.feed(HOSTS[0], Outcome.response(200, grpc_status=5), 10)  # NOT_FOUND → 404
    assert h2.det.ejected == frozenset()


def test_local_origin_failures_fold_into_5xx_without_split() -> None:
    h = Harness(ALLOW_ALL, HOSTS)
    h.feed(HOSTS[0], CONNECT, 3)
    h.feed(HOSTS[0], TIMEOUT, 2)
    assert h.det.ejected == {HOSTS[0]}
    assert h.det.stats["ejections_enforced_consecutive_5xx"] == 1


def test_gateway_failure_detector() -> None:
    cfg = replace(ALLOW_ALL, consecutive_5xx=100, enforcing_consecutive_gateway_failure=100)
    h = Harness(cfg, HOSTS)
    h.feed(HOSTS[0], E502, 4)
    h.feed(HOSTS[0], E500, 1)  # a non-gateway 5xx resets the gateway count
    h.feed(HOSTS[0], E502, 4)
    assert h.det.ejected == frozenset()
    h.feed(HOSTS[0], E502, 1)
    assert h.det.ejected == {HOSTS[0]}
    assert h.det.stats["ejections_enforced_consecutive_gateway_failure"] == 1


def test_gateway_failure_detected_but_not_enforced_by_default() -> None:
    cfg = replace(ALLOW_ALL, consecutive_5xx=100)  # enforcing_consecutive_gateway_failure=0
    h = Harness(cfg, HOSTS)
    h.feed(HOSTS[0], E502, 10)
    assert h.det.ejected == frozenset()
    # Detected twice: the counter restarts after each detection.
    assert h.det.stats["ejections_detected_consecutive_gateway_failure"] == 2
    assert h.det.stats["ejections_enforced_total"] == 0


def test_split_local_origin_errors() -> None:
    cfg = replace(ALLOW_ALL, split_external_local_origin_errors=True)
    h = Harness(cfg, HOSTS)
    # With the split, local failures are not 5xx: 4 x 500 then 4 connect failures eject
    # nobody; the fifth consecutive connect failure ejects as a local-origin failure.
    h.feed(HOSTS[0], E500, 4)
    h.feed(HOSTS[0], CONNECT, 4)
    assert h.det.ejected == frozenset()
    h.feed(HOSTS[0], CONNECT, 1)
    assert h.det.ejected == {HOSTS[0]}
    assert h.det.stats["ejections_enforced_consecutive_local_origin_failure"] == 1
    assert h.det.stats["ejections_enforced_consecutive_5xx"] == 0
    # Any response (even a 500) is a local-origin success and resets the local count.
    h.feed(HOSTS[1], CONNECT, 4)
    h.feed(HOSTS[1], E500, 1)
    h.feed(HOSTS[1], CONNECT, 4)
    assert HOSTS[1] not in h.det.ejected


def test_ejection_time_multiplies_and_caps() -> None:
    cfg = replace(ALLOW_ALL, base_ejection_time=30.0, max_ejection_time=90.0, interval=10.0)
    h = Harness(cfg, HOSTS)
    a = HOSTS[0]
    durations = []
    t = 0.0
    for _ in range(5):
        h.clock.now = 1000.0 + t
        h.feed(a, E500, 5)
        assert a in h.det.ejected
        d = h.det.ejection_duration(a)
        assert d is not None
        durations.append(d)
        # Still out just before the time is up, back exactly when it is.
        h.sweep_at(t + d - 0.5)
        assert a in h.det.ejected
        h.sweep_at(t + d)
        assert a not in h.det.ejected
        t += d + 1.0  # re-fail one second later (before any decay)
    assert durations == [30.0, 60.0, 90.0, 90.0, 90.0]


def test_multiplier_decays_on_healthy_intervals() -> None:
    cfg = replace(ALLOW_ALL, base_ejection_time=30.0, max_ejection_time=300.0, interval=10.0)
    h = Harness(cfg, HOSTS)
    a = HOSTS[0]
    h.feed(a, E500, 5)  # t=0, 30 s
    h.sweep_at(30.0)
    h.clock.now = 1031.0
    h.feed(a, E500, 5)  # 60 s
    assert h.det.ejection_duration(a) == 60.0
    h.sweep_at(91.0)
    assert a not in h.det.ejected
    # Two healthy sweeps at least one interval after the return: multiplier 2 → 0.
    h.sweep_at(101.0)
    h.sweep_at(111.0)
    h.clock.now = 1112.0
    h.feed(a, E500, 5)
    assert h.det.ejection_duration(a) == 30.0


def test_ejection_jitter_bounds() -> None:
    cfg = replace(ALLOW_ALL, max_ejection_time_jitter=5.0)
    h = Harness(cfg, HOSTS)
    for host in HOSTS:
        h.feed(host, E500, 5)
    durations = [h.det.ejection_duration(host) for host in HOSTS]
    assert all(d is not None and 30.0 <= d <= 35.0 for d in durations)
    assert len(set(durations)) > 1  # jittered, not all equal


def test_max_ejection_percent_caps_ejections() -> None:
    cfg = OutlierDetection(max_ejection_percent=20)
    h = Harness(cfg, HOSTS)
    for host in HOSTS[:4]:
        h.feed(host, E500, 5)
    assert h.det.ejected == {HOSTS[0], HOSTS[1]}
    assert h.det.stats["ejections_overflow"] == 2


def test_max_ejection_percent_is_strict_by_default() -> None:
    # 1 of 3 hosts is 33% > 10%: Envoy 1.40 does not eject (always_eject_one_host off).
    three = HOSTS[:3]
    h = Harness(OutlierDetection(), three)
    h.feed(three[0], E500, 5)
    assert h.det.ejected == frozenset()
    assert h.det.stats["ejections_overflow"] == 1
    h1 = Harness(OutlierDetection(), three, always_eject_one_host=True)
    h1.feed(three[0], E500, 5)
    h1.feed(three[1], E500, 5)
    assert h1.det.ejected == {three[0]}


def test_enforcing_percentage_is_rolled() -> None:
    cfg = replace(ALLOW_ALL, enforcing_consecutive_5xx=50)
    hosts = [f"10.1.0.{i}:80" for i in range(200)]
    h = Harness(cfg, hosts)
    for host in hosts:
        h.feed(host, E500, 5)
    ejected = len(h.det.ejected)
    assert h.det.stats["ejections_detected_consecutive_5xx"] == 200
    assert 70 <= ejected <= 130  # ~ Binomial(200, 0.5), far beyond 4 sigma


def test_unejection_on_time_notifies() -> None:
    h = Harness(ALLOW_ALL, HOSTS)
    h.feed(HOSTS[0], E500, 5)
    h.sweep_at(10.0)
    h.sweep_at(20.0)
    assert h.det.ejected == {HOSTS[0]}
    h.sweep_at(30.0)
    assert h.det.ejected == frozenset()
    assert h.changes == [frozenset({HOSTS[0]}), frozenset()]
    # Counters were reset on return: four more failures do not eject.
    h.feed(HOSTS[0], E500, 4)
    assert h.det.ejected == frozenset()


def test_set_hosts_forgets_removed_hosts() -> None:
    h = Harness(ALLOW_ALL, HOSTS)
    h.feed(HOSTS[0], E500, 5)
    h.det.set_hosts(HOSTS[1:])
    assert h.det.ejected == frozenset()
    assert h.changes[-1] == frozenset()
    h.det.record(HOSTS[0], E500)  # unknown now: ignored
    assert h.det.num_ejections(HOSTS[0]) == 0
    h.det.set_hosts(HOSTS)  # comes back fresh
    h.feed(HOSTS[0], E500, 4)
    assert h.det.ejected == frozenset()


def test_set_hosts_keeps_the_ejected_set_through_other_hosts_changing() -> None:
    h = Harness(ALLOW_ALL, HOSTS)
    h.feed(HOSTS[0], E500, 5)
    assert h.changes == [frozenset({HOSTS[0]})]
    kept = [*HOSTS[:5], "10.0.0.99:80"]
    h.det.set_hosts(kept)  # five others leave, one joins
    h.det.set_hosts(frozenset(kept))  # the same hosts again: nothing to do
    assert h.det.ejected == {HOSTS[0]}
    assert h.changes == [frozenset({HOSTS[0]})]  # no notification for no change
    h.feed("10.0.0.99:80", E500, 5)  # the new host is tracked
    assert h.det.ejected == {HOSTS[0], "10.0.0.99:80"}
    h.feed(HOSTS[9], E500, 5)  # a host that left is not
    assert h.det.num_ejections(HOSTS[9]) == 0


SR = replace(ALLOW_ALL, consecutive_5xx=0)  # consecutive detector off (0 is never reached)


def _load(h: Harness, counts: dict[str, tuple[int, int]]) -> None:
    """counts: host -> (successful, failed) requests in the current interval."""
    for host, (ok, failed) in counts.items():
        h.feed(host, OK, ok)
        h.feed(host, E500, failed)


def test_success_rate_sweep_ejects_the_outlier() -> None:
    hosts = HOSTS[:5]
    h = Harness(SR, hosts)
    # Envoy's worked example: 100, 100, 100, 100, 50 → mean 90, stdev 20, threshold 52.
    _load(h, {hosts[0]: (100, 0), hosts[1]: (100, 0), hosts[2]: (100, 0), hosts[3]: (100, 0)})
    _load(h, {hosts[4]: (50, 50)})
    h.sweep_at(10.0)
    assert h.det.ejected == {hosts[4]}
    assert h.det.stats["ejections_enforced_success_rate"] == 1


def test_success_rate_spares_hosts_above_threshold() -> None:
    hosts = HOSTS[:5]
    h = Harness(SR, hosts)
    # 100, 100, 100, 80, 75: mean 91, stdev 11.1, threshold 69.8: nobody is ejected.
    _load(h, {host: (100, 0) for host in hosts[:3]})
    _load(h, {hosts[3]: (80, 20), hosts[4]: (75, 25)})
    h.sweep_at(10.0)
    assert h.det.ejected == frozenset()
    assert h.det.stats["ejections_detected_success_rate"] == 0


def test_success_rate_stdev_factor() -> None:
    hosts = HOSTS[:5]
    # 100 x 4 and 60: mean 92, stdev 16. Factor 1.9 → threshold 61.6 (ejected);
    # factor 3.0 → threshold 44 (kept).
    for factor, expected in ((1900, {hosts[4]}), (3000, set())):
        h = Harness(replace(SR, success_rate_stdev_factor=factor), hosts)
        _load(h, {host: (100, 0) for host in hosts[:4]})
        _load(h, {hosts[4]: (60, 40)})
        h.sweep_at(10.0)
        assert h.det.ejected == expected


def test_success_rate_needs_minimum_hosts_and_volume() -> None:
    hosts = HOSTS[:5]
    few = Harness(SR, hosts)
    _load(few, {host: (100, 0) for host in hosts[:3]})
    _load(few, {hosts[4]: (50, 50)})  # only 4 hosts with volume < minimum 5
    few.sweep_at(10.0)
    assert few.det.ejected == frozenset()
    low = Harness(SR, hosts)
    _load(low, {host: (99, 0) for host in hosts[:4]})
    _load(low, {hosts[4]: (49, 50)})  # 99 requests each < volume 100
    low.sweep_at(10.0)
    assert low.det.ejected == frozenset()


def test_success_rate_uses_the_last_interval_only() -> None:
    hosts = HOSTS[:5]
    h = Harness(SR, hosts)
    _load(h, {host: (100, 0) for host in hosts[:4]})
    h.sweep_at(10.0)  # closes an interval without the outlier's traffic
    _load(h, {hosts[4]: (50, 50)})
    h.sweep_at(20.0)  # hosts[4] alone has volume now: below minimum hosts
    assert h.det.ejected == frozenset()
    _load(h, {host: (100, 0) for host in hosts[:4]})
    _load(h, {hosts[4]: (50, 50)})
    h.sweep_at(30.0)
    assert h.det.ejected == {hosts[4]}
    assert h.det.stats["ejections_detected_success_rate"] == 1


def test_failure_percentage_sweep() -> None:
    cfg = replace(SR, enforcing_success_rate=0, enforcing_failure_percentage=100)
    hosts = HOSTS[:5]
    h = Harness(cfg, hosts)
    _load(h, {hosts[0]: (5, 45)})  # 90 % failures ≥ 85 %: ejected
    _load(h, {hosts[1]: (10, 40)})  # 80 %: kept
    _load(h, {host: (50, 0) for host in hosts[2:]})
    h.sweep_at(10.0)
    assert h.det.ejected == {hosts[0]}
    assert h.det.stats["ejections_enforced_failure_percentage"] == 1


def test_failure_percentage_needs_volume() -> None:
    cfg = replace(SR, enforcing_success_rate=0, enforcing_failure_percentage=100)
    hosts = HOSTS[:5]
    h = Harness(cfg, hosts)
    _load(h, {hosts[0]: (4, 45)})  # 49 requests < volume 50
    _load(h, {host: (50, 0) for host in hosts[1:]})
    h.sweep_at(10.0)
    assert h.det.ejected == frozenset()


def test_local_origin_failure_percentage_with_split() -> None:
    cfg = replace(
        SR,
        split_external_local_origin_errors=True,
        consecutive_local_origin_failure=0,
        enforcing_success_rate=0,
        enforcing_failure_percentage_local_origin=100,
    )
    hosts = HOSTS[:5]
    h = Harness(cfg, hosts)
    for i in range(50):
        h.det.record(hosts[0], CONNECT if i % 10 else OK)  # 90 % local failures
    for host in hosts[1:]:
        h.feed(host, OK, 50)
    h.sweep_at(10.0)
    assert h.det.ejected == {hosts[0]}
    assert h.det.stats["ejections_enforced_failure_percentage_local_origin"] == 1


def test_interval_property() -> None:
    h = Harness(replace(ALLOW_ALL, interval=2.5), HOSTS)
    assert h.det.interval == 2.5


@pytest.mark.parametrize("n", [1, 2])
def test_already_ejected_host_is_not_ejected_twice(n: int) -> None:
    h = Harness(ALLOW_ALL, HOSTS)
    h.feed(HOSTS[0], E500, 5 * n)
    assert h.det.num_ejections(HOSTS[0]) == 1
    assert h.changes == [frozenset({HOSTS[0]})]
