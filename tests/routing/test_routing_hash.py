"""Hash policies: Envoy's per-policy inputs and its rotate-xor combination."""

from __future__ import annotations

import pytest
import re2
import xxhash
from routing_helpers import req

from pymesh.routing import compute_hash
from pymesh.routing._hash import cookie_value, xxh64
from pymesh.xds.resources.route import HashPolicy, RegexRewrite

M64 = (1 << 64) - 1
XXH64_EMPTY = 0xEF46DB3751D8E999  # xxh64("", seed 0), the reference test vector
XXH64_ABC = 0x44BC2CF5AD770999  # xxh64("abc", seed 0)


def rotl1(v: int) -> int:
    return ((v << 1) | (v >> 63)) & M64


def test_known_xxh64_vectors() -> None:
    assert xxh64("") == XXH64_EMPTY
    assert xxh64("abc") == XXH64_ABC


def test_header_policy() -> None:
    p = (HashPolicy("header", "X-User"),)
    assert compute_hash(p, req(headers={"x-user": "abc"})) == XXH64_ABC
    assert compute_hash(p, req(headers={"x-user": ""})) == XXH64_EMPTY  # present, empty
    assert compute_hash(p, req()) is None
    # stable: same input, same hash
    assert compute_hash(p, req(headers={"x-user": "bob"})) == compute_hash(
        p, req(headers={"x-user": "bob"})
    )


def test_pseudo_header_policy() -> None:
    p = (HashPolicy("header", ":path"),)
    assert compute_hash(p, req("/abc")) == xxh64("/abc")


def test_repeated_header_values_are_sorted_and_chained_for_http() -> None:
    p = (HashPolicy("header", "x"),)
    r1 = req(headers={"x": "b,a"}, repeated={"x": ("b", "a")})
    r2 = req(headers={"x": "a,b"}, repeated={"x": ("a", "b")})
    expected = xxhash.xxh64_intdigest(b"b", seed=xxhash.xxh64_intdigest(b"a"))
    assert compute_hash(p, r1) == compute_hash(p, r2) == expected
    # gRPC (A42) hashes the joined value.
    g = req(headers={"x": "b,a"}, repeated={"x": ("b", "a")}, grpc=True)
    assert compute_hash(p, g) == xxh64("b,a")


def test_header_regex_rewrite_before_hashing() -> None:
    rw = RegexRewrite(r"^(\w+)-.*$", r"\1", re2.compile(r"^(\w+)-.*$"))
    p = (HashPolicy("header", "x", regex_rewrite=rw),)
    assert compute_hash(p, req(headers={"x": "abc-123"})) == XXH64_ABC
    r = req(headers={"x": "b-1,abc-2"}, repeated={"x": ("b-1", "abc-2")})
    assert compute_hash(p, r) == xxhash.xxh64_intdigest(b"b", seed=XXH64_ABC)


@pytest.mark.parametrize(
    ("cookie", "name", "value"),
    [
        ("a=1; b=abc; c=3", "b", "abc"),
        ('b="abc"', "b", "abc"),
        ("a=1;b=abc", "b", "abc"),
        ("a=1,b=abc", "b", "abc"),  # two cookie headers joined with ","
        ("bb=1; b=2", "b", "2"),
        ("b; b=2", "b", "2"),  # a cookie without '=' is skipped
        ("b=1; b=2", "b", "1"),  # the first wins
        ("a=1", "b", None),
        ("b=", "b", ""),
        ('b="', "b", '"'),
    ],
)
def test_cookie_parsing(cookie: str, name: str, value: str | None) -> None:
    assert cookie_value(req(headers={"cookie": cookie}), name) == value


def test_cookie_policy_hashes_only_a_present_non_empty_cookie() -> None:
    p = (HashPolicy("cookie", "sid"),)
    assert compute_hash(p, req(headers={"cookie": "sid=abc"})) == XXH64_ABC
    assert compute_hash(p, req(headers={"cookie": "sid="})) is None
    assert compute_hash(p, req()) is None


def test_query_parameter_policy() -> None:
    p = (HashPolicy("query_parameter", "u"),)
    assert compute_hash(p, req("/p?u=abc&u=zzz")) == XXH64_ABC
    assert compute_hash(p, req("/p?u")) == XXH64_EMPTY
    assert compute_hash(p, req("/p")) is None


def test_source_ip_policy() -> None:
    p = (HashPolicy("source_ip"),)
    assert compute_hash(p, req(source_ip="10.0.0.1")) == xxh64("10.0.0.1")
    assert compute_hash(p, req()) is None


def test_channel_id_filter_state() -> None:
    p = (HashPolicy("filter_state", "io.grpc.channel_id"),)
    assert compute_hash(p, req(), channel_id=42) == 42
    assert compute_hash(p, req(), channel_id=-1) == M64
    assert compute_hash(p, req()) is None
    assert compute_hash((HashPolicy("filter_state", "other"),), req(), channel_id=42) is None


def test_combination_rotates_then_xors() -> None:
    p = (HashPolicy("header", "a"), HashPolicy("header", "b"), HashPolicy("header", "c"))
    r = req(headers={"a": "abc", "b": "", "c": "x"})
    expected = rotl1(rotl1(XXH64_ABC) ^ XXH64_EMPTY) ^ xxh64("x")
    assert compute_hash(p, r) == expected
    # Duplicate policies do not cancel out.
    dup = (HashPolicy("header", "a"), HashPolicy("header", "a"))
    assert compute_hash(dup, r) == rotl1(XXH64_ABC) ^ XXH64_ABC != 0
    # A policy without input is skipped without rotating.
    skip = (HashPolicy("header", "missing"), HashPolicy("header", "a"))
    assert compute_hash(skip, r) == XXH64_ABC


def test_terminal_stops_once_a_hash_exists() -> None:
    r = req(headers={"a": "abc", "b": "x"})
    p = (
        HashPolicy("header", "missing", terminal=True),
        HashPolicy("header", "a", terminal=True),
        HashPolicy("header", "b"),
    )
    assert compute_hash(p, r) == XXH64_ABC
    p2 = (
        HashPolicy("header", "a"),
        HashPolicy("header", "b", terminal=True),
        HashPolicy("header", "c"),
    )
    r2 = req(headers={"a": "abc", "b": "x", "c": "y"})
    assert compute_hash(p2, r2) == rotl1(XXH64_ABC) ^ xxh64("x")


def test_no_policies_no_hash() -> None:
    assert compute_hash((), req()) is None
