"""Run every example of docs/examples.md in the install its row names, as written.

Run from the root of a checkout, inside a venv made for it (CI uses the README demo
command's venv): each distinct install command of the table is run once, in the table's
order, then the run commands of its rows. A run must exit 0 without a traceback; a row
whose command serves until stopped (``pymesh serve``) must print that it is serving and
still be running, and is then stopped. Exits 1 naming every row that failed.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

DOC = Path("docs/examples.md")
INSTALLS = ("pip install .", "pip install '.[examples]'")
TIMEOUT = 300.0
SERVE_READY = "pymesh: serving "


def rows() -> list[tuple[str, str, str]]:
    """(file, install, run) of each row of the table whose header has install and run."""
    out: list[tuple[str, str, str]] = []
    header: list[str] | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if header is None:
            header = cells
            continue
        if set(cells[0]) <= {"-", "|"} or "install" not in header or "run" not in header:
            continue
        row = dict(zip(header, (c.strip("`") for c in cells), strict=True))
        out.append((row["file"], row["install"], row["run"]))
    return out


def run_to_end(command: str) -> str | None:
    """None when ``command`` exits 0 without a traceback, else what went wrong."""
    try:
        proc = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return f"did not finish within {TIMEOUT:g} s"
    if proc.returncode != 0 or "Traceback" in proc.stderr:
        return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return None


def run_server(command: str) -> str | None:
    """None when ``command`` says it is serving, prints the clients' bootstrap line and is
    still running; it is then stopped."""
    proc = subprocess.Popen(
        shlex.split(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    # Each readline blocks until the server prints its next line or exits; the three
    # lines are "serving", the bootstrap announcement and its "export ..." line.
    head = [proc.stdout.readline() for _ in range(3)]
    alive = proc.poll() is None
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    if head[0].startswith(SERVE_READY) and head[2].startswith("export ") and alive:
        return None
    return f"did not keep serving (exit {proc.returncode})\n{''.join(head)}{out}\n{err}"


def main() -> int:
    table = rows()
    if not table:
        print(f"{DOC}: no table with install and run columns", file=sys.stderr)
        return 1
    failed: list[str] = []
    for install in INSTALLS:
        group = [r for r in table if r[1] == install]
        print(f"-- {install}", flush=True)
        subprocess.run(shlex.split(install), check=True)
        for file, _install, command in group:
            print(f"   {file}: {command}", flush=True)
            serving = re.match(r"pymesh serve\b", command)
            problem = run_server(command) if serving else run_to_end(command)
            if problem is not None:
                failed.append(f"{file}: `{command}` in `{install}`: {problem}")
    unknown = [r for r in table if r[1] not in INSTALLS]
    for file, install, _run in unknown:
        failed.append(f"{file}: install `{install}` is not one of {INSTALLS}")
    for f in failed:
        print(f"FAILED {f}", file=sys.stderr)
    print(f"{len(table) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
