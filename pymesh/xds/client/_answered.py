"""Which subscribed names a state-of-the-world response provably answers.

A SotW response does not say which request it answers, and a server rightly ignores a
request that echoes a stale nonce, so "every name subscribed when the response arrived"
over-claims: a response to an earlier request, or a push crossing a new subscription on
the wire, says nothing about names that request did not carry. Declaring those names
absent would send a request for a real service outside the mesh.

What is certain: for a named (non-wildcard) subscription the server sends only names of
the request it last accepted, and it accepts requests in the order they were written.
So a response answers one of the requests written on this stream whose names include
every name the response carries (the *candidates*). A name missing from the response is
provably absent only if every candidate carried it. Requests written before the earliest
candidate can never be answered again, so they are forgotten.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["SentRequests"]


@dataclass(frozen=True, slots=True)
class _Entry:
    #: Every name one of the requests in this entry carried (the candidate test).
    union: frozenset[str]
    #: The names all of them carried (what a candidate entry proves).
    common: frozenset[str]
    #: More than one request: the union may cover a response none of them could have
    #: produced, so such an entry is only *possibly* a candidate.
    merged: bool = False


class SentRequests:
    """The name lists of the requests written for one type on the current stream.

    Bounded: past ``limit`` entries the two oldest merge, which keeps every inference
    sound: a merged entry is a possible candidate whenever either request was one, and
    proves only the names both carried. Its union may also cover a response that none of
    its requests could have produced, so a response proves anything only when a request
    kept whole is a candidate: then a real candidate exists, and every real one lies in
    some possible candidate entry.
    """

    __slots__ = ("_entries", "_limit")

    def __init__(self, limit: int = 64) -> None:
        self._entries: list[_Entry] = []
        self._limit = max(2, limit)

    def reset(self) -> None:
        """A new stream: the server knows nothing of earlier requests."""
        self._entries.clear()

    def record(self, names: frozenset[str]) -> None:
        """A request carrying ``names`` was written."""
        self._entries.append(_Entry(names, names))
        if len(self._entries) > self._limit:
            a, b = self._entries[0], self._entries[1]
            self._entries[0:2] = [_Entry(a.union | b.union, a.common & b.common, True)]

    def answered(self, carried: Collection[str]) -> frozenset[str]:
        """The names a response carrying ``carried`` provably answers for.

        Empty when no written request could have produced it (a server that sends
        names nobody asked for proves nothing about absence).
        """
        entries = self._entries
        first = -1
        whole = False  # a request kept whole is a candidate: a real candidate exists
        proven: frozenset[str] | None = None
        for i, entry in enumerate(entries):
            if not entry.union.issuperset(carried):
                continue
            if first < 0:
                first = i
            whole = whole or not entry.merged
            proven = entry.common if proven is None else proven & entry.common
        if proven is None or not whole:
            return frozenset()  # the does-not-exist timer decides
        del entries[:first]
        return proven
