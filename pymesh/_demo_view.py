"""How the demo shows itself: a rich live table on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pymesh._demo_traffic import PhaseStats

__all__ = ["DemoInfo", "PlainView", "RichView", "View", "make_view", "summary_lines"]

VERSIONS = ("v1", "v2", "v3")


@dataclass(frozen=True)
class DemoInfo:
    """The setup, shown once at the start."""

    control_plane: str
    url: str
    backends: tuple[tuple[str, str, str], ...]  # (name, address, note)
    workers: int
    rate: float
    seed: int
    phases: int
    forever: bool


class View(Protocol):
    """What the demo tells its view."""

    def start(self, info: DemoInfo) -> None: ...
    def phase_started(self, stats: PhaseStats, total: int) -> None: ...
    def update(self, stats: PhaseStats) -> None: ...
    def phase_ended(self, stats: PhaseStats) -> None: ...
    def finish(self, lines: list[str]) -> None: ...
    def close(self) -> None: ...


def make_view(plain: bool, out: TextIO | None = None) -> View:
    """Rich when ``out`` (stdout) is a terminal and ``plain`` is off; plain lines otherwise."""
    stream = out or sys.stdout
    if not plain and stream.isatty():
        return RichView(Console(file=stream))
    return PlainView(stream)


def _versions(counter: dict[str, int]) -> str:
    total = sum(counter.values())
    parts = []
    for v in VERSIONS:
        n = counter.get(v, 0)
        pct = 100.0 * n / total if total else 0.0
        parts.append(f"{v} {n} ({pct:.1f}%)")
    return " · ".join(parts)


def _setup_lines(info: DemoInfo) -> list[str]:
    lines = [
        f"pymesh demo: a proxyless service mesh, live on this machine (seed {info.seed})",
        f"  control plane  {info.control_plane} (embedded xDS server, pymesh/demo_mesh.yaml)",
    ]
    for name, address, note in info.backends:
        lines.append(f"  backend        {name:<13} {address:<16} {note}")
    lines.append(
        f"  client         httpx + pymesh.MeshTransport → {info.url}, "
        f"{info.workers} workers, ~{info.rate:.0f} requests/s"
    )
    plan = "until Ctrl-C" if info.forever else "then a summary"
    lines.append(
        f"  plan           {info.phases} phases, each a new xDS snapshot pushed live; {plan}"
    )
    return lines


def phase_lines(s: PhaseStats) -> list[str]:
    """The plain report of one finished phase (the e2e test parses these lines)."""
    user_total = sum(s.test_user.values())
    events = []
    if s.returns:
        events.append(f"returned {s.returns}× (ejection time over)")
    if s.ejections:
        events.append(f"ejected {s.ejections}×")
    ejected = ", then ".join(events) if events else "not ejected"
    if not events and s.ejected_now:
        ejected = "still ejected"
    return [
        f"      traffic    {s.requests} requests: {_versions(s.by_version)}",
        f"      test user  {user_total} requests: {_versions(s.test_user)}",
        f"      failures   users saw {s.user_errors} errors · backends answered "
        f"{s.backend_5xx} × 5xx · retries {s.retries}",
        f"      outlier    flaky instance {ejected} · {s.flaky_requests} attempts reached it · "
        f"{s.flaky_while_ejected} while ejected",
        f"      latency    p50 {s.p50_ms:.1f} ms · p99 {s.p99_ms:.1f} ms",
    ]


def summary_lines(
    stats: list[PhaseStats], nacks: int, push_requests: int, push_lost: int
) -> list[str]:
    """The closing summary: real numbers per phase and one next step."""
    out = ["", "What you saw (real requests, real sockets, nothing simulated):"]
    for s in stats:
        split = " · ".join(f"{v} {s.share(v):.0f}%" for v in VERSIONS if s.by_version[v])
        user_total = sum(s.test_user.values())
        line = f"  {s.index:>2}. {s.name:<17} {split or 'no traffic'}"
        if s.test_user["v3"]:
            line += f" · test user → v3 {s.test_user['v3']}/{user_total}"
        line += f" · user errors {s.user_errors}"
        if s.backend_5xx:
            line += f" (backend 5xx {s.backend_5xx}, retries {s.retries})"
        if s.ejections:
            line += f" · ejections {s.ejections}, {s.flaky_while_ejected} requests while ejected"
        out.append(line)
    out.append(
        f"  config pushes: {len(stats)} snapshots applied live, {nacks} NACKs; "
        f"{push_requests} requests sent while a push was applied, {push_lost} lost"
    )
    out.append("")
    out.append(
        "Next: describe your own services in a mesh file and run `pymesh serve mesh.yaml` "
        "(see docs/quickstart.md)."
    )
    return out


class PlainView:
    """Line-oriented output for logs, pipes and CI."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def _print(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self._out)
        self._out.flush()

    def start(self, info: DemoInfo) -> None:
        self._print(*_setup_lines(info), "")

    def phase_started(self, stats: PhaseStats, total: int) -> None:
        types = " · ".join(f"{k} {v}" for k, v in stats.xds_types.items())
        of = f"/{total}" if total else ""
        self._print(
            f"[{stats.index}{of}] {stats.name} — {stats.say}",
            f"      xDS        version {stats.xds_version} applied ({types}, ACKed)",
        )

    def update(self, stats: PhaseStats) -> None:
        return  # plain output reports each phase once, at its end

    def phase_ended(self, stats: PhaseStats) -> None:
        self._print(*phase_lines(stats))

    def finish(self, lines: list[str]) -> None:
        self._print(*lines)

    def close(self) -> None:
        self._out.flush()


class RichView:
    """A live table: one row per phase, the current one updating four times a second."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._info: DemoInfo | None = None
        self._rows: list[PhaseStats] = []
        self._current: PhaseStats | None = None
        self._total = 0
        self._live: Live | None = None

    def start(self, info: DemoInfo) -> None:
        self._info = info
        for line in _setup_lines(info):
            self._console.print(Text(line))
        self._live = Live(self._render(), console=self._console, refresh_per_second=4)
        self._live.start()

    def _render(self) -> Group:
        table = Table(
            title="requests to reviews:9080, per phase (live)",
            box=box.SIMPLE_HEAD,
            caption="split: % served by v1/v2/v3 · jason: test user's requests sent to v3 · "
            "err: errors users saw · 5xx: backend answers · eject: ejections (*: out now) · "
            "p50/p99: latency in ms",
        )
        for col in ("phase", "xDS", "split", "jason", "err", "5xx", "retry", "eject", "p50", "p99"):
            table.add_column(col, justify="left" if col == "phase" else "right", no_wrap=True)
        rows = self._rows[-12:]
        if self._current is not None:
            rows = [*rows, self._current]
        for s in rows:
            user_total = sum(s.test_user.values())
            table.add_row(
                s.name,
                s.xds_version,
                "/".join(f"{s.share(v):.0f}" for v in VERSIONS),
                f"{s.test_user['v3']}/{user_total}",
                str(s.user_errors),
                str(s.backend_5xx),
                str(s.retries),
                str(s.ejections) + ("*" if s.ejected_now else ""),
                f"{s.p50_ms:.1f}",
                f"{s.p99_ms:.1f}",
                style="bold" if s is self._current else "",
            )
        say = Text(f"now: {self._current.say}" if self._current else "", style="cyan")
        return Group(table, say)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def phase_started(self, stats: PhaseStats, total: int) -> None:
        self._current, self._total = stats, total
        self._refresh()

    def update(self, stats: PhaseStats) -> None:
        self._current = stats
        self._refresh()

    def phase_ended(self, stats: PhaseStats) -> None:
        self._rows.append(stats)
        self._current = None
        self._refresh()

    def finish(self, lines: list[str]) -> None:
        self.close()
        for line in lines:
            self._console.print(Text(line))

    def close(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()
