"""Virtual host selection by domain, with Envoy's precedence.

Envoy (``RouteMatcher::findVirtualHost``) lower-cases the Host / ``:authority`` value and
looks it up, *port included*, in this order:

1. exact domains;
2. suffix wildcards (``*.foo.com``, ``*-bar.foo.com``), longest first;
3. prefix wildcards (``foo.*``, ``foo-*``), longest first;
4. the single ``*`` virtual host.

A wildcard never matches the empty string: the host must be strictly longer than the
wildcard's fixed part (``*-bar.foo.com`` matches ``baz-bar.foo.com``, not ``-bar.foo.com``).
The port is part of the value: with Envoy's defaults (``ignore_port_in_host_matching`` and
the HCM's ``strip_matching_host_port`` / ``strip_any_host_port`` all false) the domain
``reviews`` does not match ``reviews:9080``; list ``reviews:9080`` (or ``reviews*``) too.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pymesh.errors import ResourceInvalid
from pymesh.routing._request import ascii_lower

DomainKind = Literal["exact", "suffix_wildcard", "prefix_wildcard", "any"]

V = TypeVar("V")

#: Entries kept in the per-table authority cache before it is reset.
CACHE_SIZE = 1024


class DomainIndex(Generic[V]):
    """Immutable domain → value index; ``find`` answers ``(value, kind, domain)`` or None."""

    __slots__ = ("_any", "_cache", "_exact", "_prefixes", "_suffixes")

    def __init__(self, resource_name: str, entries: list[tuple[tuple[str, ...], V]]) -> None:
        exact: dict[str, tuple[V, DomainKind, str]] = {}
        suffixes: dict[int, dict[str, tuple[V, DomainKind, str]]] = {}
        prefixes: dict[int, dict[str, tuple[V, DomainKind, str]]] = {}
        any_host: tuple[V, DomainKind, str] | None = None
        for index, (domains, value) in enumerate(entries):
            for raw in domains:
                domain = ascii_lower(raw)
                if domain == "*":
                    if any_host is not None:
                        raise ResourceInvalid(
                            resource_name,
                            f"virtual_hosts[{index}].domains",
                            "only a single wildcard domain '*' is permitted",
                        )
                    any_host = (value, "any", raw)
                    continue
                if domain.startswith("*"):
                    table = suffixes.setdefault(len(domain) - 1, {})
                    key, kind = domain[1:], "suffix_wildcard"
                elif domain.endswith("*"):
                    table = prefixes.setdefault(len(domain) - 1, {})
                    key, kind = domain[:-1], "prefix_wildcard"
                else:
                    table, key, kind = exact, domain, "exact"
                if key in table:
                    raise ResourceInvalid(
                        resource_name,
                        f"virtual_hosts[{index}].domains",
                        f"duplicate domain {raw!r}",
                    )
                table[key] = (value, kind, raw)  # type: ignore[assignment]
        self._exact = exact
        # Longest wildcard first, as Envoy's std::map<int, ..., std::greater>.
        self._suffixes = tuple(sorted(suffixes.items(), reverse=True))
        self._prefixes = tuple(sorted(prefixes.items(), reverse=True))
        self._any = any_host
        self._cache: dict[str, tuple[V, DomainKind, str] | None] = {}

    def find(self, authority: str) -> tuple[V, DomainKind, str] | None:
        """The virtual host for ``authority``: ``(value, kind, configured domain)``."""
        cache = self._cache
        try:
            return cache[authority]
        except KeyError:
            pass
        found = self._lookup(authority)
        if len(cache) >= CACHE_SIZE:
            # Bounded: a stream of distinct hosts resets the cache instead of growing it.
            # Racing writers without a lock are fine; every entry is a pure function.
            cache.clear()
        cache[authority] = found
        return found

    def _lookup(self, authority: str) -> tuple[V, DomainKind, str] | None:
        if not self._exact and not self._suffixes and not self._prefixes:
            return self._any
        host = ascii_lower(authority)
        hit = self._exact.get(host)
        if hit is not None:
            return hit
        size = len(host)
        for length, table in self._suffixes:
            if length < size:
                hit = table.get(host[size - length :])
                if hit is not None:
                    return hit
        for length, table in self._prefixes:
            if length < size:
                hit = table.get(host[:length])
                if hit is not None:
                    return hit
        return self._any
