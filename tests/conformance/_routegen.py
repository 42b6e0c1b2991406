"""Random route tables and requests for the Envoy differential test (deterministic seeds).

Everything is drawn from small vocabularies so that generated matchers and generated
requests collide often: most requests match some route, many only after earlier routes
fail on one condition, which is what exercises first-match-wins ordering.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2, range_pb2

PATHS = [
    "/",
    "/api",
    "/api/",
    "/api/v1",
    "/api/v1/users",
    "/API/v1",
    "/apix",
    "/web/index",
    "/web",
    "/static/a.css",
    "/users/42",
    "/users/abc",
    "/health",
]
HEADER_NAMES = ["x-user", "x-env", "x-num", "x-flag"]
HEADER_VALUES = ["jason", "JASON", "bob", "prod", "staging", "canary-prod", "7", "42", "150", ""]
QUERY_KEYS = ["q", "debug", "v"]
QUERY_VALUES = ["1", "true", "abc", ""]
DOMAINS = ["diff.test", "api.diff.test", "web.diff.test", "other.test"]
VHOST_DOMAINS = [
    ["diff.test"],
    ["*.diff.test"],
    ["api.*"],
    ["*"],
    ["web.diff.test", "www.diff.test"],
]
REGEXES = ["/api/v[0-9]+(/.*)?", "/users/[0-9]+", ".*\\.css", "/(web|static)/.*", "[a-z/]+"]


@dataclass
class GeneratedRequest:
    host: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"Host={self.host} {self.path} {self.headers}"


def _string_matcher(r: random.Random) -> string_pb2.StringMatcher:
    kind = r.choice(["exact", "prefix", "suffix", "contains", "safe_regex"])
    ignore_case = r.random() < 0.3 and kind != "safe_regex"
    value = r.choice(HEADER_VALUES[:-1])
    if kind == "prefix":
        value = value[: max(1, len(value) // 2)]
    elif kind == "suffix":
        value = value[len(value) // 2 :]
    elif kind == "contains":
        value = value[1:3] or value
    if kind == "safe_regex":
        pattern = r.choice(["[a-z]+", "[0-9]+", "(jason|bob)", ".*prod", "[A-Z]+"])
        return string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(
                google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex=pattern
            )
        )
    return string_pb2.StringMatcher(ignore_case=ignore_case, **{kind: value})


def _header_matcher(r: random.Random) -> rc.HeaderMatcher:
    name = r.choice(HEADER_NAMES)
    kind = r.choice(["string", "string", "present", "range"])
    hm = rc.HeaderMatcher(name=name, invert_match=r.random() < 0.2)
    if kind == "string":
        hm.string_match.CopyFrom(_string_matcher(r))
        hm.treat_missing_header_as_empty = r.random() < 0.2
    elif kind == "present":
        hm.present_match = r.random() < 0.7
    else:
        lo = r.choice([0, 5, 10, 40])
        hm.range_match.CopyFrom(range_pb2.Int64Range(start=lo, end=lo + r.choice([3, 10, 100])))
    return hm


def _query_matcher(r: random.Random) -> rc.QueryParameterMatcher:
    qm = rc.QueryParameterMatcher(name=r.choice(QUERY_KEYS))
    if r.random() < 0.4:
        qm.present_match = True
    else:
        qm.string_match.CopyFrom(string_pb2.StringMatcher(exact=r.choice(QUERY_VALUES[:-1])))
    return qm


def _route_match(r: random.Random) -> rc.RouteMatch:
    m = rc.RouteMatch()
    kind = r.choice(["prefix", "prefix", "path", "safe_regex", "path_separated_prefix"])
    if kind == "prefix":
        m.prefix = r.choice(["/", "/api", "/api/v1", "/web", "/users/", "/a", "/static"])
    elif kind == "path":
        m.path = r.choice(PATHS)
    elif kind == "safe_regex":
        m.safe_regex.CopyFrom(
            regex_pb2.RegexMatcher(
                google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex=r.choice(REGEXES)
            )
        )
    else:
        m.path_separated_prefix = r.choice(["/api", "/api/v1", "/web", "/users"])
    if kind != "path_separated_prefix" and r.random() < 0.25:
        m.case_sensitive.value = False
    for _ in range(r.choice([0, 0, 1, 1, 2])):
        m.headers.append(_header_matcher(r))
    if r.random() < 0.2:
        m.query_parameters.append(_query_matcher(r))
    if r.random() < 0.1:
        # Only 0 % or 100 %: a partial fraction rolls different dice in each proxy.
        m.runtime_fraction.default_value.CopyFrom(
            percent_pb2.FractionalPercent(
                numerator=r.choice([0, 100]), denominator=percent_pb2.FractionalPercent.HUNDRED
            )
        )
        m.runtime_fraction.runtime_key = "diff.unused"
    return m


def route_config(seed: int, name: str, clusters: list[str]) -> route_pb2.RouteConfiguration:
    """A random RouteConfiguration named ``name`` over ``clusters`` (single-cluster routes)."""
    r = random.Random(seed)
    cfg = route_pb2.RouteConfiguration(name=name)
    domains_used: set[str] = set()
    for v in range(r.randint(1, 3)):
        choices = [d for d in VHOST_DOMAINS if not domains_used & set(d)]
        if not choices:
            break
        domains = r.choice(choices)
        domains_used |= set(domains)
        vh = cfg.virtual_hosts.add(name=f"vh{v}", domains=domains)
        for i in range(r.randint(2, 8)):
            route = vh.routes.add(name=f"vh{v}-r{i}", match=_route_match(r))
            if r.random() < 0.08:
                route.direct_response.status = r.choice([200, 403])
                route.direct_response.body.inline_string = "direct"
            else:
                route.route.cluster = r.choice(clusters)
    return cfg


def requests(seed: int, n: int) -> list[GeneratedRequest]:
    r = random.Random(seed * 7919 + 1)
    out = []
    for _ in range(n):
        path = r.choice(PATHS)
        if r.random() < 0.3:
            k = r.choice(QUERY_KEYS)
            path += f"?{k}={r.choice(QUERY_VALUES)}"
        headers = {}
        for name in HEADER_NAMES:
            if r.random() < 0.45:
                headers[name] = r.choice(HEADER_VALUES[:-1])
        out.append(GeneratedRequest(r.choice(DOMAINS), path, headers))
    return out
