"""xDS federation (gRFC A47): one ADS stream per server list, chosen per resource name.

A resource named ``xdstp://<authority>/...`` is fetched from that authority's
``xds_servers`` in the bootstrap (its own list, or the top-level one when it names
none); every other name from the top-level ``xds_servers``. Authorities that name the
same servers share one client, so one stream. Every client runs on the first one's
thread, so watcher callbacks stay serial on one thread as a single client's do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pymesh.bootstrap import Bootstrap, XdsServer
from pymesh.errors import MeshError, ResourceDoesNotExistError
from pymesh.xds.client._client import ResourceWatcher, XdsClient, XdsClientStats

__all__ = ["FederatedXdsClient"]


class FederatedXdsClient:
    """The xDS client a Mesh uses: :class:`XdsClient`'s watch API, routed by name.

    ``options`` are passed to every :class:`XdsClient` (resource_timeout, backoff,
    max_message_bytes).
    """

    def __init__(self, bootstrap: Bootstrap, **options: Any) -> None:
        self.bootstrap = bootstrap
        self.node_id = bootstrap.node.id
        self._options = options
        self.default = XdsClient(bootstrap, **options)
        # One warning memory for the whole mesh, whichever server a resource came from.
        self.warning_source = self.default._warning_source
        self._clients: dict[tuple[Any, ...], XdsClient] = {
            _key(tuple(bootstrap.xds_servers)): self.default
        }
        self._lock = threading.Lock()  # creating a client; never on the request path
        # Authorities referenced by bootstrap name only (checked at construction, so a
        # bootstrap whose authority has a bad server fails early).
        for authority in bootstrap.authorities.values():
            if authority.xds_servers:
                self._client(tuple(authority.xds_servers), start=False)

    def __repr__(self) -> str:
        return f"<FederatedXdsClient servers={len(self._clients)} {self.default!r}>"

    # ------------------------------------------------------------------ routing
    def _client(self, servers: tuple[XdsServer, ...], *, start: bool = True) -> XdsClient:
        key = _key(servers)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = XdsClient(
                        self.bootstrap, servers=servers, host=self.default, **self._options
                    )
                    client._warning_source = self.warning_source
                    self._clients[key] = client
        if start:
            client.start()
        return client

    def client_for(self, name: str) -> XdsClient:
        """The client whose servers serve resource ``name``."""
        return self._client(tuple(self.bootstrap.servers_for(name)))

    @property
    def clients(self) -> list[XdsClient]:
        """Every client, the top-level servers' first."""
        return list(self._clients.values())

    # ------------------------------------------------------------------ XdsClient's API
    def start(self) -> None:
        self.default.start()

    def close(self) -> None:
        for client in self.clients[1:]:
            client.close()
        self.default.close()

    def watch(self, type_url: str, name: str, watcher: ResourceWatcher) -> None:
        self.default.start()  # the host thread first
        error = unknown_authority(self.bootstrap, name)
        if error is not None:  # gRFC A47: an error for the watcher, no subscription
            self.default.submit(lambda: watcher.on_error(name, error))
            return
        self.client_for(name).watch(type_url, name, watcher)

    def cancel_watch(self, type_url: str, name: str, watcher: ResourceWatcher) -> None:
        if unknown_authority(self.bootstrap, name) is None:
            self.client_for(name).cancel_watch(type_url, name, watcher)

    def submit(self, fn: Callable[[], None]) -> None:
        self.default.submit(fn)

    @property
    def loop(self) -> Any:
        return self.default.loop

    @property
    def stats(self) -> XdsClientStats:
        """The top-level servers' client's counters (each client keeps its own)."""
        return self.default.stats

    def does_not_exist_error(self, type_url: str, name: str) -> ResourceDoesNotExistError:
        return self.default.does_not_exist_error(type_url, name)

    def config_dump(self, *, bodies: bool = False) -> dict[str, Any]:
        """The top-level client's dump; every other client's resources are added to its
        ``resources`` (each row names its ``server_uri``), and ``federation`` lists them."""
        dump = self.default.config_dump(bodies=bodies)
        for row in dump["resources"]:
            row["server_uri"] = dump["server_uri"]
        others = []
        for client in self.clients[1:]:
            if client._thread is None:
                continue  # never used
            d = client.config_dump(bodies=bodies)
            for row in d["resources"]:
                row["server_uri"] = d["server_uri"]
                dump["resources"].append(row)
            others.append({k: d[k] for k in ("server_uri", "connected", "protocol", "types")})
        dump["federation"] = others
        return dump


def _key(servers: tuple[XdsServer, ...]) -> tuple[Any, ...]:
    """Servers that are the same in every field share a client (and so a stream)."""
    return tuple(
        (s.server_uri, repr(s.channel_creds), tuple(sorted(s.server_features))) for s in servers
    )


def unknown_authority(bootstrap: Bootstrap, name: str) -> MeshError | None:
    """The error for an ``xdstp://`` name whose authority the bootstrap lacks, else None."""
    if not name.startswith("xdstp://"):
        return None
    authority = name[len("xdstp://") :].split("/", 1)[0]
    if authority in bootstrap.authorities:
        return None
    return MeshError(
        f"xDS resource {name!r} names authority {authority!r}, which is not in the "
        "bootstrap's 'authorities'; add it there",
        node_id=bootstrap.node.id,
        resource_name=name,
    )
