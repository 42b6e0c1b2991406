"""Every example runs on its own, on loopback, exits 0 and prints what it promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=EXAMPLES.parent,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_httpx_sync() -> None:
    out = _run(str(EXAMPLES / "httpx_sync.py"))
    m = re.search(r"200 requests: \{'v1': (\d+), 'v2': (\d+)\}", out)
    assert m, out
    assert int(m[1]) + int(m[2]) == 200 and 5 <= int(m[2]) <= 45, out
    assert "end-user: jason -> v3" in out
    assert "connected=True" in out


def test_httpx_async() -> None:
    out = _run(str(EXAMPLES / "httpx_async.py"))
    m = re.search(r"100 concurrent requests: \{'blue': (\d+), 'green': (\d+)\}", out)
    assert m and int(m[1]) + int(m[2]) == 100 and 25 <= int(m[1]) <= 75, out
    assert "all ok: True" in out


def test_grpc_stub() -> None:
    out = _run(str(EXAMPLES / "grpc_stub.py"))
    m = re.search(r"100 calls: \{'echo-v1': (\d+), 'echo-v2': (\d+)\}", out)
    assert m and int(m[1]) + int(m[2]) == 100 and 5 <= int(m[2]) <= 40, out
    assert "echoed: 'hi'" in out


def test_canary_serve_follows_file_edits() -> None:
    out = _run(str(EXAMPLES / "canary_serve.py"))
    shares = [int(s) for s in re.findall(r"\((\d+)% v2\)", out)]
    assert len(shares) == 3, out
    assert shares[0] <= 25 and 30 <= shares[1] <= 70 and shares[2] == 100, out
    assert out.count("pymesh: reloaded") == 2


def test_istio_bootstrap() -> None:
    out = _run(str(EXAMPLES / "istio_bootstrap.py"))
    assert "node id        sidecar~10.244.0.12~" in out
    assert "xDS server     unix:///etc/istio/proxy/XDS" in out
    assert "-> 200 from reviews-v1" in out


def test_grpc_server_rbac() -> None:
    out = _run(str(EXAMPLES / "grpc_server_rbac.py"))
    assert re.search(r"orders serving on 127\.0\.0\.1:\d+: xds\.istio\.io/grpc/lds/inbound/", out)
    assert "frontend Place  -> order placed for frontend" in out
    assert "frontend Delete -> PERMISSION_DENIED" in out and "no-deletes" in out
    assert "batch    Place  -> PERMISSION_DENIED: RBAC: request matched no allow policy" in out
    assert "no client certificate -> UNAVAILABLE" in out


@pytest.mark.timeout(120)
def test_fixtures_example_passes_under_pytest() -> None:
    out = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "fixtures_test.py"))
    assert re.search(r"\b2 passed\b", out), out


def _doc_rows() -> list[tuple[str, str, str]]:
    """(file, install, run) of each row of docs/examples.md's table."""
    doc = (EXAMPLES.parent / "docs" / "examples.md").read_text(encoding="utf-8")
    lines = [line for line in doc.splitlines() if line.startswith("| `")]
    rows = []
    for line in lines:
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split(" | ")]
        rows.append((cells[0], cells[2], cells[3]))
    return rows


def test_docs_name_every_example_with_its_install_and_command() -> None:
    rows = _doc_rows()
    named = {n.strip() for file, _, _ in rows for n in file.split("` / `")}
    on_disk = {p.name for p in EXAMPLES.iterdir() if p.is_file()}
    assert named == on_disk
    for file, install, run in rows:
        # The two installs the doc defines; .ci/examples.py runs each row in its own.
        assert install in ("pip install .", "pip install '.[examples]'"), file
        assert f"examples/{file.split('` / `')[-1]}" in run, (file, run)
    needs_extra = {file for file, install, _ in rows if install != "pip install ."}
    assert needs_extra == {"grpc_stub.py", "fixtures_test.py", "asgi_rbac.py"}


def test_examples_extra_has_what_those_examples_import() -> None:
    from importlib.metadata import requires

    by_extra: dict[str, set[str]] = {}
    for req in requires("pymesh") or []:
        name = re.split(r"[<>=\[; ]", req, maxsplit=1)[0]
        extra = re.search(r"extra == ['\"](\w+)['\"]", req)
        by_extra.setdefault(extra[1] if extra else "", set()).add(name)
    assert by_extra["examples"] == {"grpcio-tools", "pytest", "uvicorn"}
    assert not by_extra[""] & {"grpcio-tools", "pytest", "uvicorn"}  # not in the plain install


def test_mesh_yaml_serves_and_prints_its_bootstrap(tmp_path: Path) -> None:
    out = tmp_path / "bootstrap.json"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pymesh", "serve", str(EXAMPLES / "mesh.yaml")),
            *("--port", "0", "--bootstrap-out", str(out)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        head = [proc.stdout.readline() for _ in range(3)]
        assert head[0].startswith("pymesh: serving "), head
        assert head[2] == f"export GRPC_XDS_BOOTSTRAP={out}\n", head
        assert proc.poll() is None
        server = json.loads(out.read_text())["xds_servers"][0]["server_uri"]
        assert head[0].rstrip().endswith(f" on {server}")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_asgi_rbac_mtls_and_policy() -> None:
    out = _run(str(EXAMPLES / "asgi_rbac.py"))
    assert "frontend GET  -> 200" in out, out
    assert "frontend POST -> 200" in out, out
    assert "batch GET     -> 200" in out, out
    assert "batch POST    -> 403 'RBAC: access denied'" in out, out
    assert "batch POST after the policy update -> 200" in out, out
    assert "no client certificate -> TLS handshake refused" in out, out


def test_orca_wrr() -> None:
    out = _run(str(EXAMPLES / "orca_wrr.py"))
    m = re.search(r"320 calls: \{'a': (\d+), 'b': (\d+), 'c': (\d+)\}", out)
    assert m, out
    a, b, c = int(m[1]), int(m[2]), int(m[3])
    # Weights 10 : 4 : 2 -> 200, 80, 40 of 320 (generous bounds).
    assert a + b + c == 320 and 170 <= a <= 230 and 55 <= b <= 105 and 20 <= c <= 60, out
