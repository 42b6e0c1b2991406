"""Differential test against the real Envoy: same routes, same requests, same route chosen.

Each route answers a direct response naming itself, so the body tells which route Envoy
picked (an empty 404 means no route). Weighted clusters and runtime fractions depend on
Envoy's random value and are covered by the unit tests instead.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pymesh.routing import RequestInfo, RouteTable
from pymesh.xds.resources.matchers import (
    HeaderMatcher,
    Int64Range,
    QueryParameterMatcher,
    StringMatcher,
)
from pymesh.xds.resources.route import (
    DirectResponseAction,
    Route,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)

ENVOY = shutil.which("envoy") or "/tmp/venv/bin/envoy"

DOMAINS = ["a.com", "a.com:80", "*.com", "*.a.com", "*-x.a.com", "a.*", "api-*", "b.com", "*"]
HOSTS = ["a.com", "A.COM", "a.com:80", "b.a.com", "y-x.a.com", "-x.a.com", "a.org", "api-1"]
HOSTS += ["b.com", "c.com", "x"]
PATHS = ["/", "/a", "/A", "/a/b", "/ab", "/a/", "/b", "/a?x=1", "/ab?y", "/B/a", "/a/b?x=2&x=1"]
PATHS += ["/v1/items", "/V1/x?x=abc", "/a?x=a%20b", "/a?y=1&x"]
VALUES = ["", "1", "10", "-3", "abc", "ABC", "x1", "a,b"]


# --- random configuration -------------------------------------------------------------


def rand_string_matcher(rng: random.Random) -> StringMatcher:
    if rng.random() < 0.2:
        return StringMatcher.make("safe_regex", rng.choice(["[0-9]+", "a.*", ".*", "-?[0-9]"]))
    kind = rng.choice(["exact", "prefix", "suffix", "contains"])
    return StringMatcher.make(kind, rng.choice(["", "a", "1", "abc", "AB", "b"]), rng.random() < 0.3)  # type: ignore[arg-type]


def rand_header(rng: random.Random) -> HeaderMatcher:
    name = rng.choice(["h1", "h2"])
    roll = rng.random()
    if roll < 0.2:
        return HeaderMatcher(name, present_match=rng.random() < 0.5, invert_match=rng.random() < 0.3)
    invert, empty = rng.random() < 0.3, rng.random() < 0.3
    if roll < 0.4:
        lo = rng.randint(-5, 5)
        return HeaderMatcher(name, range_match=Int64Range(lo, lo + rng.randint(1, 12)), invert_match=invert, treat_missing_header_as_empty=empty)
    return HeaderMatcher(name, string_match=rand_string_matcher(rng), invert_match=invert, treat_missing_header_as_empty=empty)


def rand_match(rng: random.Random) -> RouteMatch:
    kind = rng.choice(["prefix", "prefix", "path", "safe_regex", "path_separated_prefix"])
    path = {
        "prefix": rng.choice(["/", "/a", "/A", "/a/b", "/ab", "/v1", ""]),
        "path": rng.choice(["/", "/a", "/A", "/a/b", "/ab", "/a/"]),
        "safe_regex": rng.choice(["/a.*", "/[ab]+", "/a/b", ".*b", "/v[0-9]/.*"]),
        "path_separated_prefix": rng.choice(["/a", "/A", "/v1"]),
    }[kind]
    headers = tuple(rand_header(rng) for _ in range(rng.choice([0, 0, 1, 2])))
    queries: tuple[QueryParameterMatcher, ...] = ()
    if rng.random() < 0.25:
        if rng.random() < 0.4:
            queries = (QueryParameterMatcher(rng.choice(["x", "y"]), present_match=rng.random() < 0.6),)
        else:
            queries = (QueryParameterMatcher(rng.choice(["x", "y"]), rand_string_matcher(rng)),)
    return RouteMatch(kind, path, case_sensitive=rng.random() < 0.6, headers=headers, query_parameters=queries)  # type: ignore[arg-type]


def rand_config(rng: random.Random) -> RouteConfiguration:
    pool = list(DOMAINS)
    rng.shuffle(pool)
    vhosts = []
    for i in range(rng.randint(2, 4)):
        domains, pool = pool[: rng.randint(1, 3)], pool[3:]
        if not domains:
            break
        routes = tuple(
            Route(rand_match(rng), DirectResponseAction(200, f"vh{i}/r{j}".encode()), name=f"r{j}")
            for j in range(rng.randint(1, 8))
        )
        vhosts.append(VirtualHost(f"vh{i}", tuple(domains), routes))
    return RouteConfiguration("rc", tuple(vhosts))


# --- dataclasses -> Envoy JSON ---------------------------------------------------------


def sm_json(m: StringMatcher) -> dict[str, Any]:
    if m.kind == "safe_regex":
        return {"safe_regex": {"regex": m.value}}
    return {m.kind: m.value, "ignore_case": m.ignore_case}


def header_json(h: HeaderMatcher) -> dict[str, Any]:
    out: dict[str, Any] = {"name": h.name, "invert_match": h.invert_match}
    if h.present_match is not None:
        out["present_match"] = h.present_match
        return out
    out["treat_missing_header_as_empty"] = h.treat_missing_header_as_empty
    if h.range_match is not None:
        out["range_match"] = {"start": str(h.range_match.start), "end": str(h.range_match.end)}
    else:
        assert h.string_match is not None
        out["string_match"] = sm_json(h.string_match)
    return out


def match_json(m: RouteMatch) -> dict[str, Any]:
    out: dict[str, Any] = {"case_sensitive": m.case_sensitive}
    if m.path_kind == "safe_regex":
        out["safe_regex"] = {"regex": m.path}
    else:
        out[m.path_kind] = m.path
    out["headers"] = [header_json(h) for h in m.headers]
    out["query_parameters"] = [
        {"name": q.name, "present_match": q.present_match}
        if q.string_match is None
        else {"name": q.name, "string_match": sm_json(q.string_match)}
        for q in m.query_parameters
    ]
    return out


def envoy_config(rc: RouteConfiguration, admin_path: Path) -> dict[str, Any]:
    vhosts = [
        {
            "name": vh.name,
            "domains": list(vh.domains),
            "routes": [
                {
                    "name": r.name,
                    "match": match_json(r.match),
                    "direct_response": {"status": 200, "body": {"inline_string": r.action.body.decode()}},  # type: ignore[union-attr]
                }
                for r in vh.routes
            ],
        }
        for vh in rc.virtual_hosts
    ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "diff",
        "route_config": {"name": rc.name, "virtual_hosts": vhosts},
        "http_filters": [
            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "diff",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
                }
            ]
        },
    }


# --- a running Envoy --------------------------------------------------------------------


@dataclass
class Envoy:
    port: int


def wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"envoy exited while waiting for {what}")
        time.sleep(0.05)  # polling a condition with a deadline, not a fixed delay
    raise AssertionError(f"timed out waiting for {what}")


def admin_get(admin: str, path: str) -> str | None:
    host, port = admin.rsplit(":", 1)
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode()
        return body if resp.status == 200 else None
    except OSError:
        return None


@pytest.fixture
def envoy_runner(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def run(rc: RouteConfiguration) -> Envoy:
        n = len(procs)
        admin_path = tmp_path / f"admin{n}.txt"
        cfg = tmp_path / f"envoy{n}.json"
        cfg.write_text(json.dumps(envoy_config(rc, admin_path)))
        log = (tmp_path / f"envoy{n}.log").open("wb")
        proc = subprocess.Popen(
            [ENVOY, "-c", str(cfg), "--admin-address-path", str(admin_path), "--disable-hot-restart", "-l", "warning", "--concurrency", "1"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        admin = wait_for(lambda: admin_path.exists() and admin_path.read_text().strip(), 60, "admin address", proc)
        wait_for(lambda: admin_get(admin, "/ready") is not None, 60, "envoy ready", proc)
        listeners = json.loads(wait_for(lambda: admin_get(admin, "/listeners?format=json"), 60, "listeners", proc))
        port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
        return Envoy(int(port))

    yield run
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def envoy_route(envoy: Envoy, host: str, path: str, headers: list[tuple[str, str]]) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host)
    for k, v in headers:
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    if resp.status == 404 and not body:
        return None
    assert resp.status == 200, (resp.status, body)
    return body


@pytest.mark.skipif(not os.path.exists(ENVOY), reason="envoy binary missing")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_route_choice_matches_envoy(envoy_runner: Any, seed: int) -> None:
    rng = random.Random(seed)
    rc = rand_config(rng)
    table = RouteTable.compile(rc)
    envoy = envoy_runner(rc)
    compared = matched = 0
    for _ in range(120):
        host, path = rng.choice(HOSTS), rng.choice(PATHS)
        headers: list[tuple[str, str]] = []
        for name in ("h1", "h2"):
            for _ in range(rng.choice([0, 1, 1, 2])):
                headers.append((name, rng.choice(VALUES)))
        joined: dict[str, str] = {}
        values: dict[str, list[str]] = {}
        for k, v in headers:
            values.setdefault(k, []).append(v)
        for k, vs in values.items():
            joined[k] = ",".join(vs)
        repeated = {k: tuple(vs) for k, vs in values.items() if len(vs) > 1}
        req = RequestInfo("GET", host, path, joined, False, "", repeated or None)
        d = table.select(req, 0)
        ours = None if d is None else d.action.body.decode()  # type: ignore[union-attr]
        theirs = envoy_route(envoy, host, path, headers)
        assert ours == theirs, (host, path, headers)
        compared += 1
        matched += ours is not None
    assert compared == 120 and matched > 10  # the comparison exercised real matches
