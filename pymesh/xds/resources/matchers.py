"""Matchers shared by routes, TLS SAN checks and faults (frozen, precompiled).

Regexes are compiled with google-re2 (RE2 semantics, linear time) at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import re2

StringMatchKind = Literal["exact", "prefix", "suffix", "contains", "safe_regex"]


def compile_re2(pattern: str) -> Any:
    """Compile ``pattern`` with RE2; raises ``re2.error`` for an invalid pattern."""
    return re2.compile(pattern)


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """envoy.type.matcher.v3.StringMatcher. ``safe_regex`` is a full match."""

    kind: StringMatchKind
    value: str
    ignore_case: bool = False
    regex: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, kind: StringMatchKind, value: str, ignore_case: bool = False) -> StringMatcher:
        return cls(kind, value, ignore_case, compile_re2(value) if kind == "safe_regex" else None)

    def matches(self, s: str) -> bool:
        kind = self.kind
        if kind == "safe_regex":
            return self.regex.fullmatch(s) is not None
        value = self.value
        if self.ignore_case:
            s = s.lower()
            value = value.lower()
        if kind == "exact":
            return s == value
        if kind == "prefix":
            return s.startswith(value)
        if kind == "suffix":
            return s.endswith(value)
        return value in s


@dataclass(frozen=True, slots=True)
class Int64Range:
    """[start, end): envoy.type.v3.Int64Range."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """envoy.config.route.v3.HeaderMatcher.

    Exactly one of ``string_match``, ``range_match`` or ``present_match`` is set;
    legacy exact/prefix/suffix/contains/safe_regex fields are folded into
    ``string_match`` by the parser.
    """

    name: str  # lower-cased
    string_match: StringMatcher | None = None
    range_match: Int64Range | None = None
    present_match: bool | None = None
    invert_match: bool = False
    treat_missing_header_as_empty: bool = False


@dataclass(frozen=True, slots=True)
class QueryParameterMatcher:
    """envoy.config.route.v3.QueryParameterMatcher."""

    name: str
    string_match: StringMatcher | None = None
    present_match: bool | None = None


@dataclass(frozen=True, slots=True)
class FractionalPercent:
    """envoy.type.v3.FractionalPercent; ``denominator`` is 100, 10_000 or 1_000_000."""

    numerator: int
    denominator: int = 100

    def as_fraction(self) -> float:
        return min(self.numerator, self.denominator) / self.denominator
