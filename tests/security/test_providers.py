"""file_watcher provider: loading, rotation, half-written files, interval, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from _sec_helpers import Pki, atomic_write

from pymesh.errors import TlsConfigError
from pymesh.security import FileWatcherProvider, create_provider
from pymesh.security.providers import parse_duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_loads_files_and_validates_the_pair(pki: Pki, client_files: dict[str, str]) -> None:
    p = FileWatcherProvider("default", client_files)
    m = p.material()
    assert m.generation == 1
    assert m.cert_chain is not None and b"BEGIN CERTIFICATE" in m.cert_chain
    assert m.ca_certificates == pki.ca_pem
    assert p.refresh_interval == 600.0  # gRPC's default
    assert m.chain_file is not None and Path(m.chain_file).stat().st_mode & 0o777 == 0o600
    p.close()


WAIT = 30.0  # generous: file events on a loaded machine


def test_half_written_update_keeps_previous_material(
    pki: Pki, client_files: dict[str, str]
) -> None:
    p = FileWatcherProvider("default", client_files)
    first = p.material()
    # A new certificate whose key has not been written yet: the pair does not match.
    new = pki.issue("client-v2")
    atomic_write(Path(client_files["certificate_file"]), new.cert_pem)
    assert p.wait_for(lambda: p.reload_failures == 1, WAIT)
    assert p.material() is first
    assert p.last_error is not None and "do not match" in p.last_error
    # The key arrives: the watcher loads the new generation.
    atomic_write(Path(client_files["private_key_file"]), new.key_pem)
    assert p.wait_for(lambda: p.material() is not first, WAIT)
    second = p.material()
    assert second.generation > first.generation
    assert second.cert_chain == new.cert_pem
    assert p.last_error is None
    # The broken pair was tried once: its repeated events were not retried.
    assert p.reload_failures == 1
    p.close()


def test_garbage_and_missing_files_keep_previous(pki: Pki, client_files: dict[str, str]) -> None:
    p = FileWatcherProvider("default", client_files)
    first = p.material()
    atomic_write(Path(client_files["ca_certificate_file"]), b"-----BEGIN CERTIFICATE-----\nxx")
    assert p.wait_for(lambda: p.reload_failures == 1, WAIT)
    assert p.material() is first
    Path(client_files["ca_certificate_file"]).unlink()
    assert p.wait_for(lambda: p.reload_failures == 2, WAIT)
    assert p.material() is first
    p.close()


def test_kubernetes_style_symlink_swap_is_seen(pki: Pki, tmp_path: Path) -> None:
    """A Secret volume: cert.pem -> ..data/cert.pem, and a rotation renames a new
    ..data symlink over the old one (no event names cert.pem itself)."""
    import os

    def generation(name: str, leaf_name: str) -> Path:
        leaf = pki.issue(leaf_name)
        d = tmp_path / name
        d.mkdir()
        (d / "cert.pem").write_bytes(leaf.cert_pem)
        (d / "key.pem").write_bytes(leaf.key_pem)
        (d / "ca.pem").write_bytes(pki.ca_pem)
        return d

    generation("..2024_01", "client")
    os.symlink("..2024_01", tmp_path / "..data")
    for f in ("cert.pem", "key.pem", "ca.pem"):
        os.symlink(f"..data/{f}", tmp_path / f)
    files = {
        "certificate_file": str(tmp_path / "cert.pem"),
        "private_key_file": str(tmp_path / "key.pem"),
        "ca_certificate_file": str(tmp_path / "ca.pem"),
    }
    p = FileWatcherProvider("default", files)
    first = p.material()
    new_dir = generation("..2024_02", "client-v2")
    os.symlink("..2024_02", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert p.wait_for(lambda: p.material() is not first, WAIT)
    assert p.material().cert_chain == (new_dir / "cert.pem").read_bytes()
    p.close()


def test_a_dropped_provider_stops_its_watcher(client_files: dict[str, str]) -> None:
    import gc
    import threading

    p = FileWatcherProvider("dropped", client_files)
    thread = p._thread
    assert thread.is_alive() and thread.name == "pymesh-certs-dropped"
    del p
    gc.collect()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert all(t.name != "pymesh-certs-dropped" for t in threading.enumerate())


def _overwrite_in_place(path: Path, data: bytes, size: int = 4096) -> None:
    """Same inode, same size (padded; PEM ignores text outside blocks), same mtime."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(data.ljust(size, b"\n"))
        f.truncate(size)
    import os

    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_refresh_interval_rereads_even_without_a_stat_change(
    pki: Pki, client_files: dict[str, str]
) -> None:
    cert, key = Path(client_files["certificate_file"]), Path(client_files["private_key_file"])
    leaf = pki.issue("client")
    _overwrite_in_place(cert, leaf.cert_pem)
    _overwrite_in_place(key, leaf.key_pem)
    clock = Clock()
    p = FileWatcherProvider("default", {**client_files, "refresh_interval": "30s"}, clock=clock)
    first = p.material()
    new = pki.issue("client-v2")
    checks: list[int] = []
    _overwrite_in_place(cert, new.cert_pem)
    _overwrite_in_place(key, new.key_pem)
    clock.now += 10  # files look unchanged (inode, size, mtime): nothing yet
    # Let the watcher look at least twice (events and/or ticks) before judging.
    assert p.wait_for(lambda: checks.append(1) or len(checks) > 2, WAIT)
    assert p.material() is first
    clock.now += 21  # the interval passed: re-read regardless, at the next tick
    assert p.wait_for(lambda: p.material() is not first, WAIT)
    assert p.material().cert_chain == new.cert_pem.ljust(4096, b"\n")
    assert p.refresh_interval == 30.0
    p.close()


def test_config_errors() -> None:
    with pytest.raises(TlsConfigError, match="unknown plugin 'meshca'"):
        create_provider("x", "meshca", {})
    with pytest.raises(TlsConfigError, match="set together"):
        FileWatcherProvider("x", {"certificate_file": "/a"})
    with pytest.raises(TlsConfigError, match="certificate_file"):
        FileWatcherProvider("x", {})
    with pytest.raises(TlsConfigError, match="cannot read ca_certificate_file"):
        FileWatcherProvider("x", {"ca_certificate_file": "/nonexistent/ca.pem"})
    assert parse_duration("600s", "f") == 600.0
    assert parse_duration("0.25s", "f") == 0.25


@pytest.mark.parametrize("bad", ["soon", "250ms", "10m", "5", 5, "99999999999999s", None])
def test_refresh_interval_is_a_protobuf_json_duration_as_in_grpc(bad: object) -> None:
    # gRPC's bootstrap reads refresh_interval as protobuf's JSON Duration: only "<n>s".
    with pytest.raises(TlsConfigError) as info:
        parse_duration(bad, "provider 'default': refresh_interval")
    message = str(info.value)
    assert message.startswith("provider 'default': refresh_interval: ")
    assert "not a protobuf JSON Duration" in message and "e.g. '600s' or '0.5s'" in message


@pytest.mark.parametrize("bad", ["0s", "-1s"])
def test_refresh_interval_must_be_positive(bad: str) -> None:
    with pytest.raises(TlsConfigError, match="must be positive"):
        parse_duration(bad, "f")
