"""`pymesh serve` + a mesh file: shift a canary by editing the file, clients follow live.

Run: python examples/canary_serve.py

This is what `pymesh serve mesh.yaml` does, run in a thread so the example is one
process: the control plane watches the file, and each good edit becomes a new xDS
snapshot pushed to every connected client. Here the script edits the file itself:
10% → 50% → 100% to v2.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from collections import Counter
from pathlib import Path

import httpx

import pymesh
from pymesh.errors import ConfigFileError
from pymesh.server import ROUTE_TYPE, ControlPlane, Snapshot
from pymesh.server._serve import serve
from pymesh.testing import EchoBackend, bootstrap_for

MESH_FILE = """\
services:
  reviews:
    port: 9080
    versions:
      v1: {{endpoints: ["{v1}"]}}
      v2: {{endpoints: ["{v2}"]}}
    routes:
      - split: {{v1: {w1}, v2: {w2}}}
"""


def write_atomically(path: Path, text: str) -> None:
    """Replace the file in one step, as editors do (the watcher sees one change)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, EchoBackend("v1") as v1, EchoBackend("v2") as v2:
        path = Path(tmp) / "mesh.yaml"
        write_atomically(path, MESH_FILE.format(v1=v1.address, v2=v2.address, w1=90, w2=10))

        ready: queue.Queue[ControlPlane] = queue.Queue()
        reloads: queue.Queue[Snapshot | ConfigFileError] = queue.Queue()
        stop = threading.Event()
        server = threading.Thread(
            target=serve,
            args=(path, 0),
            kwargs={"stop_event": stop, "on_ready": ready.put, "on_reload": reloads.put},
            daemon=True,
        )
        server.start()
        cp = ready.get(timeout=30)
        try:
            with (
                pymesh.Mesh(bootstrap=bootstrap_for(cp, "canary-example"), seed=4) as mesh,
                httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=10) as client,
            ):

                def measure(label: str) -> None:
                    served = Counter(client.get("http://reviews:9080/").text for _ in range(200))
                    share = 100 * served["v2"] / 200
                    print(
                        f"{label:<10} v1 {served['v1']:>3}  v2 {served['v2']:>3}  ({share:.0f}% v2)"
                    )

                measure("v2 10%")
                for w1, w2 in ((50, 50), (0, 100)):
                    write_atomically(
                        path, MESH_FILE.format(v1=v1.address, v2=v2.address, w1=w1, w2=w2)
                    )
                    result = reloads.get(timeout=30)
                    if isinstance(result, ConfigFileError):
                        raise result
                    # The edit is served; wait until this client has ACKed it.
                    cp.wait_for_ack(ROUTE_TYPE, result.version, 30, mesh.node_id)
                    measure(f"v2 {w2}%")
        finally:
            stop.set()
            server.join(10)


if __name__ == "__main__":
    main()
