"""serve(): a mesh file served over ADS, reloaded on edit, bad edits keep the last good."""

from __future__ import annotations

import json
import os
import queue
import shlex
import threading
from pathlib import Path

import pytest
from _server_helpers import TIMEOUT, AdsClient

from pymesh import Mesh, cli
from pymesh.errors import ConfigFileError, MeshError
from pymesh.server import LISTENER_TYPE, ControlPlane, Snapshot, compile_text
from pymesh.server._serve import serve

GOOD = "services:\n  a: {port: 80, endpoints: ['127.0.0.1:1']}\n"
GOOD2 = "services:\n  a: {port: 80, endpoints: ['127.0.0.1:1']}\n  b: {port: 81}\n"
BAD = "services:\n  a: {port: eighty}\n"


def replace_file(path: Path, text: str) -> None:
    """Write like an editor: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_serve_reloads_good_edits_and_keeps_last_good(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(GOOD)
    stop = threading.Event()
    ready: queue.SimpleQueue[ControlPlane] = queue.SimpleQueue()
    reloads: queue.SimpleQueue[Snapshot | ConfigFileError] = queue.SimpleQueue()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve(path, 0, stop_event=stop, on_ready=ready.put, on_reload=reloads.put)
        except BaseException as e:  # surfaced by the assertion below
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        cp = ready.get(timeout=TIMEOUT)
        client = AdsClient(cp.address)
        try:
            client.send(LISTENER_TYPE)
            first = client.recv()
            assert first.version_info == compile_text(GOOD).version
            client.ack(first)

            path.write_text(BAD)  # in-place write
            result = reloads.get(timeout=TIMEOUT)
            assert isinstance(result, ConfigFileError)
            assert result.where == "services.a.port"
            assert result.line == 2
            snap = cp.cache.get_snapshot("any")
            assert snap is not None and snap.version == first.version_info

            replace_file(path, GOOD2)  # editor-style replace
            result = reloads.get(timeout=TIMEOUT)
            assert isinstance(result, Snapshot)
            assert result.version == compile_text(GOOD2).version
            pushed = client.recv()
            assert pushed.version_info == result.version
            assert len(pushed.resources) == 2
        finally:
            client.close()
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert errors == []
    out = capsys.readouterr()
    assert "still serving the last good config" in out.err
    assert "services.a.port" in out.err
    assert "reloaded" in out.out


def test_serve_refuses_a_bad_initial_file(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(BAD)
    with pytest.raises(ConfigFileError) as info:
        serve(path, 0, stop_event=threading.Event())
    assert info.value.line == 2


def _serve_in_thread(
    path: Path, **kwargs: object
) -> tuple[ControlPlane, threading.Event, threading.Thread]:
    stop = threading.Event()
    ready: queue.SimpleQueue[ControlPlane] = queue.SimpleQueue()
    thread = threading.Thread(
        target=serve,
        args=(path, 0),
        kwargs={"stop_event": stop, "on_ready": ready.put, **kwargs},
        daemon=True,
    )
    thread.start()
    return ready.get(timeout=TIMEOUT), stop, thread


def test_serve_prints_a_bootstrap_a_mesh_can_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(GOOD)
    cp, stop, thread = _serve_in_thread(path)
    try:
        out = capsys.readouterr().out
        line = next(x for x in out.splitlines() if x.startswith("export "))
        name, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
        assert name == "GRPC_XDS_BOOTSTRAP_CONFIG"
        bootstrap = json.loads(value)
        assert bootstrap == cp.client_bootstrap()
        assert bootstrap["xds_servers"][0]["server_uri"] == cp.address
        with Mesh(bootstrap=bootstrap) as mesh:
            assert mesh.wait_state(mesh.slot("a:80"), TIMEOUT) is not None
    finally:
        stop.set()
        thread.join(TIMEOUT)


def test_serve_bootstrap_out_writes_the_file_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(GOOD)
    out_file = tmp_path / "bootstrap.json"
    cp, stop, thread = _serve_in_thread(path, bootstrap_out=out_file)
    try:
        out = capsys.readouterr().out
        assert f"export GRPC_XDS_BOOTSTRAP={out_file.resolve()}" in out
        assert json.loads(out_file.read_text()) == cp.client_bootstrap()
        monkeypatch.setenv("GRPC_XDS_BOOTSTRAP", str(out_file))
        with Mesh.from_env() as mesh:
            assert mesh.wait_state(mesh.slot("a:80"), TIMEOUT) is not None
    finally:
        stop.set()
        thread.join(TIMEOUT)


def test_serve_bootstrap_out_unwritable_names_the_file_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(GOOD)
    target = tmp_path / "missing-dir" / "b.json"
    with pytest.raises(MeshError) as info:
        serve(path, 0, stop_event=threading.Event(), bootstrap_out=target)
    assert str(target) in str(info.value)
    assert "existing, writable directory" in str(info.value)


def test_serve_on_a_busy_port_fails_naming_the_port_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(GOOD)
    with ControlPlane(port=0) as busy:
        with pytest.raises(MeshError) as info:
            serve(path, busy.port, stop_event=threading.Event())
        assert f"127.0.0.1:{busy.port}" in str(info.value)
        assert "--port 0" in str(info.value)


def test_client_bootstrap_turns_a_wildcard_host_into_loopback() -> None:
    with ControlPlane(port=0, host="0.0.0.0") as cp:
        uri = cp.client_bootstrap()["xds_servers"][0]["server_uri"]
        assert uri == f"127.0.0.1:{cp.port}"


def test_serve_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 18000; 0: any free port)" in text
    assert "--host HOST address to listen on (default: 127.0.0.1" in text
    assert "--bootstrap-out FILE" in text
