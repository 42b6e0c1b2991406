"""Server-side Listener parser (gRFC A36): address, filter chains and their matching,
DownstreamTlsContext, NACK field paths."""

from __future__ import annotations

import ipaddress
from typing import Any

from _resbuild import hcm, invalid, pack, route_config
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pymesh.errors import ResourceInvalid
from pymesh.xds.resources import LISTENER_TYPE, decode
from pymesh.xds.resources._parse_server_listener import parse
from pymesh.xds.resources.listener import ROUTER_TYPE, parse_lds_listener
from pymesh.xds.resources.route import NonForwardingAction
from pymesh.xds.resources.server_listener import Connection, ServerListener

NAME = "grpc/server?xds.resource.listening_address=127.0.0.1:5000"


def server_listener(*chains: Any, default: Any = None) -> Any:
    lis = listener_pb2.Listener(name=NAME)
    lis.address.socket_address.address = "127.0.0.1"
    lis.address.socket_address.port_value = 5000
    for c in chains:
        lis.filter_chains.append(c)
    if default is not None:
        lis.default_filter_chain.CopyFrom(default)
    return lis


def chain(name: str = "c", h: Any = None, tls: Any = None) -> Any:
    fc = lc.FilterChain(name=name)
    if h is None:
        h = hcm(None)
        h.route_config.CopyFrom(route_config("inbound"))
        r = h.route_config.virtual_hosts[0].routes[0]
        r.ClearField("route")
        r.non_forwarding_action.SetInParent()
    fc.filters.add(name="hcm").typed_config.Pack(h)
    if tls is not None:
        fc.transport_socket.name = "envoy.transport_sockets.tls"
        fc.transport_socket.typed_config.Pack(tls)
    return fc


def dtls(require: bool = True, validation: bool = True) -> Any:
    d = tls_pb2.DownstreamTlsContext()
    c = d.common_tls_context
    c.tls_certificate_provider_instance.instance_name = "default"
    if validation:
        c.validation_context.ca_certificate_provider_instance.instance_name = "default"
    if require:
        d.require_client_certificate.value = True
    return d


def conn(src: str = "127.0.0.1", port: int = 40000, dst: str = "127.0.0.1") -> Connection:
    return Connection(destination_ip=dst, source_ip=src, source_port=port)


def test_plain_server_listener() -> None:
    out = parse(server_listener(chain()))
    assert isinstance(out, ServerListener)
    assert (out.name, out.address, out.port) == (NAME, "127.0.0.1", 5000)
    (fc,) = out.filter_chains
    assert fc.tls is None and fc.name == "c"
    assert fc.hcm.rds_name is None and fc.hcm.route_config is not None
    assert [f.type_name for f in fc.hcm.http_filters] == [ROUTER_TYPE]
    assert out.select(conn()) is fc
    assert out.unsupported == ()


def test_decode_dispatches_on_api_listener() -> None:
    lis = server_listener(chain())
    name, value = decode(LISTENER_TYPE, pack(lis))
    assert name == NAME and isinstance(value, ServerListener)
    assert isinstance(parse_lds_listener(lis), ServerListener)


def test_downstream_tls_parsed() -> None:
    out = parse(server_listener(chain(tls=dtls())))
    tls = out.filter_chains[0].tls
    assert tls is not None
    assert tls.identity.instance_name == "default"
    assert tls.validation is not None and tls.require_client_certificate


def test_san_matchers_on_server_are_kept() -> None:
    d = dtls()
    d.common_tls_context.validation_context.match_subject_alt_names.add(
        exact="spiffe://cluster.local/ns/default/sa/frontend"
    )
    tls = parse(server_listener(chain(tls=d))).filter_chains[0].tls
    assert tls is not None and len(tls.san_matchers) == 1
    assert tls.san_matchers[0].matcher.value == "spiffe://cluster.local/ns/default/sa/frontend"


def test_rds_chain() -> None:
    out = parse(server_listener(chain(h=hcm("inbound-routes"))))
    assert out.filter_chains[0].hcm.rds_name == "inbound-routes"


# ---------------------------------------------------------------- NACKs, by field path


def test_missing_address_nacks() -> None:
    lis = server_listener(chain())
    lis.ClearField("address")
    invalid(parse, lis, "address", reason="listens on")


def test_listener_filters_nack() -> None:
    lis = server_listener(chain())
    lis.listener_filters.add(name="tls_inspector")
    invalid(parse, lis, "listener_filters", reason="not supported")


def test_use_original_dst_true_nacks() -> None:
    lis = server_listener(chain())
    lis.use_original_dst.value = True
    invalid(parse, lis, "use_original_dst", reason="A36")


def test_use_original_dst_false_is_fine() -> None:
    lis = server_listener(chain())
    lis.use_original_dst.value = False
    parse(lis)


def test_unknown_network_filter_nacks() -> None:
    fc = chain()
    fc.filters.insert(0, lc.Filter(name="tcp"))
    fc.filters[0].typed_config.Pack(router_pb2.Router())
    invalid(parse, server_listener(fc), "filter_chains[0].filters[0].typed_config")


def test_duplicate_network_filter_name_nacks() -> None:
    fc = chain()
    fc.filters.append(fc.filters[0])
    invalid(parse, server_listener(fc), "filter_chains[0].filters[1].name", reason="duplicate")


def test_two_hcms_nack() -> None:
    fc = chain()
    second = lc.Filter(name="hcm2")
    second.typed_config.CopyFrom(fc.filters[0].typed_config)
    fc.filters.append(second)
    invalid(parse, server_listener(fc), "filter_chains[0].filters[1]", reason="exactly one")


def test_chain_without_filters_nacks() -> None:
    fc = lc.FilterChain(name="empty")
    invalid(parse, server_listener(fc), "filter_chains[0].filters", reason="HttpConnection")


def test_hcm_without_router_nacks() -> None:
    h = hcm("r")
    del h.http_filters[:]
    invalid(
        parse,
        server_listener(chain(h=h)),
        "filter_chains[0].filters[0].typed_config.http_filters",
        reason="router",
    )


def test_require_client_certificate_without_roots_nacks() -> None:
    d = dtls(require=True, validation=False)
    invalid(
        parse,
        server_listener(chain(tls=d)),
        "filter_chains[0].transport_socket.typed_config.require_client_certificate",
        reason="validation context",
    )


def test_server_certificate_is_required() -> None:
    d = dtls()
    d.common_tls_context.ClearField("tls_certificate_provider_instance")
    invalid(
        parse,
        server_listener(chain(tls=d)),
        "filter_chains[0].transport_socket.typed_config.common_tls_context"
        ".tls_certificate_provider_instance",
    )


def test_require_sni_nacks() -> None:
    d = dtls()
    d.require_sni.value = True
    invalid(
        parse,
        server_listener(chain(tls=d)),
        "filter_chains[0].transport_socket.typed_config.require_sni",
    )


def test_strict_ocsp_nacks() -> None:
    d = dtls()
    d.ocsp_staple_policy = tls_pb2.DownstreamTlsContext.STRICT_STAPLING
    invalid(
        parse,
        server_listener(chain(tls=d)),
        "filter_chains[0].transport_socket.typed_config.ocsp_staple_policy",
    )


def test_sds_nacks() -> None:
    d = dtls()
    d.common_tls_context.tls_certificate_sds_secret_configs.add(name="s")
    invalid(
        parse,
        server_listener(chain(tls=d)),
        "filter_chains[0].transport_socket.typed_config.common_tls_context"
        ".tls_certificate_sds_secret_configs",
        reason="SDS",
    )


def test_bad_cidr_nacks() -> None:
    fc = chain()
    fc.filter_chain_match.prefix_ranges.add(address_prefix="not-an-ip")
    invalid(
        parse,
        server_listener(fc),
        "filter_chains[0].filter_chain_match.prefix_ranges[0].address_prefix",
    )


def test_duplicate_matchers_after_normalisation_nack() -> None:
    # 10.1.2.3/16 and 10.1.0.0/16 are the same range once the low bits are masked.
    a, b = chain("a"), chain("b")
    a.filter_chain_match.prefix_ranges.add(address_prefix="10.1.2.3").prefix_len.value = 16
    b.filter_chain_match.prefix_ranges.add(address_prefix="10.9.0.0").prefix_len.value = 16
    b.filter_chain_match.prefix_ranges.add(address_prefix="10.1.0.0").prefix_len.value = 16
    invalid(
        parse,
        server_listener(a, b),
        "filter_chains[1].filter_chain_match",
        reason="overlaps filter_chains[0]",
    )


def test_never_matching_chains_still_count_for_overlaps() -> None:
    a, b = chain("a"), chain("b")
    for c in (a, b):
        c.filter_chain_match.server_names.append("x.example")
    invalid(parse, server_listener(a, b), "filter_chains[1].filter_chain_match")


def test_prefix_len_is_clamped() -> None:
    fc = chain()
    fc.filter_chain_match.prefix_ranges.add(address_prefix="127.0.0.1").prefix_len.value = 99
    out = parse(server_listener(fc))
    assert out.filter_chains[0].match.prefix_ranges == (ipaddress.ip_network("127.0.0.1/32"),)


# ---------------------------------------------------------------- chain selection


def _select(lis: Any, c: Connection) -> str | None:
    out = parse(lis)
    fc = out.select(c)
    return None if fc is None else fc.name


def test_most_specific_destination_prefix_wins() -> None:
    wide, narrow = chain("wide"), chain("narrow")
    wide.filter_chain_match.prefix_ranges.add(address_prefix="127.0.0.0").prefix_len.value = 8
    narrow.filter_chain_match.prefix_ranges.add(address_prefix="127.0.0.1").prefix_len.value = 32
    lis = server_listener(wide, narrow)
    assert _select(lis, conn(dst="127.0.0.1")) == "narrow"
    assert _select(lis, conn(dst="127.0.0.2")) == "wide"
    assert _select(lis, conn(dst="10.0.0.1")) is None


def test_default_chain_when_nothing_matches() -> None:
    only = chain("only")
    only.filter_chain_match.source_prefix_ranges.add(address_prefix="10.0.0.0").prefix_len.value = 8
    lis = server_listener(only, default=chain("fallback"))
    assert _select(lis, conn(src="127.0.0.1")) == "fallback"
    assert _select(lis, conn(src="10.1.1.1")) == "only"


def test_source_type_beats_any() -> None:
    anyc, local = chain("any"), chain("local")
    local.filter_chain_match.source_type = lc.FilterChainMatch.SAME_IP_OR_LOOPBACK
    lis = server_listener(anyc, local)
    assert _select(lis, conn(src="127.0.0.1")) == "local"
    assert _select(lis, conn(src="10.0.0.7", dst="10.0.0.1")) == "any"


def test_source_port_exact_beats_unset() -> None:
    anyp, exact = chain("any"), chain("exact")
    exact.filter_chain_match.source_ports.append(40001)
    lis = server_listener(anyp, exact)
    assert _select(lis, conn(port=40001)) == "exact"
    assert _select(lis, conn(port=40002)) == "any"


def test_never_matching_fields_do_not_match() -> None:
    fc = chain("sni")
    fc.filter_chain_match.server_names.append("x.example")
    dp = chain("port")
    dp.filter_chain_match.destination_port.value = 5000
    dp.filter_chain_match.source_ports.append(1)
    tp = chain("tls-proto")
    tp.filter_chain_match.transport_protocol = "tls"
    tp.filter_chain_match.source_ports.append(2)
    raw = chain("raw")
    raw.filter_chain_match.transport_protocol = "raw_buffer"
    lis = server_listener(fc, dp, tp, raw)
    assert _select(lis, conn()) == "raw"


def test_route_with_forwarding_action_is_accepted() -> None:
    """A36: a server Route with a ``route`` action is valid; such RPCs fail at call time."""
    h = hcm(None)
    h.route_config.CopyFrom(route_config("inbound"))
    out = parse(server_listener(chain(h=h)))
    rc = out.filter_chains[0].hcm.route_config
    assert rc is not None
    assert not isinstance(rc.virtual_hosts[0].routes[0].action, NonForwardingAction)


def test_client_listener_is_not_a_server_listener() -> None:
    from _resbuild import listener

    lis = listener(hcm("r"))
    try:
        out = parse_lds_listener(lis)
    except ResourceInvalid as e:  # pragma: no cover - a regression
        raise AssertionError(e) from e
    assert not isinstance(out, ServerListener)
