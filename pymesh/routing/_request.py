"""The per-request view the route table matches against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LOWER_TABLE = str.maketrans(_ASCII_UPPER, _ASCII_UPPER.lower())


def ascii_lower(s: str) -> str:
    """Lower-case ASCII letters only, as Envoy's ``absl::AsciiStrToLower``."""
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER_TABLE)


def strip_query_and_fragment(path: str) -> str:
    """``Http::PathUtil::removeQueryAndFragment``: the path up to the first ``?`` or ``#``."""
    if "?" not in path and "#" not in path:
        return path  # most paths (two C-level scans)
    end = len(path)
    q = path.find("?")
    if q != -1:
        end = q
    f = path.find("#", 0, end)
    if f != -1:
        end = f
    return path[:end] if end != len(path) else path


def parse_query_first_values(path: str) -> dict[str, str]:
    """Envoy's ``QueryParamsMulti::parseQueryString`` reduced to first values.

    No percent-decoding (route matching and hash policies see raw values); a parameter
    without ``=`` has the empty value; a repeated parameter keeps its first value.
    The fragment, if any, is not part of the query.
    """
    q = path.find("?")
    if q == -1:
        return {}
    query = path[q + 1 :]
    f = query.find("#")
    if f != -1:
        query = query[:f]
    params: dict[str, str] = {}
    for param in query.split("&"):
        if not param:
            continue
        name, sep, value = param.partition("=")
        if name not in params:
            params[name] = value if sep else ""
    return params


class RequestInfo:
    """What routing needs from a request.

    ``path`` is the raw ``:path`` including the query string; ``headers`` has lower-case
    names, repeated headers joined with ``","``. ``authority`` is the Host /
    ``:authority`` value. The query string and the bare path are derived lazily and
    cached on the instance.

    ``repeated`` optionally gives the individual values of headers that occur more than
    once (lower-case name -> values in order). Envoy 1.40 matches a repeated header
    value by value (a string or range matcher matches if *any* value does; ``invert_match``
    inverts that) and hashes the sorted values; without ``repeated`` the joined value is
    used, which agrees with Envoy for every header that occurs once.
    """

    __slots__ = (
        "_bare_path",
        "_query",
        "authority",
        "headers",
        "is_grpc",
        "method",
        "path",
        "repeated",
        "source_ip",
    )

    def __init__(
        self,
        method: str,
        authority: str,
        path: str,
        headers: Mapping[str, str],
        is_grpc: bool = False,
        source_ip: str = "",
        repeated: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.method = method
        self.authority = authority
        self.path = path
        self.headers = headers
        self.is_grpc = is_grpc
        self.source_ip = source_ip
        self.repeated = repeated
        self._bare_path: str | None = None
        self._query: dict[str, str] | None = None

    @property
    def bare_path(self) -> str:
        """The path without query string and fragment (what path matchers see)."""
        bare = self._bare_path
        if bare is None:
            bare = self._bare_path = strip_query_and_fragment(self.path)
        return bare

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (first value of each), parsed on first use."""
        query = self._query
        if query is None:
            query = self._query = parse_query_first_values(self.path)
        return query

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (lower-case), or None.

        ``:path``, ``:authority`` (also ``host``) and ``:method`` come from the fields.
        """
        if name[:1] == ":":
            if name == ":path":
                return self.path
            if name == ":authority":
                return self.authority
            if name == ":method":
                return self.method
        elif name == "host":
            # Envoy keeps Host as :authority; a matcher on "host" sees it (Envoy 1.40).
            return self.authority
        return self.headers.get(name)

    def __repr__(self) -> str:
        return (
            f"RequestInfo(method={self.method!r}, authority={self.authority!r}, "
            f"path={self.path!r}, headers={dict(self.headers)!r}, is_grpc={self.is_grpc!r})"
        )
