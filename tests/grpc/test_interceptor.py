"""MeshInterceptor on a channel the user built: routes, faults and retries apply; the
destination stays the wrapped channel's."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from _backend import ECHO, SPLIT, TARGET, Backend, echo_service, serve

import pymesh
from pymesh.grpc import MeshInterceptor
from pymesh.server import ControlPlane

MakeMesh = Callable[..., pymesh.Mesh]


def test_retries_follow_the_route_but_not_its_destination(
    cp: ControlPlane, make_mesh: MakeMesh
) -> None:
    with Backend("direct", fail_first=2) as direct, Backend("routed") as routed:
        retries = {"attempts": 2, "on": "unavailable", "backoff": {"base": "1ms"}}
        serve(cp, echo_service(endpoints=[routed.address], routes=[{"retries": retries}]))
        inner = grpc.insecure_channel(direct.address)
        ch = grpc.intercept_channel(inner, MeshInterceptor(make_mesh(), TARGET))
        try:
            reply, call = ch.unary_unary(ECHO).with_call(b"x", timeout=10)
            assert list(ch.unary_stream(SPLIT)(b"1", timeout=10)) == [b"direct:0"]
        finally:
            inner.close()
    assert reply == b"direct:x"
    assert call.code() is grpc.StatusCode.OK
    assert direct.count() == 3  # two UNAVAILABLE, then the retry that succeeded
    assert routed.count() == 0


def test_fault_abort_and_no_route(cp: ControlPlane, make_mesh: MakeMesh) -> None:
    with Backend("direct") as direct:
        serve(
            cp,
            echo_service(
                endpoints=[direct.address],
                routes=[
                    {
                        "match": {"headers": {"x-fault": "yes"}},
                        "fault": {"abort": {"grpc_status": 7}},
                    },
                    {"match": {"prefix": "/other/"}},
                ],
            ),
        )
        inner = grpc.insecure_channel(direct.address)
        ch = grpc.intercept_channel(inner, MeshInterceptor(make_mesh(), TARGET))
        try:
            echo = ch.unary_unary(ECHO)
            with pytest.raises(grpc.RpcError) as info:
                echo(b"", timeout=10, metadata=(("x-fault", "yes"),))
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.RpcError) as info:
                echo(b"", timeout=10)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "echo:50051" in info.value.details()
        finally:
            inner.close()
    assert direct.count() == 0
