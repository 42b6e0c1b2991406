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


def test_half_written_update_keeps_previous_material(
    pki: Pki, client_files: dict[str, str]
) -> None:
    clock = Clock()
    p = FileWatcherProvider("default", client_files, clock=clock)
    first = p.material()
    # A new certificate whose key has not been written yet: the pair does not match.
    new = pki.issue("client-v2")
    atomic_write(Path(client_files["certificate_file"]), new.cert_pem)
    clock.now += 1
    assert p.material() is first
    assert p.reload_failures == 1
    assert p.last_error is not None and "do not match" in p.last_error
    clock.now += 1
    assert p.material() is first  # same broken files: not retried on every access
    assert p.reload_failures == 1
    # The key arrives: the next access loads the new generation.
    atomic_write(Path(client_files["private_key_file"]), new.key_pem)
    clock.now += 1
    second = p.material()
    assert second.generation > first.generation
    assert second.cert_chain == new.cert_pem
    assert p.last_error is None


def test_garbage_and_missing_files_keep_previous(pki: Pki, client_files: dict[str, str]) -> None:
    clock = Clock()
    p = FileWatcherProvider("default", client_files, clock=clock)
    first = p.material()
    atomic_write(Path(client_files["ca_certificate_file"]), b"-----BEGIN CERTIFICATE-----\nxx")
    clock.now += 1
    assert p.material() is first and p.reload_failures == 1
    Path(client_files["ca_certificate_file"]).unlink()
    clock.now += 1
    assert p.material() is first and p.reload_failures == 2


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
    _overwrite_in_place(cert, new.cert_pem)
    _overwrite_in_place(key, new.key_pem)
    clock.now += 10  # files look unchanged (inode, size, mtime): nothing yet
    assert p.material() is first
    clock.now += 21  # the interval passed: re-read regardless
    assert p.material().cert_chain == new.cert_pem.ljust(4096, b"\n")
    assert p.refresh_interval == 30.0


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
