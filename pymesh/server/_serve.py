"""``pymesh serve mesh.yaml``: serve a mesh file and push every good edit to all clients."""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

from pymesh.errors import ConfigFileError, MeshError
from pymesh.server import ControlPlane
from pymesh.server.config_file import compile_text, read_text
from pymesh.server.snapshot import Snapshot

__all__ = ["serve"]

# How often the watcher wakes up even without a file event; each wake-up compares the file's
# content, which also catches an edit made before the OS watch was in place.
_TICK_MS = 1000


def serve(
    path: str | Path,
    port: int,
    host: str = "127.0.0.1",
    stop_event: threading.Event | None = None,
    *,
    on_ready: Callable[[ControlPlane], None] | None = None,
    on_reload: Callable[[Snapshot | ConfigFileError], None] | None = None,
    bootstrap_out: str | Path | None = None,
) -> None:
    """Serve ``path`` on ``host:port`` until ``stop_event`` is set (or Ctrl-C).

    The file's directory is watched (editors replace files rather than write them). A good
    edit becomes the new default snapshot; a bad one prints the ConfigFileError to stderr
    and the last good snapshot stays. Raises ConfigFileError when the initial file is bad.
    ``on_ready`` gets the running ControlPlane; ``on_reload`` each reload's result.

    Once listening it prints a ready bootstrap for its clients, as a shell line setting
    ``GRPC_XDS_BOOTSTRAP_CONFIG``; with ``bootstrap_out`` it writes the bootstrap to that
    file instead and prints the line setting ``GRPC_XDS_BOOTSTRAP``.
    """
    file = Path(path).resolve()
    text = read_text(file)
    snapshot = compile_text(text, str(path))
    stop = stop_event or threading.Event()
    try:
        cp = ControlPlane(port=port, host=host).start()
    except (OSError, RuntimeError) as e:
        # grpcio reports a port it cannot bind as RuntimeError (newer) or port 0 (older).
        raise MeshError(
            f"cannot listen on {host}:{port} ({e}); the port may be in use: "
            "pass another --port, or --port 0 for any free port"
        ) from e
    with cp:
        cp.set_snapshot(snapshot)
        print(f"pymesh: serving {path} (version {snapshot.version}) on {cp.address}", flush=True)
        _announce_bootstrap(cp, bootstrap_out)
        if on_ready is not None:
            on_ready(cp)
        try:
            for _changes in watchfiles.watch(
                file.parent,
                watch_filter=lambda _change, p: Path(p).resolve() == file,
                stop_event=stop,
                rust_timeout=_TICK_MS,
                yield_on_timeout=True,
                recursive=False,
                debounce=200,
            ):
                try:
                    new_text = read_text(file)
                except ConfigFileError:
                    continue  # mid-replace by an editor: the next event brings the file
                if new_text == text:
                    continue
                text = new_text
                result = _reload(cp, text, str(path))
                if on_reload is not None:
                    on_reload(result)
        except KeyboardInterrupt:
            pass


def _announce_bootstrap(cp: ControlPlane, out: str | Path | None) -> None:
    """Print (or write, then point to) the bootstrap a client needs for ``cp``."""
    bootstrap = cp.client_bootstrap()
    if out is None:
        line = json.dumps(bootstrap, separators=(",", ":"))
        print("pymesh: clients of this control plane use this bootstrap:", flush=True)
        print(f"export GRPC_XDS_BOOTSTRAP_CONFIG={shlex.quote(line)}", flush=True)
        return
    file = Path(out)
    tmp = file.with_name(f".{file.name}.tmp")
    try:
        # Write then rename: a client starting now never reads half a file.
        tmp.write_text(json.dumps(bootstrap, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, file)
    except OSError as e:
        raise MeshError(
            f"--bootstrap-out {out}: cannot write the file ({e.strerror or e}); "
            "name a file in an existing, writable directory"
        ) from e
    print(f"pymesh: bootstrap written to {out}; clients use it with:", flush=True)
    print(f"export GRPC_XDS_BOOTSTRAP={shlex.quote(str(file.resolve()))}", flush=True)


def _reload(cp: ControlPlane, text: str, source: str) -> Snapshot | ConfigFileError:
    try:
        snapshot = compile_text(text, source)
    except ConfigFileError as e:
        print(f"pymesh: {e}; still serving the last good config", file=sys.stderr, flush=True)
        return e
    cp.set_snapshot(snapshot)
    print(f"pymesh: reloaded {source} (version {snapshot.version})", flush=True)
    return snapshot
