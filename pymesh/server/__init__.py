"""Embedded xDS control plane: serve xDS resources to pymesh, grpcio and Envoy clients.

Example::

    from pymesh.server import ControlPlane, load_config_file

    with ControlPlane(port=0) as cp:
        cp.set_snapshot(load_config_file("mesh.yaml"))
        print(cp.address)            # "127.0.0.1:PORT", for the bootstrap's server_uri
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from pymesh.server._runner import LoopServer, PortInUseError
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
    "PortInUseError",
    "Snapshot",
    "SnapshotCache",
    "SnapshotInconsistent",
    "compile_mesh",
    "compile_text",
    "load_config_file",
]


class ControlPlane:
    """A gRPC ADS server (state of the world and delta) on a background asyncio loop.

    ``port=0`` asks the OS for a free port; read it from :attr:`port` after :meth:`start`.
    Streams are coroutines (grpc.aio), not threads: one control plane holds thousands of
    clients. ``max_streams`` caps concurrent streams (None: no cap); clients over the cap get
    RESOURCE_EXHAUSTED and retry with backoff. The API is synchronous and thread-safe; all
    control planes of a process share one loop thread, ``pymesh-control-plane``.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        max_streams: int | None = None,
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
        self._server: LoopServer | None = None
        self._port: int | None = None

    def start(self) -> ControlPlane:
        """Bind and start serving. Returns self.

        Raises :class:`PortInUseError` when the port is taken (SO_REUSEPORT is off, so a
        second server cannot silently share it), MeshError for another bind failure.
        """
        if self._server is not None:
            raise RuntimeError("control plane already started")
        servicer, max_streams = self._servicer, self._max_streams

        def setup(server: grpc.aio.Server, loop: asyncio.AbstractEventLoop) -> None:
            ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)
            servicer.attach(loop)

        server = LoopServer(
            setup,
            self.host,
            self._requested_port,
            self._credentials,
            maximum_concurrent_rpcs=max_streams,
        )
        try:
            self._port = server.start()
        except BaseException:
            servicer.detach()
            raise
        self._server = server
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

    def type_version(self, version: str, type_url: str, node_id: str | None = None) -> str:
        """The version_info streams send ``type_url`` at while snapshot ``version`` is
        served: ``version``, or an earlier snapshot's when this one left the type unchanged
        (then the type is not resent)."""
        return self.cache.type_version(version, type_url, node_id)

    def versions_of(
        self, version: str, type_url: str, node_id: str | None = None
    ) -> frozenset[str]:
        """The version strings under which a client holds snapshot ``version``'s
        ``type_url``: ``version`` itself, and the version the type was sent at when that
        snapshot left it unchanged (:meth:`type_version`). What ACK/NACK waits match."""
        return frozenset((version, self.cache.type_version(version, type_url, node_id)))

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
        self,
        type_url: str,
        version: str,
        timeout: float = 10.0,
        node_id: str | None = None,
        *,
        not_found: Iterable[str] | None = None,
    ) -> AckRecord:
        """Block until a client ACKs ``version`` of ``type_url`` (from ``node_id`` if given).

        ``version`` is a snapshot's: when that snapshot left ``type_url`` as it was, the ACK
        of the version it was last sent at counts (:meth:`versions_of`).

        With ``not_found``, only an ACK of a response that reported exactly those names as
        NOT_FOUND counts. Raises TimeoutError, mentioning NACKs seen meanwhile, when none
        arrives in time.
        """
        found: list[AckRecord] = []
        missing = None if not_found is None else frozenset(not_found)

        def ready() -> bool:
            sent_at = self.versions_of(version, type_url, node_id)
            found[:] = [
                a
                for a in self._records.acks
                if a.type_url == type_url
                and a.version in sent_at
                and (node_id is None or a.node_id == node_id)
                and (missing is None or a.not_found == missing)
            ]
            return bool(found)

        with self._records.cond:
            if not self._records.cond.wait_for(ready, timeout):
                raise TimeoutError(
                    f"no ACK of {type_url} version {version!r} within {timeout}s; "
                    f"NACKs: {list(self._records.nacks)!r}"
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
        server = self._server
        if server is None:
            return
        server.stop(grace)  # refuses (and changes nothing) on the control plane's own loop
        self._server = None
        self._servicer.detach()

    @property
    def stream_count(self) -> int:
        """Open ADS streams right now."""
        return self._servicer.stream_count

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
