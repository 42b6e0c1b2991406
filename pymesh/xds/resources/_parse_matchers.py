"""Parsers for envoy.type.matcher.v3 / route HeaderMatcher / regex rewrites."""

from __future__ import annotations

from typing import Any

from pymesh.xds.resources._common import Ctx, join
from pymesh.xds.resources.matchers import (
    HeaderMatcher,
    Int64Range,
    QueryParameterMatcher,
    StringMatcher,
    StringMatchKind,
    compile_re2,
)
from pymesh.xds.resources.route import RegexRewrite


def regex(ctx: Ctx, pattern: str, path: str) -> Any:
    """Compile an RE2 pattern; an invalid one rejects the resource."""
    if not pattern:
        ctx.fail(path, "regex must not be empty")
    try:
        return compile_re2(pattern)
    except Exception as exc:  # re2.error
        ctx.fail(
            path,
            f"invalid RE2 regex {pattern!r}: {exc}; use RE2 syntax "
            "(no backreferences or lookaround)",
        )


def regex_matcher(ctx: Ctx, msg: Any, path: str) -> tuple[str, Any]:
    """envoy.type.matcher.v3.RegexMatcher → (pattern, compiled)."""
    compiled = regex(ctx, msg.regex, join(path, "regex"))
    ctx.check(msg, path)
    return msg.regex, compiled


def string_matcher(ctx: Ctx, msg: Any, path: str) -> StringMatcher:
    """envoy.type.matcher.v3.StringMatcher → StringMatcher (regexes precompiled)."""
    which = msg.WhichOneof("match_pattern")
    ignore_case = bool(msg.ignore_case)
    if which == "custom":
        ctx.fail(join(path, "custom"), "custom string matchers are not supported")
    ctx.check(msg, path)
    if which == "safe_regex":
        pattern, compiled = regex_matcher(ctx, msg.safe_regex, join(path, "safe_regex"))
        return StringMatcher("safe_regex", pattern, ignore_case, compiled)
    if which in ("exact", "prefix", "suffix", "contains"):
        value = getattr(msg, which)
        if which != "exact" and not value:
            ctx.fail(join(path, which), f"{which} must not be empty")
        kind: StringMatchKind = which
        return StringMatcher(kind, value, ignore_case)
    ctx.fail(path, "one of exact, prefix, suffix, contains or safe_regex is required")


def header_matcher(ctx: Ctx, msg: Any, path: str) -> HeaderMatcher:
    """envoy.config.route.v3.HeaderMatcher; legacy fields folded into string_match.

    No match specifier at all means a presence match (Envoy).
    """
    name = msg.name.lower()
    if not name:
        ctx.fail(join(path, "name"), "header name must not be empty")
    which = msg.WhichOneof("header_match_specifier")
    string_match: StringMatcher | None = None
    range_match: Int64Range | None = None
    present: bool | None = None
    if which == "string_match":
        string_match = string_matcher(ctx, msg.string_match, join(path, "string_match"))
    elif which == "safe_regex_match":
        p = join(path, "safe_regex_match")
        pattern, compiled = regex_matcher(ctx, msg.safe_regex_match, p)
        string_match = StringMatcher("safe_regex", pattern, False, compiled)
    elif which in ("exact_match", "prefix_match", "suffix_match", "contains_match"):
        value = getattr(msg, which)
        kind: StringMatchKind = which.removesuffix("_match")
        if kind != "exact" and not value:
            ctx.fail(join(path, which), f"{which} must not be empty")
        string_match = StringMatcher(kind, value)
    elif which == "range_match":
        # start >= end is accepted (it matches nothing), as Envoy does.
        range_match = Int64Range(int(msg.range_match.start), int(msg.range_match.end))
        ctx.check(msg.range_match, join(path, "range_match"))
    elif which == "present_match":
        present = bool(msg.present_match)
    else:
        present = True
    ctx.check(msg, path)
    return HeaderMatcher(
        name=name,
        string_match=string_match,
        range_match=range_match,
        present_match=present,
        invert_match=bool(msg.invert_match),
        treat_missing_header_as_empty=bool(msg.treat_missing_header_as_empty),
    )


def query_parameter_matcher(ctx: Ctx, msg: Any, path: str) -> QueryParameterMatcher:
    """envoy.config.route.v3.QueryParameterMatcher (no specifier: presence match)."""
    if not msg.name:
        ctx.fail(join(path, "name"), "query parameter name must not be empty")
    which = msg.WhichOneof("query_parameter_match_specifier")
    ctx.check(msg, path)
    if which == "string_match":
        sm = string_matcher(ctx, msg.string_match, join(path, "string_match"))
        return QueryParameterMatcher(msg.name, string_match=sm)
    if which == "present_match":
        return QueryParameterMatcher(msg.name, present_match=bool(msg.present_match))
    return QueryParameterMatcher(msg.name, present_match=True)


def regex_rewrite(ctx: Ctx, msg: Any, path: str) -> RegexRewrite:
    """envoy.type.matcher.v3.RegexMatchAndSubstitute."""
    if not msg.HasField("pattern"):
        ctx.fail(join(path, "pattern"), "pattern is required")
    pattern, compiled = regex_matcher(ctx, msg.pattern, join(path, "pattern"))
    ctx.check(msg, path)
    return RegexRewrite(pattern, msg.substitution, compiled)
