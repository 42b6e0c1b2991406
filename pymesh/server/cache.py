"""SnapshotCache: which snapshot each node sees, at which version per type, and who to tell
when that changes."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from pymesh.server.snapshot import Snapshot

__all__ = ["Served", "SnapshotCache", "Watcher"]

#: Called with the node id whose snapshot changed, or None when the default changed.
Watcher = Callable[[str | None], None]

#: How many served snapshots per cache are remembered for :meth:`SnapshotCache.type_version`.
_HISTORY = 256


class Served:
    """A snapshot as served to one node (or to the default), with its version per type.

    A type whose resources are byte-for-byte those of the snapshot served before keeps
    that snapshot's version for the type (go-control-plane keeps a version per type too),
    so a state-of-the-world stream resends only the types a snapshot really changed: an
    endpoint change is one EDS response, not every listener, route and cluster again
    (istiod pushes only EDS then as well). Versions are worked out lazily, when a stream
    first needs a type, so the type that changed can go out before the others are hashed.
    """

    __slots__ = ("_previous", "_versions", "snapshot")

    def __init__(self, snapshot: Snapshot, previous: Served | None) -> None:
        self.snapshot = snapshot
        self._previous = previous
        self._versions: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Served {self.snapshot.version!r} types={self._versions!r}>"

    def type_version(self, type_url: str) -> str:
        """The version a stream sends ``type_url`` at (the snapshot's, or an earlier one's
        when this type did not change)."""
        v = self._versions.get(type_url)
        if v is None:
            prev = self._previous
            if prev is not None and (
                prev.snapshot is self.snapshot
                or prev.snapshot.type_digest(type_url) == self.snapshot.type_digest(type_url)
            ):
                v = prev.type_version(type_url)
            else:
                v = self.snapshot.version
            self._versions[type_url] = v
        return v

    def forget_previous(self) -> None:
        """Drop the link to the snapshot before (bounds the chain to one step); a type not
        resolved by then is served at this snapshot's own version."""
        self._previous = None


class SnapshotCache:
    """Snapshots per node id, plus a default served to any node without its own.

    Thread-safe. Watchers are called outside the lock, on the thread that set the
    snapshot, so they must be quick (the ADS streams just enqueue a wake-up).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._default: Served | None = None
        self._by_node: dict[str, Served] = {}
        self._watchers: dict[int, Watcher] = {}
        self._next_id = 0
        # (node id or None, snapshot version) -> Served, the newest last.
        self._history: collections.OrderedDict[tuple[str | None, str], Served] = (
            collections.OrderedDict()
        )

    def set_snapshot(self, snapshot: Snapshot, node_id: str | None = None) -> None:
        """Serve ``snapshot`` to ``node_id``, or to every node without its own when None."""
        with self._lock:
            if node_id is None:
                previous = self._default
                served = self._default = Served(snapshot, previous)
            else:
                previous = self._by_node.get(node_id, self._default)
                served = self._by_node[node_id] = Served(snapshot, previous)
            if previous is not None:
                previous.forget_previous()
            key = (node_id, snapshot.version)
            self._history.pop(key, None)
            self._history[key] = served
            while len(self._history) > _HISTORY:
                self._history.popitem(last=False)
            watchers = list(self._watchers.values())
        for w in watchers:
            w(node_id)

    def clear_snapshot(self, node_id: str) -> None:
        """Drop a node's own snapshot; it falls back to the default."""
        with self._lock:
            self._by_node.pop(node_id, None)
            watchers = list(self._watchers.values())
        for w in watchers:
            w(node_id)

    def get_snapshot(self, node_id: str) -> Snapshot | None:
        """The snapshot ``node_id`` should see: its own, else the default, else None."""
        served = self.served(node_id)
        return None if served is None else served.snapshot

    def served(self, node_id: str) -> Served | None:
        """What ``node_id`` is served (its own snapshot, else the default), with versions."""
        with self._lock:
            return self._by_node.get(node_id, self._default)

    def type_version(self, version: str, type_url: str, node_id: str | None = None) -> str:
        """The version streams send ``type_url`` at while snapshot ``version`` is served
        (to ``node_id``, else by default): ``version`` itself unless the type was unchanged
        from the snapshot before. ``version`` when that snapshot is not remembered."""
        with self._lock:
            served = self._history.get((node_id, version)) if node_id is not None else None
            if served is None:
                served = self._history.get((None, version))
            if served is None:
                return version
        return served.type_version(type_url)

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        """Register ``watcher``; returns a function that unregisters it."""
        with self._lock:
            wid = self._next_id
            self._next_id += 1
            self._watchers[wid] = watcher

        def cancel() -> None:
            with self._lock:
                self._watchers.pop(wid, None)

        return cancel

    def __repr__(self) -> str:
        with self._lock:
            default = self._default.snapshot.version if self._default else None
            nodes = {n: s.snapshot.version for n, s in self._by_node.items()}
        return f"<SnapshotCache default={default!r} nodes={nodes!r}>"
