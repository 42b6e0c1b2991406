"""``pymesh explain`` and ``pymesh status``: the mesh's decisions, readable by humans.

``explain`` is Envoy's router_check_tool for people: for one request it shows the
listener, the virtual host, each route tried in order (and why it did not match), the
weighted cluster choice, the candidate endpoints with health/ejection, and the retry
and timeout policy that would apply. ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from rich.console import Console
from rich.table import Table

from pymesh._mesh import ListenerState, Mesh, _cluster_dump
from pymesh.errors import ConfigTimeoutError, MeshError
from pymesh.routing import RequestInfo, explain
from pymesh.xds.resources.route import RetryPolicy, RouteAction


def _parse_headers(headers: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise MeshError(f"-H {h!r}: not a header; fix: write it as -H 'name: value'")
        key = name.strip().lower()
        out[key] = f"{out[key]},{value.strip()}" if key in out else value.strip()
    return out


def _policy(action: RouteAction, vh_retry: RetryPolicy | None) -> dict[str, Any]:
    retry = action.retry_policy or vh_retry
    return {
        "timeout_s": action.timeout,
        "retry": None
        if retry is None
        else {
            "retry_on": sorted(retry.retry_on),
            "num_retries": retry.num_retries,
            "per_try_timeout_s": retry.per_try_timeout,
            "host_predicates": list(retry.retry_host_predicates),
            "back_off_s": [retry.back_off.base_interval, retry.back_off.max_interval],
        },
        "hash_policies": [dataclasses.asdict(h) for h in action.hash_policies],
    }


def explain_request(
    mesh: Mesh,
    method: str,
    url: str,
    headers: dict[str, str],
    *,
    timeout: float = 10.0,
    random_value: int | None = None,
) -> dict[str, Any]:
    """The explanation of one request as a JSON-able dict (what ``--json`` prints)."""
    parts = urlsplit(url)
    if not parts.netloc:
        raise MeshError(f"URL {url!r} has no host; write it as http://host[:port]/path")
    authority = parts.netloc
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    slot = mesh.slot(authority)
    state: ListenerState | None = mesh.wait_state(slot, timeout)
    listener = mesh.listener_name(authority)
    if state is None:
        return {
            "listener": listener,
            "known": False,
            "note": "the control plane does not know this listener: the request passes "
            "through directly"
            if mesh.passthrough
            else "unknown host: the request fails",
        }
    host = headers.get("host", authority)
    info = RequestInfo(
        method, host, path, headers, headers.get("content-type", "").startswith("application/grpc")
    )
    value = random.getrandbits(64) if random_value is None else random_value
    ex = explain(state.table, info, value)
    out: dict[str, Any] = {
        "listener": listener,
        "known": True,
        "route_config": ex.route_config,
        "explanation": dataclasses.asdict(ex),
    }
    if ex.route_index is not None:
        decision = state.table.select(info, value)
        if decision is not None and isinstance(decision.action, RouteAction):
            out["policy"] = _policy(decision.action, decision.virtual_host.retry_policy)
    if ex.cluster is not None:
        rt = state.clusters.get(ex.cluster)
        out["cluster"] = _cluster_dump(rt) if rt is not None else {"error": "unknown cluster"}
    return out


def _render(console: Console, data: dict[str, Any]) -> None:
    console.print(f"[bold]listener[/] {data['listener']}")
    if not data["known"]:
        console.print(data["note"])
        return
    ex = data["explanation"]
    console.print(f"[bold]route config[/] {ex['route_config']}")
    if ex["virtual_host"] is None:
        console.print(f"[red]no virtual host[/]: {ex['virtual_host_reason']}")
        console.print("→ local 404 (HTTP) / UNAVAILABLE (gRPC)")
        return
    console.print(
        f"[bold]virtual host[/] {ex['virtual_host']} ({ex['domain_kind']} domain "
        f"{ex['domain']!r}): {ex['virtual_host_reason']}"
    )
    table = Table(title="routes, in order (first match wins)")
    for col in ("#", "name", "match", "result"):
        table.add_column(col)
    for r in ex["routes"]:
        result = "[green]MATCH[/]" if r["matched"] else f"[dim]{r['reason']}[/]"
        table.add_row(str(r["index"]), r["name"] or "-", r["match"], result)
    console.print(table)
    if ex["route_index"] is None:
        console.print("[red]no route matched[/] → local 404 (HTTP) / UNAVAILABLE (gRPC)")
        return
    console.print(f"[bold]action[/] {ex['action']}")
    if ex["clusters"]:
        for c in ex["clusters"]:
            mark = "→" if c["chosen"] else " "
            weight = f" weight {c['weight']}" if c["weight"] else ""
            console.print(f"  {mark} {c['name']}{weight}")
        if ex["weight_pick"]:
            console.print(f"  weighted pick: {ex['weight_pick']}")
    policy = data.get("policy")
    if policy:
        console.print(
            f"[bold]timeout[/] {policy['timeout_s']} s   [bold]retry[/] {policy['retry']}"
        )
    cluster = data.get("cluster")
    if cluster:
        if cluster.get("error"):
            console.print(f"[red]cluster error[/]: {cluster['error']}")
        eps = Table(title=f"endpoints of {ex['cluster']} (lb {cluster.get('lb_policy')})")
        for col in ("address", "locality", "priority", "health", "weight", "ejected"):
            eps.add_column(col)
        for e in cluster.get("endpoints", []):
            eps.add_row(
                e["address"],
                e["locality"],
                str(e["priority"]),
                e["health"],
                str(e["weight"]),
                "yes" if e["ejected"] else "no",
            )
        console.print(eps)


def run_explain(
    *,
    bootstrap: str | None,
    method: str,
    url: str,
    headers: Sequence[str],
    as_json: bool,
    timeout: float,
    admin: str | None = None,
    random_value: int | None = None,
    console: Console | None = None,
) -> int:
    """``pymesh explain``. ``random_value`` fixes the weighted pick (reproducible output);
    ``console`` renders the text form (default: the terminal)."""
    if admin is not None:
        # Observability hook: ask a running process's admin server instead of
        # subscribing from here (same JSON as explain_request).
        query = [("method", method), ("url", url)] + [("h", h) for h in headers]
        if random_value is not None:
            query.append(("random", str(random_value)))
        data = fetch_admin(admin, "/explain?" + urlencode(query), timeout)
    else:
        parsed = _parse_headers(headers)  # a usage error: before connecting anywhere
        with Mesh(bootstrap) as mesh:
            try:
                data = explain_request(
                    mesh,
                    method,
                    url,
                    parsed,
                    timeout=timeout,
                    random_value=random_value,
                )
            except MeshError as exc:
                raise MeshError(f"{exc}; {_fix_for(mesh, exc, timeout)}") from exc
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        _render(console or Console(), data)
    return 0


def fetch_admin(admin: str, path: str, timeout: float = 10.0) -> Any:
    """GET ``path`` from the admin server at ``host:port`` and decode its JSON."""
    url = f"http://{admin}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            detail = json.loads(err.read()).get("error", "")
        except ValueError:
            detail = ""
        where = path.split("?")[0]
        raise MeshError(f"admin server {admin}: {where}: HTTP {err.code} {detail}") from None
    except OSError as err:
        raise MeshError(
            f"admin server {admin} unreachable: {err}; fix: check the address (the port the "
            "process's admin server prints, or its PYMESH_ADMIN_PORT) and that it is running"
        ) from err


def _unreachable(mesh: Mesh) -> str:
    server = mesh.bootstrap.xds_servers[0].server_uri
    return (
        f"the control plane at {server} is unreachable; fix: start it (e.g. `pymesh serve "
        f"mesh.yaml --bootstrap-out FILE`) or correct xds_servers[0].server_uri in the "
        f"bootstrap {mesh.bootstrap.source}"
    )


def _fix_for(mesh: Mesh, exc: MeshError, timeout: float) -> str:
    """The fix for a listener that did not resolve, from what the mesh knows now."""
    if not mesh.xds_stats.connected:
        return _unreachable(mesh)
    if isinstance(exc, ConfigTimeoutError):
        return (
            "fix: check that the control plane serves this listener and the route, clusters "
            f"and endpoints it names (`pymesh status` shows what arrived), or raise --timeout "
            f"(now {timeout:g} s)"
        )
    return "fix: see the resource's last error in `pymesh status`"


def _wait_connected(mesh: Mesh, timeout: float) -> bool:
    """True once the mesh's xDS stream is up, False after ``timeout``.

    Polls: the xDS client exposes its connection state as a counter, not an event, and a
    CLI that waits at most ``timeout`` once can afford a 50 ms tick."""
    deadline = time.monotonic() + timeout
    while not mesh.xds_stats.connected:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def run_status_admin(*, admin: str, as_json: bool, timeout: float) -> int:
    """``pymesh status --admin ADDR``: render a running process's /config_dump.

    Exit code 1 when that process is not connected to its control plane."""
    dump = fetch_admin(admin, "/config_dump", timeout)
    if as_json:
        print(json.dumps(dump, indent=2, default=str))
    else:
        render_status(Console(), dump)
    if not dump.get("connected"):
        print(
            f"pymesh: the process behind admin {admin} is not connected to its control "
            f"plane {dump.get('server_uri')}; fix: start that control plane or correct "
            "xds_servers[0].server_uri in that process's bootstrap",
            file=sys.stderr,
        )
        return 1
    return 0


def run_status_csds(*, csds: str, as_json: bool, timeout: float) -> int:
    """``pymesh status --csds ADDR``: FetchClientStatus from a CSDS server and print every
    resource with its client status, version and error. Exit code 1 when the server
    cannot be asked, or any resource is NACKed or does not exist."""
    import grpc
    from envoy.admin.v3 import config_dump_shared_pb2
    from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
    from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]

    with grpc.insecure_channel(csds) as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        try:
            response = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=timeout)
        except grpc.RpcError as e:
            print(
                f"pymesh: cannot ask CSDS at {csds}: {e.code().name}: {e.details()}; fix: "
                "check the address (the process's Mesh.start_csds() port) and that it runs",
                file=sys.stderr,
            )
            return 1
    if as_json:
        print(json.dumps(json_format.MessageToDict(response), indent=2))
    bad = 0
    for config in response.config:
        table = Table(title=f"CSDS: node {config.node.id}")
        for col in ("type", "name", "version", "client status", "error"):
            table.add_column(col)
        for x in config.generic_xds_configs:
            status = config_dump_shared_pb2.ClientResourceStatus.Name(x.client_status)
            bad += status in ("NACKED", "DOES_NOT_EXIST")
            table.add_row(
                x.type_url.rsplit(".", 1)[-1],
                x.name,
                x.version_info,
                status,
                x.error_state.details,
            )
        if not as_json:
            Console().print(table)
    return 1 if bad else 0


def run_status(
    *, bootstrap: str | None, hosts: Sequence[str], as_json: bool, timeout: float
) -> int:
    """``pymesh status [HOST ...]``: connect with the bootstrap, resolve the hosts, print.

    Exit code 0 when the control plane is connected and every host resolved to a config;
    1 when the tables were printed but the control plane is unreachable, or a host is
    unknown to it or did not resolve (each problem is printed to stderr with its fix).
    """
    problems: list[str] = []
    with Mesh(bootstrap) as mesh:
        for host in hosts:
            try:
                state = mesh.wait_state(mesh.slot(host), timeout, passthrough=True)
            except MeshError as exc:
                problems.append(f"{host}: {exc}; {_fix_for(mesh, exc, timeout)}")
                continue
            if state is None:
                problems.append(
                    f"{host}: the control plane does not know this host (no listener "
                    f"{mesh.listener_name(host)!r}), so requests for it pass through "
                    "directly; fix: check the host and port, or add the service to the "
                    "control plane"
                )
        connected = _wait_connected(mesh, 0 if problems else timeout)
        dump = mesh.config_dump()
    if not connected and not any("unreachable" in p for p in problems):
        problems.append(_unreachable(mesh))
    if as_json:
        print(json.dumps(dump, indent=2, default=str))
    else:
        render_status(Console(), dump)
    for problem in problems:
        print(f"pymesh: {problem}", file=sys.stderr)
    return 1 if problems else 0


def render_status(console: Console, dump: dict[str, Any]) -> None:
    """The status tables of a config dump (local or from an admin server)."""
    console.print(
        f"[bold]node[/] {dump.get('node_id')}  [bold]server[/] {dump.get('server_uri')}  "
        f"[bold]connected[/] {dump.get('connected')}"
    )
    res = Table(title="xDS resources")
    for col in ("type", "name", "version", "status", "last error"):
        res.add_column(col)
    for r in dump.get("resources", []):
        error = r.get("last_error") or ""
        if error and r.get("error_version") is not None:
            # The rejected version; "version" is the last good one, still serving.
            error = f"version {r['error_version']} rejected: {error}"
        res.add_row(
            r["type_url"].rsplit(".", 1)[-1],
            r["name"],
            str(r.get("version")),
            r["status"],
            error,
        )
    console.print(res)
    for name, cl in dump.get("clusters_in_use", {}).items():
        t = Table(title=f"cluster {name} (lb {cl.get('lb_policy')})")
        for col in ("address", "locality", "priority", "health", "ejected", "active"):
            t.add_column(col)
        for e in cl["endpoints"]:
            t.add_row(
                e["address"],
                e["locality"],
                str(e["priority"]),
                e["health"],
                "yes" if e["ejected"] else "no",
                str(e["active_requests"]),
            )
        console.print(t)
    warned = dump.get("unsupported_fields") or []
    if warned:
        # Config pymesh accepted but does not (fully) apply: counted, never silent.
        w = Table(title="unsupported xDS fields (counted warnings, see docs/features.md)")
        for col in ("type", "field", "count"):
            w.add_column(col)
        for row in warned:
            w.add_row(str(row["type"]), str(row["field"]), str(row["count"]))
        console.print(w)
