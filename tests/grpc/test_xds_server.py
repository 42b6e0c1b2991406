"""pymesh.grpc.server / pymesh.grpc.aio.server (gRFC A36) against a real control plane.

The server's Listener comes from the mesh file's ``inbound`` section served by an embedded
ControlPlane; clients are plain grpcio channels with and without client certificates on
127.0.0.1. Serving state is observed through the serving-mode callback (no sleeps).
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _polling import wait_until
from _sec_helpers import SPIFFE, Pki, file_watcher
from envoy.config.listener.v3 import listener_pb2

import pymesh
import pymesh.grpc
import pymesh.grpc.aio
from pymesh.errors import BootstrapError, MeshError
from pymesh.server import ControlPlane
from pymesh.server.config_file import compile_mesh
from pymesh.server.snapshot import Snapshot
from pymesh.testing import bootstrap_for
from pymesh.xds.resources import LISTENER_TYPE

sys.path.insert(0, str(Path(__file__).parent))

SERVICE = "pymesh.test.Echo"
ECHO = f"/{SERVICE}/Echo"
WHO = f"/{SERVICE}/Who"
TEMPLATE = "xds.istio.io/grpc/lds/inbound/%s"


def _who(_req: bytes, ctx: grpc.ServicerContext) -> bytes:
    sans = ctx.auth_context().get("x509_subject_alternative_name", [])
    uris = [s.decode() for s in sans if s.startswith(b"spiffe://")]
    return ",".join(uris).encode()


def handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(lambda r, _c: b"echo:" + r),
            "Who": grpc.unary_unary_rpc_method_handler(_who),
        },
    )


class Modes:
    """Serving-mode callback recorder: ``wait(True)`` blocks until the next change."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[str, bool, MeshError | None]] = queue.Queue()

    def __call__(self, address: str, serving: bool, error: MeshError | None) -> None:
        self.q.put((address, serving, error))

    def wait(self, serving: bool, timeout: float = 30.0) -> MeshError | None:
        while True:
            _, s, err = self.q.get(timeout=timeout)
            if s == serving:
                return err

    def wait_error(self, text: str, timeout: float = 30.0) -> MeshError:
        """The first not-serving error mentioning ``text`` (earlier ones, such as the
        Listener not existing before the control plane has it, are skipped)."""
        while True:
            _, s, err = self.q.get(timeout=timeout)
            if not s and err is not None and text in str(err):
                return err


@pytest.fixture
def server_files(pki: Pki, tmp_path: Path) -> dict[str, str]:
    return pki.write(tmp_path / "server", pki.issue("echo"))


@pytest.fixture
def server_mesh(
    cp: ControlPlane, server_files: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[pymesh.Mesh]:
    boot = bootstrap_for(cp, node_id=f"server/{request.node.name}")
    boot["certificate_providers"] = {"default": file_watcher(server_files)}
    boot["server_listener_resource_name_template"] = TEMPLATE
    with pymesh.Mesh(boot) as mesh:
        yield mesh


def mesh_file(port: int, *, mtls: str = "STRICT", authorization: Any = None) -> dict[str, Any]:
    inbound: dict[str, Any] = {"mtls": mtls}
    if authorization is not None:
        inbound["authorization"] = authorization
    return {
        "services": {
            "echo": {
                "port": port,
                "protocol": "grpc",
                "endpoints": [f"127.0.0.1:{port}"],
                "inbound": inbound,
            }
        }
    }


def serve(cp: ControlPlane, config: dict[str, Any]) -> Snapshot:
    snap = compile_mesh(config, "test")
    cp.set_snapshot(snap)
    return snap


def mtls_channel(pki: Pki, files: dict[str, str] | None, port: int) -> grpc.Channel:
    key = Path(files["private_key_file"]).read_bytes() if files else None
    cert = Path(files["certificate_file"]).read_bytes() if files else None
    creds = grpc.ssl_channel_credentials(pki.ca_pem, key, cert)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds)


@pytest.fixture
def xds_server(server_mesh: pymesh.Mesh) -> Iterator[Callable[..., tuple[Any, int, Modes]]]:
    servers: list[Any] = []

    def make(**kwargs: Any) -> tuple[Any, int, Modes]:
        modes = Modes()
        s = pymesh.grpc.server(mesh=server_mesh, on_serving_mode=modes, **kwargs)
        s.add_generic_rpc_handlers((handlers(),))
        port = s.add_xds_port("127.0.0.1:0")
        servers.append(s)
        return s, port, modes

    yield make
    for s in servers:
        s.stop(None)


def test_mtls_serves_once_the_listener_arrives_and_sees_the_client_identity(
    cp: ControlPlane, pki: Pki, client_files: dict[str, str], xds_server: Any
) -> None:
    server, port, modes = xds_server()
    server.start()
    # No Listener yet: nothing listens on the port (A36's preferred "not serving").
    with mtls_channel(pki, client_files, port) as ch, pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(ECHO)(b"early", timeout=2)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    serve(cp, mesh_file(port))
    assert modes.wait(True) is None
    with mtls_channel(pki, client_files, port) as ch:
        assert ch.unary_unary(ECHO)(b"hi", timeout=10) == b"echo:hi"
        assert ch.unary_unary(WHO)(b"", timeout=10) == (SPIFFE + "client").encode()
    name = TEMPLATE.replace("%s", f"127.0.0.1:{port}")
    assert server.ports[0].listener_name == name
    # The server's Listener is part of the mesh's CSDS-like dump, ACKed.
    dump = json.dumps(server.mesh.config_dump())
    assert name in dump


def test_client_without_certificate_is_refused(cp: ControlPlane, pki: Pki, xds_server: Any) -> None:
    server, port, modes = xds_server()
    server.start()
    serve(cp, mesh_file(port))
    modes.wait(True)
    with mtls_channel(pki, None, port) as ch, pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(ECHO)(b"hi", timeout=10)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_plaintext_listener(cp: ControlPlane, xds_server: Any) -> None:
    server, port, modes = xds_server()
    server.start()
    serve(cp, mesh_file(port, mtls="DISABLE"))
    modes.wait(True)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary(ECHO)(b"x", timeout=10) == b"echo:x"


def test_security_change_rebinds_the_port(
    cp: ControlPlane, pki: Pki, client_files: dict[str, str], xds_server: Any
) -> None:
    server, port, modes = xds_server(drain_grace=0)
    server.start()
    serve(cp, mesh_file(port, mtls="DISABLE"))
    modes.wait(True)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary(ECHO)(b"p", timeout=10) == b"echo:p"
    first = server._ports[0].server
    serve(cp, mesh_file(port, mtls="STRICT"))
    with mtls_channel(pki, client_files, port) as ch:
        # The new grpcio server takes over the same port; wait_for_ready rides the switch.
        assert ch.unary_unary(ECHO)(b"s", timeout=30, wait_for_ready=True) == b"echo:s"
    assert server._ports[0].server is not first


def test_deleted_listener_stops_serving_and_a_new_one_resumes(
    cp: ControlPlane, xds_server: Any
) -> None:
    server, port, modes = xds_server(drain_grace=0)
    server.start()
    serve(cp, mesh_file(port, mtls="DISABLE"))
    modes.wait(True)
    cp.set_snapshot(Snapshot.of())
    err = modes.wait(False)
    assert err is not None and "does not exist" in str(err).lower()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError):
        ch.unary_unary(ECHO)(b"x", timeout=3)
    serve(cp, mesh_file(port, mtls="DISABLE"))
    modes.wait(True)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary(ECHO)(b"y", timeout=10, wait_for_ready=True) == b"echo:y"


def test_listener_for_another_address_is_not_served(cp: ControlPlane, xds_server: Any) -> None:
    server, port, modes = xds_server()
    server.start()
    snap = compile_mesh(mesh_file(port, mtls="DISABLE"), "t")
    lis = inbound_listener(snap)
    lis.address.socket_address.port_value = port + 1 if port < 65535 else port - 1
    cp.set_snapshot(Snapshot.of(listeners=[lis]))
    err = modes.wait_error("listening address")
    assert str(port) in str(err)


def inbound_listener(snap: Snapshot) -> listener_pb2.Listener:
    """A copy of the snapshot's (one) server Listener."""
    (lis,) = [v for k, v in snap.get(LISTENER_TYPE).items() if k.startswith("xds.istio.io/")]
    out = listener_pb2.Listener()
    out.CopyFrom(lis)
    return out


def test_route_without_non_forwarding_action_fails_calls_unavailable(
    cp: ControlPlane, xds_server: Any
) -> None:
    server, port, modes = xds_server()
    server.start()
    snap = compile_mesh(mesh_file(port, mtls="DISABLE"), "t")
    lis = inbound_listener(snap)
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    hcm = hcm_pb2.HttpConnectionManager()
    lis.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    route = hcm.route_config.virtual_hosts[0].routes[0]
    route.ClearField("non_forwarding_action")
    route.redirect.host_redirect = "elsewhere.example"
    lis.filter_chains[0].filters[0].typed_config.Pack(hcm)
    cp.set_snapshot(Snapshot.of(listeners=[lis]))
    modes.wait(True)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(ECHO)(b"x", timeout=10)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "non_forwarding_action" in (info.value.details() or "")


POLICIES = [
    {
        "name": "client-echo",
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": ["cluster.local/ns/default/sa/client"]}}],
                "to": [{"operation": {"paths": ["/pymesh.test.Echo/*"]}}],
            }
        ],
    },
    {"name": "no-who", "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["*/Who"]}}]}]},
]


def test_rbac_allows_and_denies_per_policy(
    cp: ControlPlane,
    pki: Pki,
    client_files: dict[str, str],
    tmp_path: Path,
    xds_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, port, modes = xds_server()
    server.start()
    serve(cp, mesh_file(port, authorization=POLICIES))
    modes.wait(True)
    intruder = pki.write(tmp_path / "intruder", pki.issue("intruder"))
    caplog.set_level("INFO", logger="pymesh.security.rbac")
    with mtls_channel(pki, client_files, port) as ch:
        assert ch.unary_unary(ECHO)(b"ok", timeout=10) == b"echo:ok"
        with pytest.raises(grpc.RpcError) as denied:
            ch.unary_unary(WHO)(b"", timeout=10)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "no-who" in (denied.value.details() or "")
    with mtls_channel(pki, intruder, port) as ch, pytest.raises(grpc.RpcError) as unknown:
        ch.unary_unary(ECHO)(b"x", timeout=10)
    assert unknown.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "no allow policy" in (unknown.value.details() or "")
    logged = [r.getMessage() for r in caplog.records if r.name == "pymesh.security.rbac"]
    assert any("no-who" in m and "grpc" in m for m in logged)
    assert any(SPIFFE + "intruder" in m for m in logged)


def test_san_matchers_on_the_chain_refuse_other_clients(
    cp: ControlPlane, pki: Pki, client_files: dict[str, str], tmp_path: Path, xds_server: Any
) -> None:
    """A DownstreamTlsContext's match_subject_alt_names (Envoy's server-side check)."""
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    server, port, modes = xds_server()
    server.start()
    lis = inbound_listener(compile_mesh(mesh_file(port), "t"))
    d = tls_pb2.DownstreamTlsContext()
    lis.filter_chains[0].transport_socket.typed_config.Unpack(d)
    d.common_tls_context.validation_context.match_subject_alt_names.add(exact=SPIFFE + "client")
    lis.filter_chains[0].transport_socket.typed_config.Pack(d)
    cp.set_snapshot(Snapshot.of(listeners=[lis]))
    modes.wait(True)
    with mtls_channel(pki, client_files, port) as ch:
        assert ch.unary_unary(ECHO)(b"me", timeout=10) == b"echo:me"
    other = pki.write(tmp_path / "other", pki.issue("other"))
    with mtls_channel(pki, other, port) as ch, pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(ECHO)(b"x", timeout=10)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert SPIFFE + "other" in (info.value.details() or "")


def test_rds_route_configuration_is_followed(cp: ControlPlane, xds_server: Any) -> None:
    """A chain's HCM may name its routes by RDS: the port serves once they arrive, and a
    new RouteConfiguration applies to the next call without rebinding."""
    from envoy.config.route.v3 import route_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    server, port, modes = xds_server()
    server.start()
    lis = inbound_listener(compile_mesh(mesh_file(port, mtls="DISABLE"), "t"))
    hcm = hcm_pb2.HttpConnectionManager()
    lis.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    rc = route_pb2.RouteConfiguration()
    rc.CopyFrom(hcm.route_config)
    rc.name = "inbound-routes"
    hcm.ClearField("route_config")
    hcm.rds.route_config_name = "inbound-routes"
    hcm.rds.config_source.ads.SetInParent()
    lis.filter_chains[0].filters[0].typed_config.Pack(hcm)
    cp.set_snapshot(Snapshot.of(listeners=[lis], routes=[rc]))
    modes.wait(True)
    bound = server._ports[0].server
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary(ECHO)(b"r", timeout=10) == b"echo:r"
        rc.virtual_hosts[0].routes[0].match.prefix = "/other.Service/"
        cp.set_snapshot(Snapshot.of(listeners=[lis], routes=[rc]))

        def refused() -> bool:
            try:
                ch.unary_unary(ECHO)(b"r", timeout=10)
            except grpc.RpcError as e:
                return e.code() is grpc.StatusCode.UNAVAILABLE and "no route" in (e.details() or "")
            return False

        wait_until(refused, "the new RouteConfiguration")
    assert server._ports[0].server is bound


def test_unknown_certificate_provider_is_not_served(cp: ControlPlane, xds_server: Any) -> None:
    server, port, modes = xds_server()
    server.start()
    config = mesh_file(port)
    config["services"]["echo"]["inbound"]["certificate_provider"] = "vault"
    serve(cp, config)
    err = modes.wait_error("'vault'")
    assert "certificate_providers" in str(err)
    assert server.ports[0].config is None


def test_rbac_per_route_override(cp: ControlPlane, xds_server: Any) -> None:
    """A route's RBACPerRoute replaces the listener's RBAC filter config for its calls."""
    from envoy.config.rbac.v3 import rbac_pb2
    from envoy.config.route.v3 import route_components_pb2
    from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    server, port, modes = xds_server()
    server.start()
    # The listener's filter: an ALLOW policy without rules allows nothing.
    config = mesh_file(port, mtls="DISABLE", authorization=[{"action": "ALLOW"}])
    lis = inbound_listener(compile_mesh(config, "t"))
    hcm = hcm_pb2.HttpConnectionManager()
    lis.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    vh = hcm.route_config.virtual_hosts[0]
    echo = route_components_pb2.Route(name="echo")
    echo.match.path = ECHO
    echo.non_forwarding_action.SetInParent()
    anyone = rbac_pb2.Policy(
        permissions=[rbac_pb2.Permission(any=True)], principals=[rbac_pb2.Principal(any=True)]
    )
    per_route = rbac_filter_pb2.RBACPerRoute(
        rbac=rbac_filter_pb2.RBAC(
            rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={"anyone": anyone})
        )
    )
    echo.typed_per_filter_config["envoy.filters.http.rbac.allow"].Pack(per_route)
    vh.routes.insert(0, echo)
    lis.filter_chains[0].filters[0].typed_config.Pack(hcm)
    cp.set_snapshot(Snapshot.of(listeners=[lis]))
    modes.wait(True)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary(ECHO)(b"per-route", timeout=10) == b"echo:per-route"
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(WHO)(b"", timeout=10)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_bootstrap_without_server_template_is_an_error(cp: ControlPlane) -> None:
    with pymesh.Mesh(bootstrap_for(cp)) as mesh:
        s = pymesh.grpc.server(mesh=mesh)
        with pytest.raises(BootstrapError, match="server_listener_resource_name_template"):
            s.add_xds_port("127.0.0.1:0")


def test_listening_address_must_be_an_ip(server_mesh: pymesh.Mesh) -> None:
    s = pymesh.grpc.server(mesh=server_mesh)
    with pytest.raises(MeshError, match="IP literal"):
        s.add_xds_port("localhost:0")


# ---------------------------------------------------------------- asyncio


def test_aio_server_mtls(
    cp: ControlPlane, pki: Pki, client_files: dict[str, str], server_mesh: pymesh.Mesh
) -> None:
    async def main() -> None:
        modes = Modes()
        server = pymesh.grpc.aio.server(mesh=server_mesh, on_serving_mode=modes)

        async def echo(req: bytes, _ctx: Any) -> bytes:
            return b"aio:" + req

        async def split(req: bytes, _ctx: Any) -> Any:
            for i in range(int(req)):
                yield str(i).encode()

        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "Echo": grpc.unary_unary_rpc_method_handler(echo),
                        "Split": grpc.unary_stream_rpc_method_handler(split),
                        "Who": grpc.unary_unary_rpc_method_handler(echo),
                    },
                ),
            )
        )
        port = server.add_xds_port("127.0.0.1:0")
        await server.start()
        serve(cp, mesh_file(port, authorization=POLICIES))
        await asyncio.get_running_loop().run_in_executor(None, modes.wait, True)
        key = Path(client_files["private_key_file"]).read_bytes()
        cert = Path(client_files["certificate_file"]).read_bytes()
        creds = grpc.ssl_channel_credentials(pki.ca_pem, key, cert)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            reply = await ch.unary_unary(ECHO)(b"hi", timeout=10, wait_for_ready=True)
            assert reply == b"aio:hi"
            got = [m async for m in ch.unary_stream(f"/{SERVICE}/Split")(b"3", timeout=10)]
            assert got == [b"0", b"1", b"2"]
            with pytest.raises(grpc.RpcError) as denied:
                await ch.unary_unary(WHO)(b"", timeout=10)
            assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}", grpc.ssl_channel_credentials(pki.ca_pem)
        ) as ch:
            with pytest.raises(grpc.RpcError):
                await ch.unary_unary(ECHO)(b"no cert", timeout=10)
        await server.stop(None)
        assert await server.wait_for_termination(5)

    asyncio.run(main())


def test_aio_server_follows_deletion_and_security_changes(
    cp: ControlPlane, pki: Pki, client_files: dict[str, str], server_mesh: pymesh.Mesh
) -> None:
    async def main() -> None:
        modes = Modes()
        server = pymesh.grpc.aio.server(mesh=server_mesh, on_serving_mode=modes, drain_grace=0)

        async def echo(req: bytes, _ctx: Any) -> bytes:
            return b"aio:" + req

        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
                ),
            )
        )
        port = server.add_xds_port("127.0.0.1:0")
        await server.start()
        loop = asyncio.get_running_loop()
        serve(cp, mesh_file(port, mtls="DISABLE"))
        await loop.run_in_executor(None, modes.wait, True)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert await ch.unary_unary(ECHO)(b"1", timeout=10, wait_for_ready=True) == b"aio:1"
        cp.set_snapshot(Snapshot.of())
        await loop.run_in_executor(None, modes.wait, False)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.RpcError):
                await ch.unary_unary(ECHO)(b"2", timeout=3)
        serve(cp, mesh_file(port))  # back, now with STRICT mTLS
        await loop.run_in_executor(None, modes.wait, True)
        key = Path(client_files["private_key_file"]).read_bytes()
        cert = Path(client_files["certificate_file"]).read_bytes()
        creds = grpc.ssl_channel_credentials(pki.ca_pem, key, cert)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            reply = await ch.unary_unary(ECHO)(b"3", timeout=30, wait_for_ready=True)
            assert reply == b"aio:3"
        await server.stop(None)

    asyncio.run(main())
