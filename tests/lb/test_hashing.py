"""Ring hash and maglev: Envoy's table construction, stability and weighting."""

from __future__ import annotations

import random
from collections import Counter

import xxhash

from pymesh.lb import host_hash_key
from pymesh.lb._hashing import build_maglev, build_ring, normalized_weights
from pymesh.xds.resources.endpoint import Endpoint
from tests.lb._helpers import cla, eps, picker


def _keys(rng: random.Random, n: int) -> list[int]:
    return [rng.getrandbits(64) for _ in range(n)]


def test_hash_key_is_envoy_address_string() -> None:
    assert host_hash_key("10.0.0.1", 8080) == "10.0.0.1:8080"
    assert host_hash_key("0:0::1", 80) == "[::1]:80"
    assert host_hash_key("FE80:0:0:0:0:0:0:1", 443) == "[fe80::1]:443"
    assert host_hash_key("::ffff:1.2.3.4", 1) == "[::ffff:1.2.3.4]:1"


def test_ring_entries_are_xxhash_of_address_underscore_index() -> None:
    ring = build_ring((("10.0.0.1:80", 1.0),), 1.0, 4, 8 * 1024 * 1024)
    expected = sorted(xxhash.xxh64_intdigest(f"10.0.0.1:80_{i}".encode()) for i in range(4))
    assert list(ring.hashes) == expected
    assert set(ring.hosts) == {0}


def test_ring_size_follows_envoy_scale() -> None:
    weighted, lo, _ = normalized_weights([(1.0, [1, 1, 1])])
    keys = tuple((f"10.0.0.{i}:80", w) for i, w in weighted)
    ring = build_ring(keys, lo, 1024, 8 * 1024 * 1024)
    # ceil(1/3 * 1024) = 342 hashes per host.
    assert Counter(ring.hosts) == {0: 342, 1: 342, 2: 342}
    # 1000 hosts: min 1024 → 2 per host.
    weighted, lo, _ = normalized_weights([(1.0, [1] * 1000)])
    ring = build_ring(tuple((f"h{i}:1", w) for i, w in weighted), lo, 1024, 8 * 1024 * 1024)
    assert len(ring) == 2000
    # max_ring_size caps the scale; weights stay proportional.
    weighted, lo, _ = normalized_weights([(1.0, [1, 3])])
    ring = build_ring(tuple((f"h{i}:1", w) for i, w in weighted), lo, 4096, 2048)
    assert Counter(ring.hosts) == {0: 512, 1: 1536}


def test_ring_lookup_is_first_entry_at_or_above_hash_wrapping() -> None:
    ring = build_ring((("a:1", 0.5), ("b:1", 0.5)), 0.5, 4, 100)
    hashes = list(ring.hashes)
    for j, h in enumerate(hashes):
        assert ring.choose(h) == ring.hosts[j]
        assert ring.choose(h - 1) == ring.hosts[j] if j == 0 or hashes[j - 1] < h - 1 else True
    assert ring.choose(hashes[-1] + 1) == ring.hosts[0]  # wraps
    assert ring.choose(0) == ring.hosts[0]
    assert ring.choose(hashes[0], attempt=1) == ring.hosts[1]  # retry: next entry


def test_ring_hash_same_key_same_host_and_weighting() -> None:
    endpoints = (
        Endpoint("10.0.0.1", 80, weight=1),
        Endpoint("10.0.0.2", 80, weight=2),
        Endpoint("10.0.0.3", 80, weight=3),
    )
    pk = picker(cla((endpoints, 0)), "ring_hash")
    pk2 = picker(cla((endpoints, 0)), "ring_hash", seed=99)
    keys = _keys(random.Random(5), 30000)
    chosen = [pk.pick(k) for k in keys]
    assert chosen == [pk2.pick(k) for k in keys]  # deterministic, independent of rng
    counts = Counter(e.weight for e in chosen if e is not None)
    for w in (1, 2, 3):
        assert abs(counts[w] / len(keys) - w / 6) < 0.05


def test_ring_hash_minimal_disruption_on_removal() -> None:
    endpoints = eps("10.0.0", 10)
    before = picker(cla((endpoints, 0)), "ring_hash")
    after = picker(cla((endpoints[:-1], 0)), "ring_hash")
    keys = _keys(random.Random(6), 20000)
    moved_from_survivors = 0
    survivors = 0
    for k in keys:
        a, b = before.pick(k), after.pick(k)
        assert a is not None and b is not None
        if a == endpoints[-1]:
            assert b != a
        else:
            survivors += 1
            moved_from_survivors += a != b
    # Survivors gain ring entries (scale changes) but nearly all their keys stay put.
    assert moved_from_survivors / survivors < 0.1


def test_maglev_table_structure() -> None:
    keys = (("b:1", 0.5), ("a:1", 0.5))
    table = build_maglev(keys, 0.5, 7)
    # Hosts are processed in key order; the first one ("a:1", index 1) takes its offset.
    offset_a = xxhash.xxh64_intdigest(b"a:1") % 7
    assert table.table[offset_a] == 1
    assert sorted(Counter(table.table).values()) == [3, 4]
    # Retry attempts perturb the hash with ~attempt+1.
    h = 12345
    assert table.choose(h, 1) == table.table[(h ^ ((1 << 64) - 1)) % 7]


def test_maglev_weights_and_stability() -> None:
    endpoints = (
        Endpoint("10.0.0.1", 80, weight=1),
        Endpoint("10.0.0.2", 80, weight=2),
        Endpoint("10.0.0.3", 80, weight=3),
    )
    pk = picker(cla((endpoints, 0)), "maglev")
    counts = Counter(pk.pick(k).weight for k in range(65537))  # type: ignore[union-attr]
    for w in (1, 2, 3):
        assert abs(counts[w] / 65537 - w / 6) < 0.01
    same = picker(cla((endpoints[::-1], 0)), "maglev")  # host order does not matter
    assert all(pk.pick(k) == same.pick(k) for k in range(0, 10**6, 997))


def test_maglev_minimal_disruption_on_removal() -> None:
    endpoints = eps("10.0.0", 10)
    before = picker(cla((endpoints, 0)), "maglev", table_size=5003)
    after = picker(cla((endpoints[:-1], 0)), "maglev", table_size=5003)
    moved = survivors = 0
    for k in _keys(random.Random(8), 20000):
        a, b = before.pick(k), after.pick(k)
        if a != endpoints[-1]:
            survivors += 1
            moved += a != b
        else:
            assert b != a
    assert moved / survivors < 0.1


def test_tables_are_cached_by_input() -> None:
    endpoints = eps("10.0.0", 50)
    build_maglev.cache_clear()
    picker(cla((endpoints, 0)), "maglev")
    picker(cla((endpoints, 0)), "maglev", seed=3)
    info = build_maglev.cache_info()
    assert info.misses == 1 and info.hits == 1


def test_ring_hash_panic_and_health() -> None:
    healthy = eps("10.0.0", 3)
    sick = eps("10.0.1", 2, health="UNHEALTHY")
    pk = picker(cla((healthy + sick, 0)), "ring_hash")
    assert {pk.pick(k) for k in _keys(random.Random(2), 3000)} == set(healthy)
    sick4 = eps("10.0.1", 4, health="UNHEALTHY")
    panicked = picker(cla((healthy[:1] + sick4, 0)), "ring_hash")
    assert panicked.panic == (True,)
    assert {panicked.pick(k) for k in _keys(random.Random(3), 5000)} == set(healthy[:1] + sick4)


def test_hash_key_none_uses_random() -> None:
    pk = picker(cla((eps("10.0.0", 4), 0)), "ring_hash")
    assert len({pk.pick() for _ in range(400)}) == 4


def test_normalized_weights_match_envoy_arithmetic() -> None:
    weighted, lo, hi = normalized_weights([(0.25, [1, 3]), (0.0, [0]), (0.75, [2])])
    assert weighted == [(0, 1 * 0.25 / 4), (1, 3 * 0.25 / 4), (3, 2 * 0.75 / 2)]
    assert (lo, hi) == (0.0625, 0.75)
