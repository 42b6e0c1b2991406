"""A second control plane on a taken port refuses to start (no silent SO_REUSEPORT
sharing), with a typed error that says how to pick another port; `pymesh serve` exits
non-zero with it."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
from _server_helpers import AdsClient, simple_snapshot

from pymesh.cli import main
from pymesh.errors import MeshError
from pymesh.server import LISTENER_TYPE, ControlPlane, PortInUseError


def test_second_control_plane_on_the_same_port_is_refused() -> None:
    with ControlPlane() as first:
        first.set_snapshot(simple_snapshot("first", "a:80"))
        second = ControlPlane(port=first.port)
        with pytest.raises(PortInUseError) as info:
            second.start()
        err = info.value
        assert isinstance(err, MeshError)
        assert (err.host, err.port) == ("127.0.0.1", first.port)
        assert f"127.0.0.1:{first.port}" in str(err)
        assert "already in use" in str(err)
        assert "--port 0" in str(err)
        assert "stopped" in repr(second)
        # Every client still reaches the first server, never a second one.
        for _ in range(5):
            c = AdsClient(first.address)
            try:
                c.send(LISTENER_TYPE)
                assert c.recv().version_info == "first"
            finally:
                c.close()


def test_a_port_held_by_another_program_is_refused() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(PortInUseError, match="already in use"):
            ControlPlane(port=port).start()


def test_the_port_is_free_again_after_stop() -> None:
    first = ControlPlane().start()
    port = first.port
    first.stop()
    with ControlPlane(port=port) as again:
        assert again.port == port


def test_pymesh_serve_exits_non_zero_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("services:\n  a: {port: 80, endpoints: ['127.0.0.1:1']}\n")
    with ControlPlane() as first:
        code = main(["serve", str(path), "--port", str(first.port)])
    assert code != 0
    err = capsys.readouterr().err
    assert f"127.0.0.1:{first.port}" in err
    assert "already in use" in err
    assert "--port 0" in err
    assert "Traceback" not in err


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_the_control_plane_does_not_share_its_port() -> None:
    """Even a program that asks for SO_REUSEPORT cannot bind beside it (grpc's default
    would let it, and the kernel would split clients between the two)."""
    with ControlPlane() as cp, socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError) as info:
            other.bind(("127.0.0.1", cp.port))
        assert info.value.errno == errno.EADDRINUSE
