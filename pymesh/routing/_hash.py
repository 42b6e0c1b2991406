"""Request hash for ring hash / maglev (Envoy's ``HashPolicyImpl::generateHash``)."""

from __future__ import annotations

from collections.abc import Iterable

import xxhash

from pymesh.routing._request import RequestInfo
from pymesh.routing._rewrite import _compiled, re2_global_replace
from pymesh.xds.resources.route import HashPolicy

_MASK64 = (1 << 64) - 1
#: gRPC's filter-state key (A42): hash on a random per-channel id.
CHANNEL_ID_KEY = "io.grpc.channel_id"


def xxh64(data: str) -> int:
    """xxHash64, seed 0, of the UTF-8 bytes of ``data`` (Envoy's ``HashUtil::xxHash64``)."""
    return int(xxhash.xxh64_intdigest(data.encode()))


def cookie_value(req: RequestInfo, name: str) -> str | None:
    """Envoy's ``parseCookieValue``: the first cookie ``name``, surrounding quotes removed.

    Cookie headers joined with ``","`` are split back (a cookie value cannot hold a comma).
    """
    header = req.headers.get("cookie")
    if not header:
        return None
    for part in header.replace(",", ";").split(";"):
        if not part:
            continue
        eq = part.find("=")
        if eq == -1:
            continue  # malformed: a cookie without '='
        if part[:eq].lstrip(" ") == name:
            value = part[eq + 1 :]
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def _policy_hash(policy: HashPolicy, req: RequestInfo, channel_id: int | None) -> int | None:
    kind = policy.kind
    if kind == "header":
        name = policy.name.lower()
        value = req.header(name)
        if value is None:
            return None
        rr = policy.regex_rewrite
        values = req.repeated.get(name) if req.repeated and not req.is_grpc else None
        if values:
            # Envoy: rewrite each value, sort (order-independent), chain through the seed.
            if rr is not None:
                values = [re2_global_replace(_compiled(rr), v, rr.substitution) for v in values]
            seed = 0
            for v in sorted(values):
                seed = int(xxhash.xxh64_intdigest(v.encode(), seed))
            return seed
        # gRPC (A42) hashes the ","-joined value; for a single value both rules agree.
        if rr is not None:
            value = re2_global_replace(_compiled(rr), value, rr.substitution)
        return xxh64(value)
    if kind == "cookie":
        # Without a TTL Envoy only hashes an existing, non-empty cookie (it never sets one).
        value = cookie_value(req, policy.name)
        return xxh64(value) if value else None
    if kind == "query_parameter":
        value = req.query.get(policy.name)
        return None if value is None else xxh64(value)
    if kind == "source_ip":
        return xxh64(req.source_ip) if req.source_ip else None
    if kind == "filter_state":
        if policy.name == CHANNEL_ID_KEY and channel_id is not None:
            return channel_id & _MASK64
        return None
    return None


def compute_hash(
    policies: Iterable[HashPolicy], req: RequestInfo, channel_id: int | None = None
) -> int | None:
    """The request's 64-bit hash, or None when no policy produced one.

    Each policy that yields a value is folded in as ``rotl64(hash, 1) ^ value`` (the first
    one as is); a ``terminal`` policy stops the walk once a hash exists. ``channel_id``
    answers the ``io.grpc.channel_id`` filter state (a random number per channel).

    A repeated header (``RequestInfo.repeated``) is hashed as Envoy does for HTTP: its
    values sorted and chained through the xxHash64 seed; for gRPC requests, and when
    ``repeated`` is not given, the ``","``-joined value is hashed (gRPC's A42 rule).
    """
    result: int | None = None
    for policy in policies:
        value = _policy_hash(policy, req, channel_id)
        if value is not None:
            # Rotating first keeps duplicate policies from cancelling out (Envoy's rule).
            rotated = 0 if result is None else ((result << 1) | (result >> 63)) & _MASK64
            result = rotated ^ value
        if policy.terminal and result is not None:
            break
    return result
