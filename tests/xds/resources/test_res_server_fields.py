"""The server Listener's field table entries drive its parser: every warned, NACKed or
inert field of the server-side messages (Listener@server, FilterChain, FilterChainMatch,
Filter, DownstreamTlsContext) set on a valid Listener does what the table says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from test_res_fields import test_the_parser_follows_the_table as _follows_the_table
from test_res_server_listener import chain, dtls, server_listener

from pymesh.xds.resources import _fields
from pymesh.xds.resources._fields import TABLE, Status
from pymesh.xds.resources._parse_server_listener import parse

Mutate = Callable[[Any], None]
_TS = "filter_chains[0].transport_socket.typed_config"


def _with(get: Callable[[Any], Any], tls: bool = False) -> Callable[[Mutate], Any]:
    def make(mutate: Mutate) -> Any:
        lis = server_listener(chain(tls=dtls() if tls else None))
        target = get(lis)
        if tls:
            d = dtls()
            mutate(d)
            lis.filter_chains[0].transport_socket.typed_config.Pack(d)
        else:
            mutate(target)
        return lis

    return make


CASES: dict[str, tuple[Callable[[Mutate], Any], str]] = {
    "envoy.config.listener.v3.Listener@server": (_with(lambda lis: lis), ""),
    "envoy.config.listener.v3.FilterChain": (
        _with(lambda lis: lis.filter_chains[0]),
        "filter_chains[0]",
    ),
    "envoy.config.listener.v3.FilterChainMatch": (
        _with(lambda lis: lis.filter_chains[0].filter_chain_match),
        "filter_chains[0].filter_chain_match",
    ),
    "envoy.config.listener.v3.Filter": (
        _with(lambda lis: lis.filter_chains[0].filters[0]),
        "filter_chains[0].filters[0]",
    ),
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": (
        _with(lambda lis: None, tls=True),
        _TS,
    ),
}


def _params() -> list[Any]:
    out = []
    for key, (make, prefix) in CASES.items():
        desc = _fields._descriptor(key)
        for name, f in TABLE[key].items():
            if f.status is Status.HONOURED and not f.inert:
                continue
            fd = desc.fields_by_name[name]
            out.append(pytest.param(key, fd, f, make, prefix, id=f"{key}.{name}"))
    return out


@pytest.mark.parametrize(("key", "fd", "f", "make", "prefix"), _params())
def test_the_server_parser_follows_the_table(
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    fd: Any,
    f: _fields.Field,
    make: Callable[[Mutate], Any],
    prefix: str,
) -> None:
    _follows_the_table(monkeypatch, key, fd, f, make, parse, prefix)
