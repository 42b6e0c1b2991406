"""``pymesh demo``: one command, real sockets, and numbers that mean what they say."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

import pymesh._demo
from pymesh._demo import run_demo
from pymesh._demo_config import load_demo_config
from pymesh._demo_traffic import percentile
from pymesh.server import ROUTE_TYPE

_PHASE = re.compile(r"^\[(\d+)/(\d+)\] (.+?) — ")
_VERSIONS = re.compile(r"v1 (\d+) \([\d.]+%\) · v2 (\d+) \([\d.]+%\) · v3 (\d+) \([\d.]+%\)")
_FAILURES = re.compile(r"users saw (\d+) errors · backends answered (\d+) × 5xx · retries (\d+)")
_OUTLIER = re.compile(r"(\d+) attempts reached it · (\d+) while ejected")
_EJECTED = re.compile(r"ejected (\d+)×")
_LATENCY = re.compile(r"p50 ([\d.]+) ms · p99 ([\d.]+) ms")
_XDS = re.compile(r"xDS +version (\S+) applied \(LDS (\S+) · RDS (\S+) · CDS (\S+) · EDS (\S+),")


@dataclass
class Phase:
    name: str
    xds: tuple[str, ...] = ()
    traffic: tuple[int, int, int] = (0, 0, 0)
    user: tuple[int, int, int] = (0, 0, 0)
    user_errors: int = -1
    backend_5xx: int = -1
    retries: int = -1
    flaky_attempts: int = -1
    while_ejected: int = -1
    ejections: int = 0
    p50: float = -1.0
    p99: float = -1.0
    lines: list[str] = field(default_factory=list)

    def share(self, i: int) -> float:
        return 100.0 * self.traffic[i] / sum(self.traffic)


def _parse(out: str) -> dict[str, Phase]:
    phases: dict[str, Phase] = {}
    current: Phase | None = None
    for line in out.splitlines():
        if m := _PHASE.match(line):
            current = phases[m.group(3)] = Phase(m.group(3))
            continue
        if current is None:
            continue
        current.lines.append(line)
        text = line.strip()
        if m := _XDS.search(text):
            current.xds = m.groups()
        elif text.startswith("traffic") and (m := _VERSIONS.search(text)):
            current.traffic = (int(m[1]), int(m[2]), int(m[3]))
        elif text.startswith("test user") and (m := _VERSIONS.search(text)):
            current.user = (int(m[1]), int(m[2]), int(m[3]))
        elif m := _FAILURES.search(text):
            current.user_errors, current.backend_5xx, current.retries = map(int, m.groups())
        elif text.startswith("outlier") and (m := _OUTLIER.search(text)):
            current.flaky_attempts, current.while_ejected = int(m[1]), int(m[2])
            e = _EJECTED.search(text)
            current.ejections = int(e[1]) if e else 0
        elif m := _LATENCY.search(text):
            current.p50, current.p99 = float(m[1]), float(m[2])
    return phases


@pytest.fixture(scope="module")
def demo_run() -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYMESH_DEMO_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "pymesh", "demo", "--plain"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def phases(demo_run: subprocess.CompletedProcess[str]) -> dict[str, Phase]:
    return _parse(demo_run.stdout)


def test_demo_exits_zero_without_tracebacks(demo_run: subprocess.CompletedProcess[str]) -> None:
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr
    assert "Traceback" not in demo_run.stderr + demo_run.stdout
    assert "0 NACKs" in demo_run.stdout
    assert "Next:" in demo_run.stdout.strip().splitlines()[-1]


def test_every_phase_ran_with_its_own_acked_xds_version(phases: dict[str, Phase]) -> None:
    assert list(phases) == [
        "canary 90/10",
        "retries",
        "outlier ejection",
        "canary 50/50",
        "header routing",
        "cut-over to v2",
    ]
    for i, p in enumerate(phases.values(), start=1):
        snapshot, *types = p.xds  # the snapshot's version, then LDS, RDS, CDS, EDS
        assert snapshot == str(i), p.lines
        # The control plane resends only the types a phase changed (per-type versions):
        # each type is at this phase or an earlier one, and something is at this one.
        assert all(1 <= int(v) <= i for v in types), p.lines
        assert str(i) in types, p.lines
        if i == 1:
            assert types == ["1"] * 4, p.lines
        assert sum(p.traffic) > 50, p.lines
        assert 0 < p.p50 <= p.p99, p.lines


def test_canary_split_then_shift_then_cut_over(phases: dict[str, Phase]) -> None:
    canary = phases["canary 90/10"]
    assert 3 <= canary.share(1) <= 20, canary.lines
    assert canary.traffic[2] == 0
    half = phases["canary 50/50"]
    assert 30 <= half.share(1) <= 70, half.lines
    cut = phases["cut-over to v2"]
    assert cut.traffic[0] == cut.traffic[2] == 0 and cut.traffic[1] > 0, cut.lines
    assert cut.user[0] == cut.user[2] == 0


def test_retries_hide_the_flaky_instance(phases: dict[str, Phase]) -> None:
    before = phases["canary 90/10"]
    # Without retries users see the flaky instance's 503s one for one.
    assert before.user_errors > 0 and before.retries == 0, before.lines
    assert before.user_errors == before.backend_5xx
    after = phases["retries"]
    assert after.backend_5xx > 0, after.lines
    assert after.user_errors == 0, after.lines
    assert after.retries >= after.backend_5xx, after.lines


def test_outlier_detection_ejects_the_flaky_instance(phases: dict[str, Phase]) -> None:
    p = phases["outlier ejection"]
    assert p.ejections >= 1, p.lines
    assert p.while_ejected == 0, p.lines
    assert p.user_errors == 0
    # Ejected within the phase: far fewer 5xx than the retries phase saw.
    assert p.backend_5xx < phases["retries"].backend_5xx / 2, p.lines


def test_header_routing_sends_only_the_test_user_to_v3(phases: dict[str, Phase]) -> None:
    p = phases["header routing"]
    assert p.user[0] == p.user[1] == 0 and p.user[2] > 10, p.lines
    assert p.traffic[2] == 0, p.lines
    for name, other in phases.items():
        if name != "header routing":
            assert other.user[2] == 0 and other.traffic[2] == 0, other.lines


def test_a_broken_demo_file_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pymesh._demo, "load_demo_config", lambda: load_demo_config("demo: {}"))
    assert run_demo(forever=False, plain=True, seed=1) == 1
    err = capsys.readouterr().err
    assert "pymesh demo: failed while loading pymesh/demo_mesh.yaml" in err
    assert "malformed demo section" in err
    assert "Traceback" not in err


def test_every_phase_compiles_and_retries_skip_the_failed_host() -> None:
    cfg = load_demo_config()
    addresses = {b.name: f"127.0.0.1:{20000 + i}" for i, b in enumerate(cfg.backends)}
    for n, phase in enumerate(cfg.phases, start=1):
        snap = cfg.snapshot(phase, addresses, version=str(n))
        assert snap.version == str(n)
        snap.consistent()
        for rc in snap.get(ROUTE_TYPE).values():
            for vh in rc.virtual_hosts:
                for r in vh.routes:
                    rp = r.route.retry_policy
                    if r.route.HasField("retry_policy"):
                        names = [p.name for p in rp.retry_host_predicate]
                        assert names == ["envoy.retry_host_predicates.previous_hosts"]


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) == 0.0
