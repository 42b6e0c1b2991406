"""Client-side weighted round robin's parts (gRFC A58): the weight formula, blackout and
expiration, the static stride scheduler, the chooser's fallbacks, and the report forms."""

from __future__ import annotations

import base64
import collections
import itertools
import random

import pytest
from xds.data.orca.v3 import orca_load_report_pb2

from pymesh.lb import EndpointStates
from pymesh.lb._wrr import ClientSideWrr, EndpointWeight, StaticStride, weight_from_report
from pymesh.xds.resources.cluster import WrrConfig
from pymesh.xds.resources.endpoint import Endpoint
from pymesh.xds.resources.orca import (
    REPORT_SERIALIZED,
    REPORT_TEXT,
    LoadReport,
    parse_header,
    parse_serialized,
)


def test_weight_formula_prefers_application_utilization() -> None:
    cfg = WrrConfig()
    assert weight_from_report(LoadReport(cpu_utilization=0.5, qps=100), cfg) == 200
    # application_utilization wins over cpu_utilization (A58).
    r = LoadReport(cpu_utilization=0.5, application_utilization=0.25, qps=100)
    assert weight_from_report(r, cfg) == 400
    # eps / qps * penalty is added to the utilization.
    r = LoadReport(cpu_utilization=0.5, qps=100, eps=50)
    assert weight_from_report(r, WrrConfig(error_utilization_penalty=2.0)) == pytest.approx(
        100 / (0.5 + 1.0)
    )
    # No qps, or no utilization at all: no weight.
    assert weight_from_report(LoadReport(cpu_utilization=0.5), cfg) == 0
    assert weight_from_report(LoadReport(qps=10), cfg) == 0
    # metric_names_for_computing_utilization: the largest, before cpu_utilization.
    cfg = WrrConfig(metric_names_for_computing_utilization=("named_metrics.*", "utilization.x"))
    r = LoadReport(cpu_utilization=0.1, qps=10, named_metrics={"a": 0.2, "b": 0.5})
    assert weight_from_report(r, cfg) == pytest.approx(20)


def test_blackout_and_expiration() -> None:
    w = EndpointWeight(WrrConfig(blackout_period=10, weight_expiration_period=180))
    report = LoadReport(cpu_utilization=0.5, qps=100)
    assert w.current(0) == 0  # never reported
    w.on_report(report, now=100)
    assert w.current(105) == 0  # blacked out for 10 s after the first report
    w.on_report(report, now=109)
    assert w.current(110) == 200
    assert w.current(288.9) == 200
    assert w.current(289) == 0  # 180 s without a report: expired
    w.on_report(report, now=300)
    assert w.current(305) == 0  # a new run of reports starts a new blackout
    assert w.current(310) == 200
    w.on_report(LoadReport(qps=100), now=311)  # no utilization: ignored
    assert w.value == 200
    w.on_report(None, now=312)  # did not parse: ignored
    assert w.current(312) == 200


def test_static_stride_is_proportional_and_caps_ratios() -> None:
    sched = StaticStride([1.0, 2.0, 4.0], itertools.count())
    counts = collections.Counter(sched.pick() for _ in range(7000))
    assert [counts[i] / 7000 for i in range(3)] == pytest.approx([1 / 7, 2 / 7, 4 / 7], abs=0.01)
    # An endpoint without a weight gets the mean; ratios above 10x the mean are capped.
    sched = StaticStride([0.0, 3.0, 1.0], itertools.count())
    assert sched.weights[0] == round(sched.weights[1] * 2 / 3)
    sched = StaticStride([1000.0, 1.0, 1.0], itertools.count())
    assert sched.weights[0] == 0xFFFF
    assert sched.weights[0] / sched.weights[1] < 1000


def _hosts(n: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint("127.0.0.1", 8000 + i) for i in range(n))


def test_chooser_round_robin_until_two_weights_then_weighted() -> None:
    now = [0.0]
    cfg = WrrConfig(blackout_period=0, weight_update_period=1.0)
    hosts = _hosts(3)
    states = EndpointStates()
    per_host = tuple(states.get_or_create(h.address) for h in hosts)
    wrr = ClientSideWrr(hosts, per_host, cfg, random.Random(1), clock=lambda: now[0])
    counts = collections.Counter(wrr.choose() for _ in range(300))
    assert set(counts.values()) == {100}  # no weights: round robin
    per_host[0].orca.on_report(LoadReport(cpu_utilization=0.25, qps=100), now=0.0)
    per_host[1].orca.on_report(LoadReport(cpu_utilization=1.0, qps=100), now=0.0)
    counts = collections.Counter(wrr.choose() for _ in range(300))
    assert set(counts.values()) == {100}  # the weights wait for the next update period
    now[0] = 1.0
    counts = collections.Counter(wrr.choose() for _ in range(6000))
    # 400 and 100; the third endpoint gets their mean, 250: shares 8/15, 2/15, 5/15.
    assert counts[hosts[0]] / 6000 == pytest.approx(8 / 15, abs=0.02)
    assert counts[hosts[1]] / 6000 == pytest.approx(2 / 15, abs=0.02)
    # The weights live in the endpoint state: a rebuilt chooser keeps them.
    again = ClientSideWrr(hosts, per_host, cfg, random.Random(2), clock=lambda: now[0])
    assert again.scheduler_weights()[:2] == (400.0, 100.0)


def test_report_forms() -> None:
    msg = orca_load_report_pb2.OrcaLoadReport(cpu_utilization=0.5, rps_fractional=10, eps=1)
    msg.named_metrics["q"] = 2.0
    data = msg.SerializeToString()
    want = LoadReport(cpu_utilization=0.5, qps=10, eps=1, named_metrics={"q": 2.0})
    assert parse_serialized(data) == want
    b64 = base64.b64encode(data).decode()
    assert parse_header(b64, binary=True) == want
    assert parse_header(f"BIN {b64}".encode()) == want
    assert (
        parse_header("TEXT cpu_utilization:0.5, rps_fractional:10, eps:1, named_metrics.q:2")
        == want
    )
    js = '{"cpuUtilization": 0.5, "rpsFractional": 10, "eps": 1, "namedMetrics": {"q": 2}}'
    assert parse_header("JSON " + js) == want
    # Bad reports are ignored, never an error (Envoy rejects these too).
    for bad in (
        "XML <a/>",
        "TEXT cpu_utilization:0.5, cpu_utilization:0.6",
        "TEXT bogus:1",
        "TEXT cpu_utilization:nan",
        "JSON {",
        "BIN !!!",
    ):
        assert parse_header(bad) is None, bad
    assert parse_serialized(b"\xff\xff") is None


def test_raw_reports_are_parsed_once_per_value() -> None:
    w = EndpointWeight(WrrConfig(blackout_period=0))
    text = "TEXT application_utilization:0.5, rps_fractional:100"
    w.on_raw_report(text, REPORT_TEXT)
    assert w.current(w.last_update) == 200
    w.on_raw_report(text, REPORT_TEXT)  # the same value: the memo, same weight
    assert w.value == 200
    w.on_raw_report("TEXT application_utilization:0.25, rps_fractional:100", REPORT_TEXT)
    assert w.value == 400
    msg = orca_load_report_pb2.OrcaLoadReport(cpu_utilization=0.5, rps_fractional=10)
    w.on_raw_report(msg.SerializeToString(), REPORT_SERIALIZED)
    assert w.value == 20
    w.on_raw_report("TEXT nonsense", REPORT_TEXT)  # ignored
    assert w.value == 20
