"""The admin HTTP server: a small, threaded, localhost-only window into a running Mesh.

Endpoints (GET): ``/config_dump`` (``mesh.config_dump()`` as JSON), ``/clusters``
(per cluster: endpoints with health, ejection, active requests, weights, breaker
state), ``/stats`` (Prometheus text of the mesh's counters), ``/ready`` (200 when every
listener in use has a config, else 503) and ``/explain?method=&url=&h=name:value``
(``pymesh explain`` as JSON). Start it with ``mesh.start_admin()`` or the
``PYMESH_ADMIN_PORT`` environment variable.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from pymesh.errors import MeshError
from pymesh.telemetry import prometheus_text

if TYPE_CHECKING:
    from pymesh._mesh import Mesh

__all__ = ["AdminServer"]

log = logging.getLogger("pymesh.admin")


def clusters_view(mesh: Mesh) -> dict[str, Any]:
    """What ``/clusters`` serves: the config dump's clusters plus breaker counters."""
    from pymesh._mesh import _cluster_dump

    out: dict[str, Any] = {}
    for name, rt in mesh.clusters().items():
        view = _cluster_dump(rt)
        breaker = rt.breaker
        if breaker is not None:
            ov = breaker.overflow
            view["circuit_breaker"] = {
                "active_requests": breaker.active_requests,
                "active_retries": breaker.active_retries,
                "overflow": {
                    "requests": ov.requests,
                    "pending": ov.pending,
                    "retries": ov.retries,
                    "connections": ov.connections,
                },
            }
        if rt.outlier is not None:
            view["outlier"] = dict(rt.outlier.stats)
        out[name] = view
    return out


def unsupported_fields_text(mesh: Mesh) -> str:
    """The mesh's counted unsupported-field warnings in Prometheus text (for ``/stats``)."""
    name = "pymesh_xds_client_unsupported_fields_total"
    lines = [
        f"# HELP {name} Warnings for set-but-unsupported xDS fields, by resource type and "
        "field path.",
        f"# TYPE {name} counter",
    ]
    for row in mesh.config_dump().get("unsupported_fields", []):
        kind = str(row["type"]).replace("\\", "\\\\").replace('"', '\\"')
        field = str(row["field"]).replace("\\", "\\\\").replace('"', '\\"')
        labels = f'pymesh_xds_resource_type="{kind}",pymesh_xds_field="{field}"'
        lines.append(f"{name}{{{labels}}} {row['count']}")
    return "\n".join(lines) + "\n"


def ready(mesh: Mesh) -> tuple[bool, dict[str, Any]]:
    """(every listener in use has a config, the per-listener detail)."""
    listeners = mesh.config_dump().get("listeners_in_use", {})
    ok = all(v["ready"] or v["does_not_exist"] for v in listeners.values())
    return ok, listeners


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        mesh = self.server.mesh
        try:
            if url.path == "/config_dump":
                self._json(200, mesh.config_dump())
            elif url.path == "/clusters":
                self._json(200, clusters_view(mesh))
            elif url.path == "/stats":
                text = prometheus_text(mesh) + unsupported_fields_text(mesh)
                self._send(200, "text/plain; version=0.0.4", text.encode())
            elif url.path == "/ready":
                ok, listeners = ready(mesh)
                self._json(200 if ok else 503, {"ready": ok, "listeners": listeners})
            elif url.path == "/explain":
                self._explain(parse_qs(url.query))
            else:
                self._json(404, {"error": f"no such admin endpoint {url.path!r}"})
        except MeshError as exc:
            self._json(400, {"error": str(exc)})
        except Exception as exc:  # an admin page must never take the process down
            log.exception("admin %s failed", url.path)
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _explain(self, query: dict[str, list[str]]) -> None:
        from pymesh._explain_cli import _parse_headers, explain_request

        urls = query.get("url")
        if not urls:
            self._json(400, {"error": "url= is required"})
            return
        method = (query.get("method") or ["GET"])[0].upper()
        random_value = int(query["random"][0]) if "random" in query else None
        data = explain_request(
            self.server.mesh,
            method,
            urls[0],
            _parse_headers(query.get("h", [])),
            random_value=random_value,
        )
        self._json(200, data)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, "application/json", json.dumps(body, default=str).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("admin: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], mesh: Mesh) -> None:
        self.mesh = mesh
        super().__init__(address, _Handler)


class AdminServer:
    """A running admin server for one Mesh (see the module docstring for endpoints)."""

    def __init__(self, mesh: Mesh, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self._server = _Server((host, port), mesh)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="pymesh-admin",
            daemon=True,
        )
        self._thread.start()
        log.info("admin server on %s", self.address)

    @property
    def port(self) -> int:
        """The port it listens on (the OS-assigned one when started with port 0)."""
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """``host:port``, what ``pymesh status`` and ``pymesh explain --admin`` take."""
        host = self._server.server_address[0]
        return f"{host if isinstance(host, str) else host.decode()}:{self.port}"

    def __repr__(self) -> str:
        return f"<AdminServer {self.address}>"

    def close(self, timeout: float = 1.0) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)
