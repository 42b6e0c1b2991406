"""Golden tests for ``pymesh explain`` (and ``pymesh status`` via an admin server).

The CLI runs against the fixture control plane through a bootstrap file in tmp_path.
Goldens are made stable by a fixed random value (``--random 7``), a fixed-width plain
rich Console, and backend addresses replaced by same-width placeholders (OS-assigned
ports on Linux are 5 digits, so table widths do not move).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import pymesh
from pymesh import cli
from pymesh._explain_cli import run_explain
from pymesh.server import ControlPlane, compile_mesh
from pymesh.testing import EchoBackend, bootstrap_for
from pymesh.testing.envoy import free_port

CONFIG_ROUTES = [
    {"name": "jason", "match": {"headers": {"end-user": "jason"}}, "split": {"v2": 100}},
    {
        "name": "api",
        "match": {"prefix": "/api"},
        "split": {"v1": 80, "v2": 20},
        "timeout": "2s",
        "retries": {"attempts": 2, "on": "5xx"},
    },
    {"match": {"path": "/health"}, "split": {"v1": 100}},
]


@pytest.fixture
def table(
    control_plane: ControlPlane, echo_backends: Callable[..., list[EchoBackend]], tmp_path: Path
) -> tuple[str, dict[str, str]]:
    """(bootstrap file, {backend address: placeholder}) for a three-route table."""
    v1, v2 = echo_backends(2, "v")
    config = {
        "services": {
            "reviews": {
                "port": 9080,
                "versions": {"v1": {"endpoints": [v1.address]}, "v2": {"endpoints": [v2.address]}},
                "routes": CONFIG_ROUTES,
            }
        }
    }
    control_plane.set_snapshot(compile_mesh(config))
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap_for(control_plane, "explain-golden")))
    names = {}
    for b, name in ((v1, "V1"), (v2, "V2")):
        assert len(b.address) == 15, "ephemeral ports are 5 digits on Linux"
        names[b.address] = f"127.0.0.1:{name}".ljust(15, "_")
    return str(path), names


def _normalise(text: str, names: dict[str, str]) -> str:
    for address, placeholder in names.items():
        text = text.replace(address, placeholder)
    return "\n".join(line.rstrip() for line in text.splitlines()).strip() + "\n"


def _text(bootstrap: str, names: dict[str, str], url: str, headers: list[str]) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=100, color_system=None, force_terminal=False)
    run_explain(
        bootstrap=bootstrap,
        method="GET",
        url=url,
        headers=headers,
        as_json=False,
        timeout=20,
        random_value=7,
        console=console,
    )
    return _normalise(buf.getvalue(), names)


GOLDEN_API_TEXT = """\
listener reviews:9080
route config reviews:9080
virtual host reviews:9080 (exact domain 'reviews:9080'): domain 'reviews:9080' equals the authority
           routes, in order (first match wins)
┏━━━┳━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ # ┃ name  ┃ match         ┃ result                    ┃
┡━━━╇━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ 0 │ jason │ prefix '/'    │ header 'end-user' missing │
│ 1 │ api   │ prefix '/api' │ MATCH                     │
└───┴───────┴───────────────┴───────────────────────────┘
action route
  → outbound|9080|v1|reviews weight 80
    outbound|9080|v2|reviews weight 20
  weighted pick: 7 % 100 = 7
timeout 2.0 s   retry {'retry_on': ['5xx'], 'num_retries': 2, 'per_try_timeout_s': None,
'host_predicates': ['previous_hosts'], 'back_off_s': [0.025, 0.25]}
        endpoints of outbound|9080|v1|reviews (lb round_robin)
┏━━━━━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━┓
┃ address         ┃ locality ┃ priority ┃ health  ┃ weight ┃ ejected ┃
┡━━━━━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━┩
│ 127.0.0.1:V1___ │ -        │ 0        │ HEALTHY │ 1      │ no      │
└─────────────────┴──────────┴──────────┴─────────┴────────┴─────────┘
"""

GOLDEN_NO_MATCH_TEXT = """\
listener reviews:9080
route config reviews:9080
virtual host reviews:9080 (exact domain 'reviews:9080'): domain 'reviews:9080' equals the authority
                    routes, in order (first match wins)
┏━━━┳━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ # ┃ name  ┃ match          ┃ result                                      ┃
┡━━━╇━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ 0 │ jason │ prefix '/'     │ header 'end-user' missing                   │
│ 1 │ api   │ prefix '/api'  │ prefix '/api' does not match path '/other'  │
│ 2 │ -     │ path '/health' │ path '/health' does not match path '/other' │
└───┴───────┴────────────────┴─────────────────────────────────────────────┘
no route matched → local 404 (HTTP) / UNAVAILABLE (gRPC)
"""

GOLDEN_API_JSON: dict[str, Any] = {
    "listener": "reviews:9080",
    "known": True,
    "route_config": "reviews:9080",
    "explanation": {
        "route_config": "reviews:9080",
        "authority": "reviews:9080",
        "path": "/api/x",
        "random_value": 7,
        "virtual_host": "reviews:9080",
        "domain": "reviews:9080",
        "domain_kind": "exact",
        "virtual_host_reason": "domain 'reviews:9080' equals the authority",
        "routes": [
            {
                "index": 0,
                "name": "jason",
                "match": "prefix '/'",
                "matched": False,
                "reason": "header 'end-user' missing",
            },
            {"index": 1, "name": "api", "match": "prefix '/api'", "matched": True, "reason": None},
        ],
        "route_index": 1,
        "route_name": "api",
        "action": "route",
        "cluster": "outbound|9080|v1|reviews",
        "clusters": [
            {"name": "outbound|9080|v1|reviews", "weight": 80, "chosen": True},
            {"name": "outbound|9080|v2|reviews", "weight": 20, "chosen": False},
        ],
        "weight_pick": "7 % 100 = 7",
    },
    "policy": {
        "timeout_s": 2.0,
        "retry": {
            "retry_on": ["5xx"],
            "num_retries": 2,
            "per_try_timeout_s": None,
            "host_predicates": ["previous_hosts"],
            "back_off_s": [0.025, 0.25],
        },
        "hash_policies": [],
    },
    "cluster": {
        "error": None,
        "lb_policy": "round_robin",
        "leaf_clusters": [],
        "endpoints": [
            {
                "address": "127.0.0.1:V1___",
                "locality": "-",
                "priority": 0,
                "health": "HEALTHY",
                "weight": 1,
                "ejected": False,
                "active_requests": 0,
            }
        ],
    },
}


def test_explain_json_golden(
    table: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap, names = table
    argv = ["explain", "--bootstrap", bootstrap, "--json", "--random", "7"]
    assert cli.main([*argv, "http://reviews:9080/api/x"]) == 0
    data = json.loads(_normalise(capsys.readouterr().out, names))
    assert data == GOLDEN_API_JSON


def test_explain_text_golden_match(table: tuple[str, dict[str, str]]) -> None:
    bootstrap, names = table
    assert _text(bootstrap, names, "http://reviews:9080/api/x", []) == GOLDEN_API_TEXT


def test_explain_text_golden_no_match(table: tuple[str, dict[str, str]]) -> None:
    bootstrap, names = table
    assert _text(bootstrap, names, "http://reviews:9080/other", []) == GOLDEN_NO_MATCH_TEXT


def test_explain_header_route_picks_v2(table: tuple[str, dict[str, str]]) -> None:
    bootstrap, names = table
    text = _text(bootstrap, names, "http://reviews:9080/other", ["end-user: jason"])
    assert "│ 0 │ jason │ prefix '/' │ MATCH  │" in text
    assert "  → outbound|9080|v2|reviews" in text
    assert "127.0.0.1:V2___" in text and "V1" not in text


def test_explain_and_status_through_admin(
    table: tuple[str, dict[str, str]],
    mesh: pymesh.Mesh,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _bootstrap, names = table
    mesh.wait_state(mesh.slot("reviews:9080"), 20)
    admin = mesh.start_admin()
    argv = ["explain", "--admin", admin.address, "--json", "--random", "7"]
    assert cli.main([*argv, "http://reviews:9080/api/x"]) == 0
    assert json.loads(_normalise(capsys.readouterr().out, names)) == GOLDEN_API_JSON

    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP", raising=False)
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP_CONFIG", raising=False)
    assert cli.main(["status", "--admin", admin.address, "--json"]) == 0
    dump = json.loads(capsys.readouterr().out)
    assert dump["node_id"] == mesh.node_id
    assert dump["listeners_in_use"]["reviews:9080"]["ready"] is True
    assert cli.main(["status", "--admin", admin.address]) == 0
    out = capsys.readouterr().out
    assert re.search(r"cluster outbound\|9080\|v1\|reviews", out)
    assert "xDS resources" in out


def test_status_admin_unreachable_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--admin", f"127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and "fix: check the address" in err


@pytest.mark.parametrize("command", [["status", "web:8080"], ["explain", "http://web:8080/"]])
def test_no_bootstrap_is_an_error_naming_the_fix(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not an admin address: a service name without a bootstrap is a usage error.
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP", raising=False)
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP_CONFIG", raising=False)
    assert cli.main(command) == 2
    err = capsys.readouterr().err
    assert f"{command[0]}: no bootstrap" in err and "web:8080" in err
    assert "--bootstrap FILE" in err and "GRPC_XDS_BOOTSTRAP=FILE" in err
    assert "--admin HOST:PORT" in err


def test_status_exit_codes(
    table: tuple[str, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bootstrap, _names = table
    assert cli.main(["status", "--bootstrap", bootstrap, "reviews:9080"]) == 0
    assert capsys.readouterr().err == ""

    assert cli.main(["status", "--bootstrap", bootstrap, "reviews:9080", "typo:9080"]) == 1
    captured = capsys.readouterr()
    assert "xDS resources" in captured.out  # what it has is still shown
    assert "typo:9080: the control plane does not know this host" in captured.err
    assert "reviews:9080:" not in captured.err

    down = tmp_path / "down.json"
    down.write_text(
        json.dumps(
            {
                "xds_servers": [
                    {
                        "server_uri": f"127.0.0.1:{free_port()}",
                        "channel_creds": [{"type": "insecure"}],
                    }
                ]
            }
        )
    )
    for hosts in (["reviews:9080"], []):
        argv = ["status", "--bootstrap", str(down), "--timeout", "2", *hosts]
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert "is unreachable; fix: start it" in err
        assert f"xds_servers[0].server_uri in the bootstrap {down}" in err

    argv = ["explain", "--bootstrap", str(down), "http://reviews:9080/"]
    assert cli.main(argv) == 2
    assert "is unreachable; fix: start it" in capsys.readouterr().err


def test_status_table_names_the_rejected_version() -> None:
    from rich.console import Console

    from pymesh._explain_cli import render_status

    console = Console(record=True, width=200)
    dump = {
        "node_id": "n",
        "resources": [
            {
                "type_url": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                "name": "rc",
                "version": "2",
                "status": "NACKED",
                "last_error": "resource 'rc': virtual_hosts[0]: bad",
                "error_version": "3",
            }
        ],
    }
    render_status(console, dump)
    text = console.export_text()
    assert "version 3 rejected: resource 'rc'" in text
    assert "│ 2 " in text  # the last good version, still serving


def test_explain_bad_header_names_the_fix(
    table: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap, _names = table
    argv = ["explain", "--bootstrap", bootstrap, "http://reviews:9080/", "-H", "end-user"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "-H 'end-user': not a header; fix: write it as -H 'name: value'" in err
