"""Embedded xDS control plane: serve xDS resources to pymesh, grpcio and Envoy clients.

Example::

    from pymesh.server import ControlPlane, load_config_file

    with ControlPlane(port=0) as cp:
        cp.set_snapshot(load_config_file("mesh.yaml"))
        print(cp.address)            # "127.0.0.1:PORT", for the bootstrap's server_uri
"""

from __future__ import annotations

import threading
from concurrent import futures
from types import TracebackType
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from pymesh.server.ads import AckRecord, AdsServicer, NackRecord, _Records
from pymesh.server.cache import SnapshotCache
from pymesh.server.config_file import compile_mesh, compile_text, load_config_file
from pymesh.server.snapshot import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Snapshot,
    SnapshotInconsistent,
)

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "AckRecord",
    "ControlPlane",
    "NackRecord",
    "Snapshot",
    "SnapshotCache",
    "SnapshotInconsistent",
    "compile_mesh",
    "compile_text",
    "load_config_file",
]


class ControlPlane:
    """A gRPC ADS server (state of the world) on a background thread pool.

    ``port=0`` asks the OS for a free port; read it from :attr:`port` after :meth:`start`.
    Each open ADS stream holds one pool worker, so at most ``max_streams`` clients can be
    connected at once (more get RESOURCE_EXHAUSTED and retry with backoff).
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        max_streams: int = 64,
        server_credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.host = host
        # TLS/mTLS for the ADS port (e.g. pymesh.security.grpc_server_credentials);
        # None serves plaintext. Clients use bootstrap channel_creds "tls" (gRFC A65).
        self._credentials = server_credentials
        self._requested_port = port
        self._max_streams = max_streams
        self.cache = SnapshotCache()
        self._records = _Records()
        self._servicer = AdsServicer(self.cache, self._records)
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._port: int | None = None

    def start(self) -> ControlPlane:
        """Bind and start serving. Returns self."""
        if self._server is not None:
            raise RuntimeError("control plane already started")
        # One worker per open stream: the SotW handler is a generator that blocks.
        self._executor = futures.ThreadPoolExecutor(
            self._max_streams, thread_name_prefix="pymesh-ads"
        )
        server = grpc.server(
            self._executor,
            maximum_concurrent_rpcs=self._max_streams,
            # grpcio sets SO_REUSEPORT by default: a second control plane on a busy port
            # would "bind" and silently share it. Fail instead, naming the port.
            options=[("grpc.so_reuseport", 0)],
        )
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self._servicer, server)
        bind = f"{self.host}:{self._requested_port}"
        if self._credentials is None:
            port = server.add_insecure_port(bind)
        else:
            port = server.add_secure_port(bind, self._credentials)
        if port == 0:
            raise OSError(f"cannot bind {self.host}:{self._requested_port}")
        server.start()
        self._server, self._port = server, port
        return self

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("control plane not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port``, usable as a bootstrap ``server_uri``."""
        return f"{self.host}:{self.port}"

    def client_bootstrap(self, node_id: str = "pymesh-client") -> dict[str, Any]:
        """A gRPC-format bootstrap (a JSON-able dict) for clients of this control plane.

        Plaintext (``insecure``) unless the server was given credentials, then ``tls``
        with the system roots; ``pymesh.Mesh(bootstrap=...)``, grpcio and istio tooling
        all read it. A wildcard host (``0.0.0.0``, ``::``) becomes the loopback address,
        which a client can connect to.
        """
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal: gRPC target syntax needs the brackets
        creds = "insecure" if self._credentials is None else "tls"
        return {
            "xds_servers": [
                {
                    "server_uri": f"{host}:{self.port}",
                    "channel_creds": [{"type": creds}],
                    "server_features": ["xds_v3"],
                }
            ],
            "node": {"id": node_id},
        }

    def set_snapshot(self, snapshot: Snapshot, node_id: str | None = None) -> None:
        """Serve ``snapshot`` to ``node_id`` (or to all nodes without their own) and push it.

        Raises :class:`SnapshotInconsistent` when it has a dangling reference.
        """
        snapshot.consistent()
        self.cache.set_snapshot(snapshot, node_id)

    @property
    def acks(self) -> list[AckRecord]:
        """Every ACK received so far (a copy)."""
        with self._records.cond:
            return list(self._records.acks)

    @property
    def nacks(self) -> list[NackRecord]:
        """Every NACK received so far (a copy)."""
        with self._records.cond:
            return list(self._records.nacks)

    def wait_for_ack(
        self, type_url: str, version: str, timeout: float = 10.0, node_id: str | None = None
    ) -> AckRecord:
        """Block until a client ACKs ``version`` of ``type_url`` (from ``node_id`` if given).

        Raises TimeoutError, mentioning NACKs seen meanwhile, when none arrives in time.
        """
        found: list[AckRecord] = []

        def ready() -> bool:
            found[:] = [
                a
                for a in self._records.acks
                if a.type_url == type_url
                and a.version == version
                and (node_id is None or a.node_id == node_id)
            ]
            return bool(found)

        with self._records.cond:
            if not self._records.cond.wait_for(ready, timeout):
                raise TimeoutError(
                    f"no ACK of {type_url} version {version!r} within {timeout}s; "
                    f"NACKs: {self._records.nacks!r}"
                )
        return found[0]

    def wait_for_nack(
        self, type_url: str, timeout: float = 10.0, node_id: str | None = None
    ) -> NackRecord:
        """Block until a client NACKs ``type_url`` (from ``node_id`` if given); TimeoutError."""
        found: list[NackRecord] = []

        def ready() -> bool:
            found[:] = [
                n
                for n in self._records.nacks
                if n.type_url == type_url and (node_id is None or n.node_id == node_id)
            ]
            return bool(found)

        with self._records.cond:
            if not self._records.cond.wait_for(ready, timeout):
                raise TimeoutError(f"no NACK of {type_url} within {timeout}s")
        return found[0]

    def stop(self, grace: float | None = 0) -> None:
        """Stop serving and end all streams; waits for the server to shut down."""
        server, self._server = self._server, None
        if server is None:
            return
        done: threading.Event = server.stop(grace)
        self._servicer.close_streams()
        done.wait(max(5.0, (grace or 0) + 5.0))
        if self._executor is not None:
            # grpc does not own the pool: release its idle workers now, not at exit.
            self._executor.shutdown(wait=False)
            self._executor = None

    def __enter__(self) -> ControlPlane:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"serving {self.host}:{self._port}" if self._server else "stopped"
        return f"<ControlPlane {state} {self.cache!r} nacks={len(self._records.nacks)}>"
