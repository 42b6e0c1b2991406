"""Warnings for set-but-unsupported fields: once per (resource, version, field), bounded.

The parsers report each unsupported field through :func:`report`. The xDS client parses
every resource inside :func:`collecting` with the response's ``version_info``; the
warnings of a resource are then logged only if it parses (a rejected resource is NACKed
with its own message, and nothing of it is "ignored"), and each (resource type, resource
name, version, field path) is logged once: a re-sent identical version is quiet, a new
version that still carries the field warns again, once.

Memory stays bounded: per resource only the fields warned for its *latest* version are
remembered (a new version replaces the entry), and at most :data:`MAX_RESOURCES`
resources are remembered, least recently warned first out (such a resource would warn
once more if the same version were re-sent after its eviction).

Every logged warning is also counted, per source, resource type and field path (indices
stripped, so ``virtual_hosts[3].cors`` counts as ``virtual_hosts[].cors``):
:func:`counts` feeds the ``pymesh.xds_client.unsupported_fields`` metric, the admin
``/stats`` page and the config dump (``pymesh status``). The count grows by one each
time a resource version carrying the field is accepted, exactly when the log says so.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = [
    "MAX_RESOURCES",
    "WarnedFields",
    "collecting",
    "counts",
    "counts_dump",
    "report",
    "reset",
]

log = logging.getLogger("pymesh.xds")

#: How many resources' warned field sets are kept before the least recent is forgotten.
MAX_RESOURCES = 4096

# Indices are stripped for de-duplication: a field set on 500 routes of one route config
# is one warning per version (naming the first occurrence), not 500.
_INDEX = re.compile(r"\[\d+\]|\[\"[^\"]*\"\]")


class WarnedFields:
    """Which (resource, version, field path) warnings were already logged; LRU-bounded.

    Keyed by ``(source, kind, name)``: ``source`` separates xDS clients of one process
    (different control planes may serve the same name with unrelated versions).
    Thread-safe: several meshes parse on their own xDS threads.
    """

    def __init__(self, max_resources: int = MAX_RESOURCES) -> None:
        self.max_resources = max_resources
        self._lock = threading.Lock()
        self._by_resource: OrderedDict[tuple[str, str, str], tuple[str | None, set[str]]] = (
            OrderedDict()
        )

    def first_time(
        self, source: str, kind: str, name: str, version: str | None, field_path: str
    ) -> bool:
        """Record the warning; True if it was not logged before for this version."""
        key = (source, kind, name)
        field_key = _INDEX.sub("[]", field_path)
        with self._lock:
            entry = self._by_resource.get(key)
            if entry is None or entry[0] != version:
                # A new version supersedes the old one: its fields are forgotten.
                entry = (version, set())
                self._by_resource[key] = entry
            self._by_resource.move_to_end(key)
            while len(self._by_resource) > self.max_resources:
                self._by_resource.popitem(last=False)
            if field_key in entry[1]:
                return False
            entry[1].add(field_key)
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_resource)

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._by_resource.clear()


_warned = WarnedFields()

# (source, resource type, field path without indices) → warnings logged. Bounded by the
# number of distinct field paths the table can warn about, per xDS client.
_counts: dict[tuple[str, str, str], int] = {}
_counts_lock = threading.Lock()


def counts(source: str | None = None) -> dict[tuple[str, str], int]:
    """Warnings logged so far, by (resource type, field path); one source or all."""
    out: dict[tuple[str, str], int] = {}
    with _counts_lock:
        items = list(_counts.items())
    for (src, kind, field_key), n in items:
        if source is None or src == source:
            out[(kind, field_key)] = out.get((kind, field_key), 0) + n
    return out


def counts_dump(source: str | None = None) -> list[dict[str, object]]:
    """:func:`counts` as JSON-able rows ``{"type", "field", "count"}``, most frequent first."""
    rows = sorted(counts(source).items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"type": kind, "field": f, "count": n} for (kind, f), n in rows]


@dataclass
class _Scope:
    source: str
    version: str
    # (kind, name, field, note)
    pending: list[tuple[str, str, str, str]] = field(default_factory=list)


_scope: ContextVar[_Scope | None] = ContextVar("pymesh_xds_warning_scope", default=None)


def report(kind: str, name: str, field_path: str, note: str = "") -> None:
    """A parser found ``field_path`` set but unsupported in resource ``kind`` ``name``.

    ``note`` says what pymesh does instead (the field table's note).

    Inside :func:`collecting` the warning waits for the resource to parse; outside it
    (a direct ``parse_*`` call) it is logged now, once per resource and field.
    """
    scope = _scope.get()
    if scope is not None:
        scope.pending.append((kind, name, field_path, note))
        return
    _emit("", kind, name, None, field_path, note)


@contextlib.contextmanager
def collecting(source: str, version: str) -> Iterator[None]:
    """Parse one resource of ``version`` (the response's ``version_info``) from ``source``.

    On a normal exit the collected warnings are logged (once per resource version and
    field); when parsing raises (the resource is NACKed) they are dropped.
    """
    scope = _Scope(source, version)
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)
    for kind, name, field_path, note in scope.pending:
        _emit(source, kind, name, version, field_path, note)


def reset() -> None:
    """Forget every warning logged so far, and their counts (for tests)."""
    _warned.clear()
    with _counts_lock:
        _counts.clear()


def _emit(
    source: str, kind: str, name: str, version: str | None, field_path: str, note: str
) -> None:
    if not _warned.first_time(source, kind, name, version, field_path):
        return
    key = (source, kind, _INDEX.sub("[]", field_path))
    with _counts_lock:
        _counts[key] = _counts.get(key, 0) + 1
    where = f"{kind} {name!r}" if version is None else f"{kind} {name!r} version {version!r}"
    log.warning(
        "%s: field %s is set but not supported by pymesh; it is ignored (%s). Logged once "
        "per resource version",
        where,
        field_path,
        f"pymesh: {note}" if note else "pymesh behaves as if it were unset",
    )
