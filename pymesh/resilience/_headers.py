"""Envoy HeaderMatcher evaluation against a lower-case header mapping."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pymesh.xds.resources.matchers import HeaderMatcher

# absl::SimpleAtoi: optional sign and decimal digits (surrounding whitespace stripped).
_INT = re.compile(r"[+-]?[0-9]+")


def header_matches(m: HeaderMatcher, headers: Mapping[str, str]) -> bool:
    """Evaluate one matcher as Envoy's HeaderUtility::matchHeaders does.

    A missing header matches only ``present_match: false`` (or, inverted, only
    ``present_match: true``), unless ``treat_missing_header_as_empty`` makes it "".
    """
    value = headers.get(m.name)
    if value is None:
        if not m.treat_missing_header_as_empty:
            if m.invert_match:
                return m.present_match is True
            return m.present_match is False
        value = ""
    if m.present_match is not None:
        matched = m.present_match
    elif m.range_match is not None:
        digits = value.strip()
        if _INT.fullmatch(digits) is None:
            matched = False
        else:
            matched = m.range_match.start <= int(digits) < m.range_match.end
    elif m.string_match is not None:
        matched = m.string_match.matches(value)
    else:
        matched = True  # a bare name: Envoy treats it as a presence match
    return matched != m.invert_match


def headers_match(matchers: Iterable[HeaderMatcher], headers: Mapping[str, str]) -> bool:
    """True when every matcher matches (an empty list matches everything)."""
    return all(header_matches(m, headers) for m in matchers)
