"""Precompiled header mutations (request_headers_to_add / _remove at every level).

Envoy evaluates the levels from most to least specific by default
(``RouteConfiguration.most_specific_header_mutations_wins`` is false): weighted cluster,
route, virtual host, route configuration. So with ``OVERWRITE_IF_EXISTS_OR_ADD`` the
*least* specific level's value is the one left standing, and appended values appear in
that order.

Within one level (``HeaderParser::evaluateHeaders``): removals first; then every
addition is decided against the headers as they were after the removals (so
``ADD_IF_ABSENT`` / ``OVERWRITE_IF_EXISTS`` do not see values added by the same level);
then all overwrites are applied (each removes every value of the name and appends the new
one), then all appends. Values that are empty are skipped unless ``keep_empty_value``.

Values are used literally: Envoy's substitution formatters (``%REQ(x)%``,
``%UPSTREAM_REMOTE_ADDRESS%``, ...) are not expanded.
"""

from __future__ import annotations

from collections.abc import Iterable

from pymesh.xds.resources.route import HeaderOps, HeaderValueOption

_APPEND, _ADD_IF_ABSENT, _OVERWRITE_OR_ADD, _OVERWRITE_IF_EXISTS = 0, 1, 2, 3
_ACTIONS = {
    "APPEND_IF_EXISTS_OR_ADD": _APPEND,
    "ADD_IF_ABSENT": _ADD_IF_ABSENT,
    "OVERWRITE_IF_EXISTS_OR_ADD": _OVERWRITE_OR_ADD,
    "OVERWRITE_IF_EXISTS": _OVERWRITE_IF_EXISTS,
}

_Add = tuple[str, str, int]  # (lower-case key, value, action)
_Stage = tuple[frozenset[str], tuple[_Add, ...], bool]  # removes, adds, needs presence check


def _compile_adds(options: Iterable[HeaderValueOption]) -> tuple[_Add, ...]:
    return tuple(
        (o.key.lower(), o.value, _ACTIONS[o.append_action])
        for o in options
        # An empty value is dropped unless keep_empty_value (Envoy's add_if_empty).
        if o.value or o.keep_empty_value
    )


class HeaderMutation:
    """An ordered list of per-level header edits; immutable, shared by all requests."""

    __slots__ = ("_stages",)

    def __init__(self, stages: tuple[_Stage, ...]) -> None:
        self._stages = stages

    @classmethod
    def request(cls, levels: Iterable[HeaderOps]) -> HeaderMutation:
        """Request-header edits for ``levels`` given most specific first."""
        return cls._build(
            (
                frozenset(n.lower() for n in ops.request_headers_to_remove),
                ops.request_headers_to_add,
            )
            for ops in levels
        )

    @classmethod
    def response(cls, levels: Iterable[HeaderOps]) -> HeaderMutation:
        """Response-header edits for ``levels`` given most specific first."""
        return cls._build(
            (
                frozenset(n.lower() for n in ops.response_headers_to_remove),
                ops.response_headers_to_add,
            )
            for ops in levels
        )

    @classmethod
    def _build(
        cls, levels: Iterable[tuple[frozenset[str], tuple[HeaderValueOption, ...]]]
    ) -> HeaderMutation:
        stages: list[_Stage] = []
        for removes, options in levels:
            adds = _compile_adds(options)
            if removes or adds:
                needs_presence = any(a[2] in (_ADD_IF_ABSENT, _OVERWRITE_IF_EXISTS) for a in adds)
                stages.append((removes, adds, needs_presence))
        # One shared empty mutation: most routes edit no headers.
        return cls(tuple(stages)) if stages else NO_MUTATION

    @property
    def empty(self) -> bool:
        """True when applying changes nothing."""
        return not self._stages

    def apply(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Return a new header list (lower-case names) with the edits applied."""
        out = list(headers)
        for removes, adds, needs_presence in self._stages:
            if removes:
                out = [h for h in out if h[0] not in removes]
            if not adds:
                continue
            present = {h[0] for h in out} if needs_presence else frozenset()
            overwrite: list[tuple[str, str]] = []
            append: list[tuple[str, str]] = []
            for key, value, action in adds:
                if action == _APPEND:
                    append.append((key, value))
                elif action == _OVERWRITE_OR_ADD:
                    overwrite.append((key, value))
                elif action == _ADD_IF_ABSENT:
                    if key not in present:
                        append.append((key, value))
                elif key in present:  # OVERWRITE_IF_EXISTS
                    overwrite.append((key, value))
            for key, value in overwrite:
                out = [h for h in out if h[0] != key]
                out.append((key, value))
            out.extend(append)
        return out

    def __repr__(self) -> str:
        return f"HeaderMutation(stages={len(self._stages)})"


NO_MUTATION = HeaderMutation(())
