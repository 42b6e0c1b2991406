"""``pymesh demo``: a control plane, real backends and live traffic, in one command.

Everything runs on 127.0.0.1 with OS-assigned ports: the embedded xDS control plane
serves the bundled ``demo_mesh.yaml``; one EchoBackend per version instance answers
with its name; worker threads send paced requests through ``pymesh.MeshTransport``.
Each phase pushes a new snapshot to the running client and reports what the traffic did,
counted from the client's responses and the backends' own request logs.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx

from pymesh._demo_config import DemoConfig, PhaseSpec, load_demo_config
from pymesh._demo_traffic import PhaseStats, Traffic, backend_attempts, percentile
from pymesh._demo_view import DemoInfo, View, make_view, summary_lines
from pymesh._mesh import Mesh
from pymesh.server import ControlPlane
from pymesh.testing import EchoBackend, bootstrap_for, push_snapshot
from pymesh.transports import MeshTransport

__all__ = ["run_demo"]

NODE_ID = "pymesh-demo"
_PUSHING = -1  # the phase tag of requests sent while a new snapshot is being applied
_TICK = 0.1  # how often the driver samples ejections
_REFRESH = 0.25  # how often the live view recomputes the current phase
_KEEP_PHASES = 12  # phases kept for the summary with --forever
_GRACE = 0.02  # requests already on the wire when an ejection is first seen
_SHORT_TYPES = {
    "Listener": "LDS",
    "RouteConfiguration": "RDS",
    "Cluster": "CDS",
    "ClusterLoadAssignment": "EDS",
}


def run_demo(forever: bool = False, plain: bool = False, seed: int = 7) -> int:
    """Run the demo; 0 when it completed, 1 on failure, 130 when interrupted.

    ``forever`` cycles through the phases until Ctrl-C (then exits 0 after the summary);
    ``plain`` forces line output even on a terminal; ``seed`` fixes every random choice
    (the mesh's picks, the flaky backend's failures, the workers' start offsets). The
    phases are timed, so counts still vary a little run to run (docs/quickstart.md).
    """
    view = make_view(plain)
    demo = _Demo(view, seed)
    try:
        demo.run(forever)
        return 0
    except BrokenPipeError:
        # stdout went away (`pymesh demo | head`): stop quietly, as command-line tools do,
        # and keep Python from complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except KeyboardInterrupt:
        view.close()
        if forever and demo.stats:
            view.finish(demo.summary())
            return 0
        print("pymesh demo: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # never a bare traceback: say what failed and exit 1
        view.close()
        print(f"pymesh demo: failed while {demo.step}: {type(e).__name__}: {e}", file=sys.stderr)
        if os.environ.get("PYMESH_DEMO_DEBUG"):
            traceback.print_exc()
        else:
            print(
                "pymesh demo: everything runs on 127.0.0.1; check that loopback sockets work. "
                "PYMESH_DEMO_DEBUG=1 shows the traceback.",
                file=sys.stderr,
            )
        return 1


class _Demo:
    def __init__(self, view: View, seed: int) -> None:
        self.view = view
        self.seed = seed
        self.step = "loading pymesh/demo_mesh.yaml"
        self.stats: list[PhaseStats] = []
        self.cfg: DemoConfig | None = None
        self._backends: list[EchoBackend] = []
        self._flaky: dict[str, str] = {}  # flaky backend name → address
        self._eject_spans: dict[str, list[list[float]]] = {}  # name → [[start, end], ...]
        self._open: dict[str, bool] = {}  # name → ejected at the last sample
        self._cp: ControlPlane | None = None
        self._mesh: Mesh | None = None
        self._traffic: Traffic | None = None

    # -- the run -------------------------------------------------------------------

    def run(self, forever: bool) -> None:
        cfg = self.cfg = load_demo_config()
        with ExitStack() as stack:
            self.step = "starting the backends"
            for i, bspec in enumerate(cfg.backends):
                backend = EchoBackend(
                    bspec.name, fail_rate=bspec.fail_rate, delay=bspec.delay, seed=self.seed + i
                )
                stack.enter_context(backend)
                self._backends.append(backend)
                if bspec.fail_rate:
                    self._flaky[bspec.name] = backend.address
                    self._eject_spans[bspec.name] = []
            addresses = {b.name: b.address for b in self._backends}

            self.step = "starting the control plane"
            cp = self._cp = stack.enter_context(ControlPlane(port=0))
            self.step = "starting the mesh client"
            mesh = self._mesh = stack.enter_context(
                Mesh(bootstrap=bootstrap_for(cp, NODE_ID), seed=self.seed)
            )
            client = stack.enter_context(httpx.Client(transport=MeshTransport(mesh), timeout=10.0))
            url = f"http://{cfg.authority}/reviews/1"
            traffic = self._traffic = Traffic(
                client,
                url,
                workers=cfg.workers,
                rate=cfg.requests_per_second,
                test_user=cfg.test_user,
                seed=self.seed,
            )
            stack.callback(traffic.stop)
            self.view.start(
                DemoInfo(
                    control_plane=cp.address,
                    url=url,
                    backends=tuple((b.name, b.address, self._note(b.name)) for b in self._backends),
                    workers=cfg.workers,
                    rate=cfg.requests_per_second,
                    seed=self.seed,
                    phases=len(cfg.phases),
                    forever=forever,
                )
            )
            for number, spec in self._phases(cfg, forever):
                self._run_phase(cfg, number, spec, addresses, 0 if forever else len(cfg.phases))
                if forever:
                    self._forget(number)
            self.step = "stopping the traffic"
            traffic.stop()
            self.view.finish(self.summary())

    def _phases(self, cfg: DemoConfig, forever: bool) -> Iterator[tuple[int, PhaseSpec]]:
        number = 0
        while True:
            for spec in cfg.phases:
                number += 1
                yield number, spec
            if not forever:
                return

    def _note(self, name: str) -> str:
        assert self.cfg is not None
        spec = next(b for b in self.cfg.backends if b.name == name)
        note = f"serves {spec.version}"
        if spec.fail_rate:
            note += f", answers 503 to {spec.fail_rate:.0%} of requests (flaky)"
        return note

    def _run_phase(
        self, cfg: DemoConfig, number: int, spec: PhaseSpec, addresses: dict[str, str], total: int
    ) -> None:
        assert self._cp is not None and self._mesh is not None and self._traffic is not None
        traffic = self._traffic
        self.step = f"pushing the config of phase {number} ({spec.name})"
        previous = traffic.phase
        traffic.phase = _PUSHING
        snapshot = cfg.snapshot(spec, addresses, version=str(number))
        push_snapshot(self._cp, self._mesh, snapshot, timeout=30.0)
        stats = PhaseStats(index=number, name=spec.name, say=spec.say, xds_version=snapshot.version)
        stats.xds_types = self._applied_versions()
        traffic.phase = number
        if previous == 0:
            traffic.start()  # the first phase: traffic starts once config is in place
        started = time.monotonic()
        self.view.phase_started(stats, total)

        self.step = f"running phase {number} ({spec.name})"
        next_refresh = started
        while (now := time.monotonic()) < started + cfg.phase_seconds:
            if traffic.fatal is not None:
                raise traffic.fatal
            self._sample_ejections(cfg)
            if now >= next_refresh:
                next_refresh = now + _REFRESH
                self.view.update(self._compute(stats, time.monotonic() - started))
            time.sleep(_TICK)  # the demo's sampling clock, not synchronisation
        # Requests sent from now on belong to the next push; let this phase's finish.
        traffic.phase = _PUSHING
        traffic.wait_drained(number)
        self._sample_ejections(cfg)
        final = self._compute(stats, time.monotonic() - started)
        self.stats.append(final)
        self.view.phase_ended(final)

    def _forget(self, number: int) -> None:
        """With --forever, drop what a finished phase recorded, so memory stays flat."""
        assert self._traffic is not None
        self._traffic.forget(number)
        for backend in self._backends:
            backend.reset()  # only this phase's and push-time attempts are in the logs now
        del self.stats[:-_KEEP_PHASES]

    # -- measurements --------------------------------------------------------------

    def _applied_versions(self) -> dict[str, str]:
        """The version the mesh last ACKed per resource type, as LDS/RDS/CDS/EDS."""
        assert self._mesh is not None
        types: dict[str, Any] = self._mesh.config_dump().get("types", {})
        by_short = {
            _SHORT_TYPES.get(url.rsplit(".", 1)[-1], url): str(state.get("version_info", ""))
            for url, state in types.items()
        }
        ordered = [s for s in _SHORT_TYPES.values() if s in by_short]
        return {s: by_short[s] for s in ordered + sorted(set(by_short) - set(ordered))}

    def _sample_ejections(self, cfg: DemoConfig) -> None:
        """Record when each flaky instance is seen ejected, from the mesh's config dump."""
        assert self._mesh is not None
        if not self._flaky:
            return
        clusters: dict[str, Any] = self._mesh.config_dump().get("clusters_in_use", {})
        now = time.monotonic()
        ejected: set[str] = set()
        for info in clusters.values():
            for ep in info.get("endpoints", []):
                if ep.get("ejected"):
                    ejected.add(str(ep.get("address")))
        for name, address in self._flaky.items():
            # A span runs from the first to the last sample that showed the host ejected,
            # so "requests while ejected" never counts the sampling lag at either end.
            spans = self._eject_spans[name]
            is_open = self._open.get(name, False)
            if address in ejected:
                if is_open:
                    spans[-1][1] = now
                else:
                    spans.append([now, now])
                    self._open[name] = True
            elif is_open:
                self._open[name] = False

    def _compute(self, stats: PhaseStats, seconds: float) -> PhaseStats:
        assert self._traffic is not None
        s = PhaseStats(
            index=stats.index,
            name=stats.name,
            say=stats.say,
            xds_version=stats.xds_version,
            xds_types=stats.xds_types,
            seconds=seconds,
        )
        results = self._traffic.results(stats.index)
        s.requests = sum(1 for r in results if not r.test_user)
        answered = 0
        version_of = {b.name: b.version for b in self.cfg.backends} if self.cfg else {}
        for r in results:
            if r.status == 0 or r.status >= 500:
                s.user_errors += 1
            if r.backend:
                answered += 1
                version = version_of.get(r.backend, r.backend)
                (s.test_user if r.test_user else s.by_version)[version] += 1
        attempts = backend_attempts(self._backends, stats.index)
        s.backend_attempts = sum(len(a) for a in attempts.values())
        s.backend_5xx = sum(1 for a in attempts.values() for status, _ in a if status >= 500)
        s.retries = max(0, s.backend_attempts - answered)
        phase_start = time.monotonic() - seconds
        for name in self._flaky:
            spans = self._eject_spans[name]
            s.flaky_requests += len(attempts.get(name, []))
            s.ejections += sum(1 for start, _ in spans if start >= phase_start)
            s.returns += sum(
                1
                for i, (_, end) in enumerate(spans)
                if end >= phase_start and (i + 1 < len(spans) or not self._open.get(name))
            )
            s.ejected_now = s.ejected_now or self._open.get(name, False)
            s.flaky_while_ejected += sum(
                1
                for _, at in attempts.get(name, [])
                if any(start + _GRACE <= at <= end for start, end in spans)
            )
        latencies = [r.latency * 1000.0 for r in results if r.backend]
        s.p50_ms = percentile(latencies, 50)
        s.p99_ms = percentile(latencies, 99)
        return s

    def summary(self) -> list[str]:
        """The closing lines: per-phase numbers and the next step."""
        nacks = len(self._cp.nacks) if self._cp is not None else 0
        pushing = self._traffic.results(_PUSHING) if self._traffic is not None else []
        lost = sum(1 for r in pushing if r.status == 0)  # no answer at all
        return summary_lines(self.stats, nacks, len(pushing), lost)
