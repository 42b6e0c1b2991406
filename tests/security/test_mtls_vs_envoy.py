"""Interop: the real Envoy and pymesh, fed the same CDS (UpstreamTlsContext with files:
tls_certificates + trusted_ca + match_typed_subject_alt_names), reach the same mTLS
backend with the same identity, and both refuse it when the SAN does not match."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _sec_helpers import SPIFFE, MtlsBackend, Pki, server_context, with_upstream_tls

import pymesh
from pymesh.security import PeerIdentityError
from pymesh.server import (
    CLUSTER_TYPE,
    ControlPlane,
    compile_mesh,
)
from pymesh.testing import bootstrap_for, push_snapshot
from pymesh.testing.envoy import envoy_snapshot, free_port, start_envoy


def _closed_since(backend: MtlsBackend, start: int) -> bool:
    return all(r.closed for r in backend.records[start:])


@pytest.fixture
def cp() -> Iterator[ControlPlane]:
    with ControlPlane(port=0) as c:
        yield c


def test_envoy_and_pymesh_share_mtls_config(
    cp: ControlPlane, pki: Pki, tmp_path: Path, client_files: dict[str, str]
) -> None:
    backend = MtlsBackend(server_context(pki, pki.issue("reviews"), tmp_path / "server"))
    envoy_port = free_port()
    base = compile_mesh({"services": {"reviews": {"port": 9080, "endpoints": [backend.address]}}})
    try:
        with (
            pymesh.Mesh(bootstrap=bootstrap_for(cp, "pymesh-interop"), seed=0) as mesh,
            start_envoy(cp.port, "envoy") as envoy,
        ):
            seen: dict[str, dict[str, object]] = {}
            for version, san in (("good", SPIFFE + "reviews"), ("bad", SPIFFE + "ratings")):
                snap = with_upstream_tls(base, client_files, san, version)
                cp.set_snapshot(envoy_snapshot(snap, {"reviews:9080": envoy_port}), "envoy")
                push_snapshot(cp, mesh, snap)
                cp.wait_for_ack(CLUSTER_TYPE, version, 30, "envoy")
                envoy.wait_listening([envoy_port])
                before = backend.accepted
                with httpx.Client(
                    base_url=f"http://127.0.0.1:{envoy_port}",
                    headers={"host": "reviews:9080"},
                    timeout=20,
                ) as via_envoy:
                    r = via_envoy.get("/")
                    seen.setdefault("envoy", {})[version] = (
                        r.status_code,
                        r.headers.get("x-peer"),
                    )
                with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=20) as direct:
                    try:
                        r = direct.get("http://reviews:9080/")
                        result: object = (r.status_code, r.headers.get("x-peer"))
                    except PeerIdentityError as e:
                        result = ("PeerIdentityError", e.sans)
                    seen.setdefault("pymesh", {})[version] = result
                if version == "bad":
                    # Both connected and handshook, and neither sent a request byte.
                    assert backend.wait(functools.partial(_closed_since, backend, before))
                    assert backend.accepted > before
                    assert all(r.bytes_after_handshake == 0 for r in backend.records[before:])
            good = (200, SPIFFE + "client")
            assert seen["envoy"]["good"] == good
            assert seen["pymesh"]["good"] == good
            envoy_bad = seen["envoy"]["bad"]
            assert isinstance(envoy_bad, tuple) and envoy_bad[0] == 503
            pymesh_bad = seen["pymesh"]["bad"]
            assert isinstance(pymesh_bad, tuple) and pymesh_bad[0] == "PeerIdentityError"
            assert ("URI", SPIFFE + "reviews") in pymesh_bad[1]
    finally:
        backend.close()
