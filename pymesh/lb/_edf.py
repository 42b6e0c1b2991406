"""Earliest-deadline-first scheduler, as Envoy's EdfScheduler (weighted round robin).

Each entry's next deadline is the deadline it was picked at plus ``1 / weight``; ties are
broken first-in-first-out by an insertion counter. Weights may be recomputed at every
re-insertion (least request does so). A pick is O(log n).

No lock: ``heappop`` and ``heappush`` are each one C call, atomic under the GIL, so
concurrent pickers never corrupt the heap; between a thread's pop and push another thread
sees the heap one entry short, which only makes that concurrent pick slightly less fair.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Sequence


class Edf:
    """EDF over item indices ``0..n-1``; ``weight_of(i)`` gives the weight on re-insertion."""

    __slots__ = ("_fallback", "_heap", "_n", "_order", "_weight_of")

    def __init__(
        self,
        weights: Sequence[float],
        weight_of: Callable[[int], float] | None = None,
        *,
        prepicks: int = 0,
    ) -> None:
        order = itertools.count()
        self._order = order
        self._heap: list[tuple[float, int, int]] = [
            (1.0 / w, next(order), i) for i, w in enumerate(weights) if w > 0
        ]
        heapq.heapify(self._heap)
        self._n = len(weights)
        self._fallback = itertools.count()
        static = list(weights)
        self._weight_of: Callable[[int], float] = weight_of or static.__getitem__
        # A random number of initial picks so that many clients built at the same time
        # do not all start on the same host (Envoy's createWithPicks).
        for _ in range(prepicks):
            self.pick()

    @classmethod
    def randomized(
        cls,
        weights: Sequence[float],
        rng: random.Random,
        weight_of: Callable[[int], float] | None = None,
    ) -> Edf:
        return cls(weights, weight_of, prepicks=rng.randrange(max(1, len(weights))))

    def pick(self) -> int | None:
        """The index with the earliest deadline, re-inserted with its next deadline.

        None only when there are no items. If concurrent pickers momentarily hold every
        entry, a plain rotation index is returned instead of failing the pick.
        """
        heap = self._heap
        try:
            deadline, _, index = heapq.heappop(heap)
        except IndexError:
            return next(self._fallback) % self._n if self._n else None
        weight = self._weight_of(index)
        if weight <= 0:
            weight = 1e-9  # keep the entry; a zero dynamic weight just pushes it far back
        heapq.heappush(heap, (deadline + 1.0 / weight, next(self._order), index))
        return index

    def __len__(self) -> int:
        return len(self._heap)
