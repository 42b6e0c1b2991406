"""Certificate providers: where a cluster's certificates, keys and trust roots come from.

The bootstrap's ``certificate_providers`` names provider *instances*; an
UpstreamTlsContext refers to them by instance name (gRFC A29). The one plugin gRPC (and
istio-agent) defines is ``file_watcher``: PEM files on disk re-read every
``refresh_interval`` (default 600 s, as gRPC). pymesh also re-reads as soon as the files
change: a background thread per provider watches their directories with ``watchfiles``
(inotify, FSEvents, ReadDirectoryChangesW; polling where none works), so a rotation —
files renamed into place, or Kubernetes swapping its ``..data`` symlink — is picked up
by the next new connection, without any polling on the request path.

A half-written or invalid update never replaces good material: the previous material
stays in use, a warning is logged and :attr:`FileWatcherProvider.reload_failures` counts
it. Only the very first load fails hard (:class:`~pymesh.errors.TlsConfigError`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import watchfiles

from pymesh._durations import json_duration_seconds
from pymesh.errors import TlsConfigError

__all__ = [
    "DEFAULT_REFRESH_INTERVAL",
    "CertificateMaterial",
    "FileWatcherProvider",
    "create_provider",
    "parse_duration",
]

log = logging.getLogger("pymesh.security")

#: gRPC's default file_watcher refresh interval (seconds).
DEFAULT_REFRESH_INTERVAL = 600.0
# The watcher thread wakes at least this often (ms) without a file event, to apply
# refresh_interval and to notice that its provider was closed or garbage-collected.
_TICK_MS = 1000
# Events closer together than this (ms) are one batch: a rotation writes several files.
_DEBOUNCE_MS = 100


@dataclass(frozen=True, slots=True, eq=False)
class CertificateMaterial:
    """One validated generation of a provider's files.

    ``chain_file`` is a private file (key + chain, mode 0600) holding exactly this
    generation, because :meth:`ssl.SSLContext.load_cert_chain` reads only files; it
    stays valid for as long as the provider lives.
    """

    generation: int
    cert_chain: bytes | None  # PEM
    private_key: bytes | None  # PEM
    ca_certificates: bytes | None  # PEM
    chain_file: str | None


def parse_duration(value: Any, where: str) -> float:
    """Seconds from a protobuf JSON Duration (``"600s"``, ``"0.5s"``), as gRPC's bootstrap
    writes ``refresh_interval``; parsed by protobuf. Must be positive."""
    try:
        if not isinstance(value, str):
            raise ValueError(f"a {type(value).__name__}, not a string")
        seconds = json_duration_seconds(value)
    except ValueError as e:
        raise TlsConfigError(
            f"{where}: {value!r} is not a protobuf JSON Duration ({e}); write seconds with "
            "an 's', e.g. '600s' or '0.5s' (gRPC's bootstrap format)"
        ) from e
    if seconds <= 0:
        raise TlsConfigError(f"{where}: must be positive, got {value!r}; e.g. '600s'")
    return seconds


class FileWatcherProvider:
    """The ``file_watcher`` plugin: ``certificate_file`` + ``private_key_file`` (identity)
    and/or ``ca_certificate_file`` (roots), re-read on ``refresh_interval`` and on change.

    :meth:`material` is one attribute read (lock-free, thread-safe); a background thread
    (``pymesh-certs-NAME``, daemon) watches the files' directories and loads new
    generations. :meth:`close` stops it; so does garbage collection of the provider.
    """

    plugin_name = "file_watcher"

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        where = f"certificate provider {name!r} (file_watcher)"
        for key in ("certificate_file", "private_key_file", "ca_certificate_file"):
            if key in config and (not isinstance(config[key], str) or not config[key]):
                raise TlsConfigError(f"{where}: {key} must be a non-empty file path")
        self.certificate_file: str | None = config.get("certificate_file")
        self.private_key_file: str | None = config.get("private_key_file")
        self.ca_certificate_file: str | None = config.get("ca_certificate_file")
        if (self.certificate_file is None) != (self.private_key_file is None):
            raise TlsConfigError(
                f"{where}: certificate_file and private_key_file must be set together"
            )
        if self.certificate_file is None and self.ca_certificate_file is None:
            raise TlsConfigError(
                f"{where}: set certificate_file + private_key_file and/or ca_certificate_file"
            )
        self.refresh_interval = (
            parse_duration(config["refresh_interval"], f"{where}: refresh_interval")
            if "refresh_interval" in config
            else DEFAULT_REFRESH_INTERVAL
        )
        self._clock = clock
        self._lock = threading.Lock()  # serialises reloads; readers never take it
        self._checked = threading.Condition()  # notified after every check (wait_for)
        self._dir = tempfile.TemporaryDirectory(prefix="pymesh-certs-")
        #: Reloads that failed (unreadable, half-written or mismatched files) and were
        #: skipped, keeping the previous material.
        self.reload_failures = 0
        self.last_error: str | None = None
        self._generation = 0
        self._next_refresh = clock() + self.refresh_interval
        self._signature = self._stat()
        self._failed_signature: object = None
        self._material = self._load(where)  # the first load must succeed: fail closed
        self._stop = threading.Event()
        # The thread holds the provider weakly: an unclosed provider that is dropped is
        # collected, and the finalizer stops its thread.
        weakref.finalize(self, self._stop.set)
        self._thread = threading.Thread(
            target=_watch,
            args=(weakref.ref(self), self._stop, sorted(self._dirs())),
            name=f"pymesh-certs-{name}",
            daemon=True,
        )
        self._thread.start()

    def __repr__(self) -> str:
        return (
            f"<FileWatcherProvider {self.name!r} generation={self._material.generation} "
            f"reload_failures={self.reload_failures}>"
        )

    @property
    def has_identity(self) -> bool:
        return self.certificate_file is not None

    @property
    def has_roots(self) -> bool:
        return self.ca_certificate_file is not None

    def material(self) -> CertificateMaterial:
        """The current material (the watcher thread swaps in new generations)."""
        return self._material

    def refresh(self) -> CertificateMaterial:
        """Re-read the files now (if they changed) and return the current material."""
        self._maybe_reload(self._clock(), force=True)
        return self._material

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds, re-testing it after each check the watcher
        makes (a file event or its once-a-second tick); False after ``timeout`` seconds.

        For tests and tools that change the files and need to know the provider saw it,
        e.g. ``p.wait_for(lambda: p.material().generation > 1, 10)``.
        """
        with self._checked:
            return self._checked.wait_for(predicate, timeout)

    def close(self) -> None:
        """Stop watching and remove the private copies of the keys."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(10)
        self._dir.cleanup()

    # -- internals ----------------------------------------------------------------

    def _paths(self) -> list[str]:
        return [
            p
            for p in (self.certificate_file, self.private_key_file, self.ca_certificate_file)
            if p is not None
        ]

    def _dirs(self) -> set[str]:
        return {os.path.dirname(os.path.abspath(p)) for p in self._paths()}

    def _stat(self) -> object:
        """What identifies the files' current content cheaply (inode, size, mtime),
        following symlinks: compared after each event, so that events for other files in
        the same directories, or repeated events, do not re-read ours."""
        sig: list[object] = []
        for p in self._paths():
            try:
                st = os.stat(p)
                sig.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError as e:
                sig.append(e.errno)
        return tuple(sig)

    def _check(self, changed: bool) -> None:
        """The watcher's step: reload when the files changed or the interval passed.

        Never raises: the thread must outlive any one bad step (logged)."""
        try:
            self._maybe_reload(self._clock(), changed=changed)
        except Exception:
            log.exception("certificate provider %r: reload failed", self.name)
        finally:
            with self._checked:
                self._checked.notify_all()

    def _maybe_reload(self, now: float, *, force: bool = False, changed: bool = False) -> None:
        with self._lock:
            sig = self._stat() if changed or force else self._signature
            due = force or now >= self._next_refresh
            fresh = sig != self._signature and sig != self._failed_signature
            if not (due or fresh):
                return
            if due:
                self._next_refresh = now + self.refresh_interval
            try:
                new = self._load(f"certificate provider {self.name!r} (file_watcher)")
            except TlsConfigError as e:
                # Keep the previous material: a rotation may be half-way (cert written,
                # key not yet). Retry when the files change again or on the interval.
                self.reload_failures += 1
                self.last_error = e.message
                self._failed_signature = sig
                log.warning("%s; keeping the previous certificates", e.message)
                return
            if _same(new, self._material):
                self._signature = sig
                if new.chain_file is not None:
                    _unlink(new.chain_file)
                return
            old = self._material
            self._material, self._signature, self._failed_signature = new, sig, None
            self.last_error = None
            log.info("certificate provider %r: loaded generation %d", self.name, new.generation)
            if old.chain_file is not None:
                # Contexts already loaded it; only future builds read files.
                _unlink(old.chain_file)

    def _read(self, path: str, what: str, where: str) -> bytes:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise TlsConfigError(f"{where}: cannot read {what} {path!r}: {e.strerror or e}") from e
        if b"-----BEGIN" not in data:
            raise TlsConfigError(f"{where}: {what} {path!r} holds no PEM data")
        return data

    def _load(self, where: str) -> CertificateMaterial:
        chain = key = ca = None
        chain_file = None
        if self.certificate_file is not None and self.private_key_file is not None:
            chain = self._read(self.certificate_file, "certificate_file", where)
            key = self._read(self.private_key_file, "private_key_file", where)
        if self.ca_certificate_file is not None:
            ca = self._read(self.ca_certificate_file, "ca_certificate_file", where)
            try:
                ssl.create_default_context(cadata=ca.decode("ascii"))
            except (ssl.SSLError, ValueError, UnicodeDecodeError) as e:
                raise TlsConfigError(
                    f"{where}: ca_certificate_file {self.ca_certificate_file!r} is invalid: {e}"
                ) from e
        if chain is not None and key is not None:
            chain_file = os.path.join(self._dir.name, f"chain-{self._generation + 1}.pem")
            fd = os.open(chain_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key.rstrip(b"\n") + b"\n" + chain)
            try:
                # Validates the pair: a key that does not match the certificate (a
                # rotation caught half-way) fails here.
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(chain_file)
            except (ssl.SSLError, OSError) as e:
                _unlink(chain_file)
                raise TlsConfigError(
                    f"{where}: certificate_file {self.certificate_file!r} / private_key_file "
                    f"{self.private_key_file!r} are invalid or do not match: {e}"
                ) from e
        self._generation += 1
        return CertificateMaterial(self._generation, chain, key, ca, chain_file)


def _watch(ref: weakref.ref[FileWatcherProvider], stop: threading.Event, dirs: list[str]) -> None:
    """The watcher thread: native file events where the OS offers them, else watchfiles'
    polling; with neither, only the refresh interval (logged)."""
    for force_polling in (False, True):
        try:
            for changes in watchfiles.watch(
                *dirs,
                watch_filter=None,  # Kubernetes rotates by renaming ..data, not our files
                debounce=_DEBOUNCE_MS,
                rust_timeout=_TICK_MS,
                yield_on_timeout=True,
                stop_event=stop,
                recursive=False,
                force_polling=force_polling,
                raise_interrupt=False,
            ):
                provider = ref()
                if provider is None:
                    return
                provider._check(bool(changes))
                del provider  # hold it only while checking: it may be collected
            return  # stop was set
        except Exception as e:  # e.g. out of inotify instances: try polling, then ticks
            log.warning("certificate files in %s: cannot watch (%s)", ", ".join(dirs), e)
    while not stop.wait(_TICK_MS / 1000):
        provider = ref()
        if provider is None:
            return
        provider._check(True)
        del provider


def _same(a: CertificateMaterial, b: CertificateMaterial) -> bool:
    return (a.cert_chain, a.private_key, a.ca_certificates) == (
        b.cert_chain,
        b.private_key,
        b.ca_certificates,
    )


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


#: Plugin name → factory(instance name, config).
PLUGINS: dict[str, Callable[[str, Mapping[str, Any]], FileWatcherProvider]] = {
    "file_watcher": FileWatcherProvider,
}


def create_provider(name: str, plugin_name: str, config: Mapping[str, Any]) -> FileWatcherProvider:
    """Instantiate bootstrap provider ``name``; an unknown plugin is a TlsConfigError."""
    factory = PLUGINS.get(plugin_name)
    if factory is None:
        raise TlsConfigError(
            f"certificate provider {name!r}: unknown plugin {plugin_name!r}; "
            f"supported: {', '.join(sorted(PLUGINS))}"
        )
    return factory(name, config)
