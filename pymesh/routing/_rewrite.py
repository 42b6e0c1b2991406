"""Path and host rewrites, and redirect locations, as Envoy computes them."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pymesh.routing._request import RequestInfo, strip_query_and_fragment
from pymesh.routing._table import RouteDecision
from pymesh.xds.resources.matchers import compile_re2
from pymesh.xds.resources.route import RedirectAction, RegexRewrite, RouteAction, RouteMatch

_Piece = str | int  # literal text or a capture group number


@lru_cache(maxsize=256)
def _parse_rewrite(substitution: str) -> tuple[_Piece, ...]:
    r"""Split an RE2 rewrite string: ``\0``..``\9`` name groups, ``\\`` is a backslash.

    Any other backslash sequence is kept literally (Envoy rejects it at config load).
    """
    pieces: list[_Piece] = []
    text: list[str] = []
    i, n = 0, len(substitution)
    while i < n:
        c = substitution[i]
        if c == "\\" and i + 1 < n:
            nxt = substitution[i + 1]
            if nxt.isdigit() and nxt.isascii():
                if text:
                    pieces.append("".join(text))
                    text = []
                pieces.append(int(nxt))
                i += 2
                continue
            if nxt == "\\":
                text.append("\\")
                i += 2
                continue
        text.append(c)
        i += 1
    if text:
        pieces.append("".join(text))
    return tuple(pieces)


def _compiled(rr: RegexRewrite) -> Any:
    return rr.regex if rr.regex is not None else compile_re2(rr.pattern)


def re2_global_replace(regex: Any, text: str, substitution: str) -> str:
    """``RE2::GlobalReplace``: replace every non-overlapping match.

    Unlike Python's ``re.sub``, an empty match right after the previous match is skipped
    (RE2's rule), so ``x*`` on ``abxd`` gives ``-a-b-d-``.
    """
    pieces = _parse_rewrite(substitution)
    out: list[str] = []
    pos = 0
    last_end = -1
    count = 0
    n = len(text)
    while pos <= n:
        m = regex.search(text, pos)
        if m is None:
            break
        start, end = m.start(), m.end()
        if pos < start:
            out.append(text[pos:start])
        if start == last_end and start == end:
            # Disallow an empty match at the end of the last match: skip one character.
            if start < n:
                out.append(text[start])
            pos = start + 1
            continue
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
            else:
                group = m.group(piece) if piece <= regex.groups else None
                out.append(group or "")
        pos = last_end = end
        count += 1
    if count == 0:
        return text
    if pos < n:
        out.append(text[pos:])
    return "".join(out)


def _rewritten(
    match: RouteMatch, prefix_rewrite: str | None, regex_rewrite: RegexRewrite | None, path: str
) -> str:
    """Envoy's ``currentUrlPathAfterRewriteWithMatchedPath``."""
    if prefix_rewrite:
        if match.path_kind == "safe_regex":
            # A regex route's "matched prefix" is the whole path without the query.
            matched_len = len(strip_query_and_fragment(path))
        else:
            matched_len = len(match.path)
        return prefix_rewrite + path[matched_len:]
    if regex_rewrite is not None:
        bare = strip_query_and_fragment(path)
        new = re2_global_replace(_compiled(regex_rewrite), bare, regex_rewrite.substitution)
        return new + path[len(bare) :]
    return path


def rewrite_path(decision: RouteDecision, path: str) -> str:
    """The ``:path`` to send upstream (prefix_rewrite or regex_rewrite; query preserved).

    ``prefix_rewrite`` replaces the matched prefix (for ``path`` routes the whole path,
    for ``safe_regex`` routes the whole path without its query); ``regex_rewrite``
    substitutes on the path without query, then re-appends the query.
    """
    action = decision.action
    if not isinstance(action, RouteAction):
        return path
    return _rewritten(decision.route.match, action.prefix_rewrite, action.regex_rewrite, path)


def host_rewrite(decision: RouteDecision) -> str | None:
    """``host_rewrite_literal``, or None (``auto_host_rewrite`` is the caller's: it
    needs the endpoint's hostname)."""
    action = decision.action
    if isinstance(action, RouteAction) and action.host_rewrite_literal:
        return action.host_rewrite_literal
    return None


def _request_host(host: str, request_scheme: str, new_scheme: str, new_port: str) -> str:
    """Envoy's ``processRequestHost``: drop the request's port when it must go."""
    if not host:
        return host
    if host.startswith("["):
        end = host.rfind("]:")
        if end != -1:
            end += 1
    else:
        end = host.rfind(":")
    if end == -1:
        return host
    port = host[end:]
    remove = bool(new_port)
    if new_scheme != request_scheme:
        remove |= request_scheme == "https" and port == ":443"
        remove |= request_scheme == "http" and port == ":80"
    return host[:end] if remove else host


def redirect_location(decision: RouteDecision, req: RequestInfo, scheme: str) -> str:
    """The ``location`` of a redirect route for ``req`` received over ``scheme``.

    Envoy's order: the redirect's prefix/regex rewrite of the path first, then scheme,
    port, host and path replacement (``Http::Utility::newUri``); a ``path_redirect``
    with its own query keeps it regardless of ``strip_query``.
    """
    action = decision.action
    if not isinstance(action, RedirectAction):
        raise TypeError(f"route {decision.route.name!r} is not a redirect")
    path = _rewritten(decision.route.match, action.prefix_rewrite, action.regex_rewrite, req.path)
    final_scheme = action.scheme_redirect or scheme
    final_port = f":{action.port_redirect}" if action.port_redirect else ""
    if action.host_redirect:
        final_host = action.host_redirect
    else:
        final_host = _request_host(req.authority, scheme, final_scheme, final_port)
    path_redirect = action.path_redirect
    redirect_has_query = bool(path_redirect) and "?" in path_redirect  # type: ignore[operator]
    if path_redirect:
        if redirect_has_query:
            path = path_redirect
        else:
            q = path.find("?")
            path = path_redirect + (path[q:] if q != -1 else "")
    if not path.startswith("/"):
        path = "/" + path
    if action.strip_query and not redirect_has_query:
        q = path.find("?")
        if q != -1:
            path = path[:q]
    return f"{final_scheme}://{final_host}{final_port}{path}"
