"""SnapshotCache: which snapshot each node sees, and who to tell when that changes."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pymesh.server.snapshot import Snapshot

__all__ = ["SnapshotCache", "Watcher"]

#: Called with the node id whose snapshot changed, or None when the default changed.
Watcher = Callable[[str | None], None]


class SnapshotCache:
    """Snapshots per node id, plus a default served to any node without its own.

    Thread-safe. Watchers are called outside the lock, on the thread that set the
    snapshot, so they must be quick (the ADS streams just enqueue a wake-up).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._default: Snapshot | None = None
        self._by_node: dict[str, Snapshot] = {}
        self._watchers: dict[int, Watcher] = {}
        self._next_id = 0

    def set_snapshot(self, snapshot: Snapshot, node_id: str | None = None) -> None:
        """Serve ``snapshot`` to ``node_id``, or to every node without its own when None."""
        with self._lock:
            if node_id is None:
                self._default = snapshot
            else:
                self._by_node[node_id] = snapshot
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
        with self._lock:
            return self._by_node.get(node_id, self._default)

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
            default = self._default.version if self._default else None
            nodes = {n: s.version for n, s in self._by_node.items()}
        return f"<SnapshotCache default={default!r} nodes={nodes!r}>"
