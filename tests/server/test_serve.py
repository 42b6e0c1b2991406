"""serve(): a mesh file served over ADS, reloaded on edit, bad edits keep the last good."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import pytest
from _server_helpers import TIMEOUT, AdsClient

from pymesh.errors import ConfigFileError
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
