"""Ring hash and Maglev tables, bit-for-bit as Envoy builds them.

Both are fed Envoy's *normalized host weights*: per priority, the hosts (healthy ones, or
all of them in panic) in Envoy's order, each with ``weight / sum(weights)`` — or, with
locality weighting, ``weight * (locality_weight / sum(locality_weights)) / sum(weights in
locality)``, localities with weight 0 skipped. The floating-point operations are done in
the same order as Envoy's C++ so the results are identical IEEE doubles.

The hash key of a host is its address string as Envoy prints it
(``Address::Instance::asString()``): ``"10.0.0.1:8080"``, IPv6 as ``"[::1]:8080"`` in
inet_ntop's canonical form. Verified against envoyproxy/envoy
``source/extensions/load_balancing_policies/ring_hash/ring_hash_lb.cc`` and
``maglev/maglev_lb.cc`` and ``common/thread_aware_lb_impl.{h,cc}`` (Envoy 1.3x):

* Ring: for each host, ``scale * weight`` entries (running sums ``current_hashes`` /
  ``target_hashes`` across hosts), entry ``i`` hashing the bytes ``f"{key}_{i}"`` with
  xxHash64 seed 0 (or MurmurHash2 — not supported here); ``scale = min(ceil(min_w *
  min_ring_size) / min_w, max_ring_size)``; the ring sorted by hash. Lookup (ketama
  binary search) = the first entry whose hash is >= the request hash, wrapping to entry
  0; retry attempt ``k`` takes the entry ``k`` places further on.
* Maglev: hosts sorted by key; ``offset = xxh64(key, seed 0) % M``, ``skip = xxh64(key,
  seed 1) % (M - 1) + 1``; the table filled round by round, a host taking a turn in round
  ``r`` unless ``r * weight < target`` (``target += max_weight`` per slot taken); lookup
  ``table[hash % M]``, retry attempt ``k`` uses ``hash ^ (2**64 - k)``.

Tables are cached by their inputs so rebuilding a picker after an unrelated change
(e.g. another cluster's update, or an ejection that is reverted) costs nothing.
"""

from __future__ import annotations

import bisect
import math
import socket
from array import array
from collections.abc import Sequence
from functools import lru_cache

import xxhash

_U64 = (1 << 64) - 1


def host_hash_key(host: str, port: int) -> str:
    """The string Envoy hashes for an endpoint: its address in ``asString()`` form."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, host)
        except OSError:
            continue
        canonical = socket.inet_ntop(family, packed)
        return f"[{canonical}]:{port}" if family == socket.AF_INET6 else f"{canonical}:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Ring:
    """A built ketama ring: sorted hashes and, in parallel, indices into the host tuple."""

    __slots__ = ("hashes", "hosts")

    def __init__(self, hashes: array[int], hosts: array[int]) -> None:
        self.hashes = hashes
        self.hosts = hosts

    def __len__(self) -> int:
        return len(self.hashes)

    def choose(self, h: int, attempt: int = 0) -> int | None:
        """Host index for hash ``h`` (Envoy's Ring::chooseHost)."""
        n = len(self.hashes)
        if n == 0:
            return None
        i = bisect.bisect_left(self.hashes, h)
        if i == n:
            i = 0
        if attempt:
            i = (i + attempt) % n
        return self.hosts[i]


@lru_cache(maxsize=32)
def build_ring(
    weighted_keys: tuple[tuple[str, float], ...],
    min_normalized_weight: float,
    min_ring_size: int,
    max_ring_size: int,
) -> Ring:
    """Envoy's RingHashLoadBalancer::Ring constructor (xxHash64)."""
    if not weighted_keys:
        return Ring(array("Q"), array("l"))
    scale = min(
        math.ceil(min_normalized_weight * min_ring_size) / min_normalized_weight,
        float(max_ring_size),
    )
    entries: list[tuple[int, int]] = []
    hash64 = xxhash.xxh64_intdigest
    current_hashes = 0.0
    target_hashes = 0.0
    for index, (key, weight) in enumerate(weighted_keys):
        prefix = key + "_"
        target_hashes += scale * weight
        i = 0
        while current_hashes < target_hashes:
            entries.append((hash64((prefix + str(i)).encode()), index))
            i += 1
            current_hashes += 1
    # Envoy uses an unstable std::sort on the hash alone; equal 64-bit hashes of distinct
    # keys do not occur in practice, so sorting by (hash, index) picks the same hosts.
    entries.sort()
    return Ring(array("Q", [e[0] for e in entries]), array("l", [e[1] for e in entries]))


class MaglevTable:
    """A built Maglev lookup table of host indices."""

    __slots__ = ("table",)

    def __init__(self, table: array[int]) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def choose(self, h: int, attempt: int = 0) -> int | None:
        table = self.table
        if not table:
            return None
        if attempt:
            h ^= (_U64 - attempt + 1) & _U64
        return table[h % len(table)]


@lru_cache(maxsize=32)
def build_maglev(
    weighted_keys: tuple[tuple[str, float], ...],
    max_normalized_weight: float,
    table_size: int,
) -> MaglevTable:
    """Envoy's MaglevTable construction; the returned indices refer to ``weighted_keys``."""
    if not weighted_keys:
        return MaglevTable(array("l"))
    m = table_size
    hash64 = xxhash.xxh64_intdigest
    order = sorted(range(len(weighted_keys)), key=lambda i: weighted_keys[i][0].encode())
    offsets = []
    skips = []
    weights = []
    for i in order:
        key = weighted_keys[i][0].encode()
        offsets.append(hash64(key) % m)
        skips.append(hash64(key, 1) % (m - 1) + 1)
        weights.append(weighted_keys[i][1])
    n = len(order)
    nexts = [0] * n
    targets = [0.0] * n
    table = [-1] * m
    filled = 0
    iteration = 1
    while filled < m:
        for j in range(n):
            if filled >= m:
                break
            if iteration * weights[j] < targets[j]:
                continue
            targets[j] += max_normalized_weight
            offset, skip, nxt = offsets[j], skips[j], nexts[j]
            c = (offset + skip * nxt) % m
            while table[c] != -1:
                nxt += 1
                c = (offset + skip * nxt) % m
            table[c] = order[j]
            nexts[j] = nxt + 1
            filled += 1
        iteration += 1
    return MaglevTable(array("l", table))


def normalized_weights(
    groups: Sequence[tuple[float, Sequence[int]]],
) -> tuple[list[tuple[int, float]], float, float]:
    """Envoy's normalizeHostWeights over ``(normalized_locality_weight, host weights)``.

    Returns ``[(group_position_running_index, normalized_weight)]`` in order, and the min
    and max normalized weight (starting from 1.0 and 0.0 as Envoy does).
    """
    out: list[tuple[int, float]] = []
    lo, hi = 1.0, 0.0
    index = 0
    for locality_weight, host_weights in groups:
        total = sum(host_weights)
        if total <= 0:
            index += len(host_weights)  # xDS forbids weight 0; never divide by zero anyway
            continue
        for w in host_weights:
            nw = w * locality_weight / total
            out.append((index, nw))
            lo = min(lo, nw)
            hi = max(hi, nw)
            index += 1
    return out, lo, hi
