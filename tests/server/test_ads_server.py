"""The ADS servicer over a real gRPC connection: ACK/NACK, pushes, subscriptions."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator

import grpc
import pytest
from _server_helpers import TIMEOUT, AdsClient, errors_of, names_of, stamped_snapshot

from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
    NackRecord,
    Snapshot,
)


@pytest.fixture
def cp() -> Iterator[ControlPlane]:
    with ControlPlane() as server:
        yield server


@pytest.fixture
def client(cp: ControlPlane) -> Iterator[AdsClient]:
    c = AdsClient(cp.address)
    yield c
    c.close()


def test_address_and_port(cp: ControlPlane) -> None:
    assert cp.port > 0
    assert cp.address == f"127.0.0.1:{cp.port}"
    assert "serving" in repr(cp)


def test_wildcard_lds_gets_all_and_ack_is_recorded(cp: ControlPlane, client: AdsClient) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80", "b:80"))
    client.send(LISTENER_TYPE)
    resp = client.recv()
    assert resp.version_info == "1"
    assert resp.nonce
    assert resp.type_url == LISTENER_TYPE
    assert names_of(resp) == ["a:80", "b:80"]
    client.ack(resp)
    ack = cp.wait_for_ack(LISTENER_TYPE, "1", TIMEOUT)
    assert (ack.node_id, ack.nonce) == ("test-node", resp.nonce)
    assert cp.nacks == []


def test_ack_does_not_resend_and_change_is_pushed(cp: ControlPlane, client: AdsClient) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    client.send(LISTENER_TYPE)
    first = client.recv()
    client.ack(first)
    cp.wait_for_ack(LISTENER_TYPE, "1", TIMEOUT)
    cp.set_snapshot(stamped_snapshot("2", "a:80", "c:80"))
    # Had the server answered the ACK, that (version 1) response would come first.
    pushed = client.recv()
    assert pushed.version_info == "2"
    assert names_of(pushed) == ["a:80", "c:80"]
    assert pushed.nonce != first.nonce


def test_named_subscription_only_gets_named(cp: ControlPlane, client: AdsClient) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80", "b:80", "c:80"))
    client.send(ROUTE_TYPE, ["b:80"])
    resp = client.recv()
    assert names_of(resp) == ["b:80"]
    # Subscribing to more resources is answered at once, with the same version.
    client.send(ROUTE_TYPE, ["b:80", "c:80", "missing"], version="1", nonce=resp.nonce)
    resp2 = client.recv()
    assert resp2.version_info == "1"
    assert names_of(resp2) == ["b:80", "c:80"]
    assert errors_of(resp2) == {"missing": 5}


def test_empty_rds_subscription_is_not_wildcard(cp: ControlPlane, client: AdsClient) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    client.send(ROUTE_TYPE, [])
    assert names_of(client.recv()) == []
    client.send(LISTENER_TYPE, [])
    assert names_of(client.recv()) == ["a:80"]


def test_explicit_star_is_wildcard(cp: ControlPlane, client: AdsClient) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80", "b:80"))
    client.send(ROUTE_TYPE, ["*"])
    assert names_of(client.recv()) == ["a:80", "b:80"]


def test_nack_is_recorded_and_not_resent(cp: ControlPlane, client: AdsClient) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    client.send(LISTENER_TYPE)
    resp = client.recv()
    client.send(LISTENER_TYPE, version="", nonce=resp.nonce, error="bad listener a:80")
    nack = cp.wait_for_nack(LISTENER_TYPE, TIMEOUT)
    assert nack.message == "bad listener a:80"
    cp.set_snapshot(stamped_snapshot("2", "a:80"))
    # The NACKed version is not resent: the next response is the new version.
    assert client.recv().version_info == "2"
    assert cp.nacks == [
        NackRecord(LISTENER_TYPE, "test-node", "1", resp.nonce, "bad listener a:80")
    ]
    assert cp.acks == []


def test_stale_nonce_is_ignored(cp: ControlPlane, client: AdsClient) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    client.send(LISTENER_TYPE)
    old = client.recv()
    cp.set_snapshot(stamped_snapshot("2", "a:80"))
    new = client.recv()
    client.send(LISTENER_TYPE, version="1", nonce=old.nonce)  # answers the old response
    client.ack(new)
    cp.wait_for_ack(LISTENER_TYPE, "2", TIMEOUT)
    assert [a.version for a in cp.acks] == ["2"]


def test_per_node_snapshots(cp: ControlPlane) -> None:
    cp.set_snapshot(stamped_snapshot("default", "d:80"))
    cp.set_snapshot(stamped_snapshot("special", "s:80"), node_id="envoy")
    a, b = AdsClient(cp.address, "envoy"), AdsClient(cp.address, "other")
    try:
        a.send(LISTENER_TYPE)
        b.send(LISTENER_TYPE)
        ra, rb = a.recv(), b.recv()
        assert (ra.version_info, names_of(ra)) == ("special", ["s:80"])
        assert (rb.version_info, names_of(rb)) == ("default", ["d:80"])
        a.ack(ra)
        b.ack(rb)
        assert cp.wait_for_ack(LISTENER_TYPE, "special", TIMEOUT, node_id="envoy")
        assert cp.wait_for_ack(LISTENER_TYPE, "default", TIMEOUT, node_id="other")
        # Changing the default does not touch the node with its own snapshot.
        cp.set_snapshot(stamped_snapshot("default2", "d:80"))
        assert b.recv().version_info == "default2"
        cp.set_snapshot(stamped_snapshot("special2", "s:80"), node_id="envoy")
        assert a.recv().version_info == "special2"
    finally:
        a.close()
        b.close()


def test_request_before_any_snapshot_waits_for_one(cp: ControlPlane, client: AdsClient) -> None:
    client.send(LISTENER_TYPE)
    with pytest.raises(queue.Empty):
        client.recv(timeout=0.3)  # nothing to send yet (a bounded check, not a sync point)
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    assert client.recv().version_info == "1"


def test_disconnect_then_new_stream(cp: ControlPlane) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    for _ in range(3):  # streams end cleanly and free their worker
        c = AdsClient(cp.address)
        c.send(LISTENER_TYPE)
        assert c.recv().version_info == "1"
        c.close()
    c = AdsClient(cp.address)
    try:
        c.send(LISTENER_TYPE)
        assert c.recv().version_info == "1"
    finally:
        c.close()


def test_stop_ends_open_streams() -> None:
    cp = ControlPlane().start()
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    c = AdsClient(cp.address)
    c.send(LISTENER_TYPE)
    assert c.recv().version_info == "1"
    cp.stop()
    end = c.wait_closed()  # returns only once the stream has ended
    if isinstance(end, grpc.RpcError):
        assert end.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    c.close()
    assert "stopped" in repr(cp)


def test_wait_for_ack_times_out(cp: ControlPlane) -> None:
    with pytest.raises(TimeoutError, match="no ACK"):
        cp.wait_for_ack(LISTENER_TYPE, "never", timeout=0.05)


def test_inconsistent_snapshot_is_refused(cp: ControlPlane) -> None:
    from envoy.config.listener.v3 import listener_pb2

    from pymesh.server import Snapshot, SnapshotInconsistent

    snap = stamped_snapshot("1", "a:80")
    broken = Snapshot.of("2", listeners=list(snap.get(LISTENER_TYPE).values()))
    assert isinstance(next(iter(broken.get(LISTENER_TYPE).values())), listener_pb2.Listener)
    with pytest.raises(SnapshotInconsistent, match="route config 'a:80'"):
        cp.set_snapshot(broken)


def test_nonce_from_a_previous_stream_is_not_stale(cp: ControlPlane) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    c = AdsClient(cp.address)
    try:
        # A reconnecting client may echo the last nonce it saw on its old stream.
        c.send(LISTENER_TYPE, version="0", nonce="12345")
        assert c.recv().version_info == "1"
    finally:
        c.close()


def test_many_concurrent_streams(cp: ControlPlane) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    clients = [AdsClient(cp.address, f"n{i}") for i in range(20)]
    try:
        for c in clients:
            c.send(LISTENER_TYPE)
        for c in clients:
            c.ack(c.recv())
        for i in range(20):
            cp.wait_for_ack(LISTENER_TYPE, "1", TIMEOUT, node_id=f"n{i}")
        cp.set_snapshot(stamped_snapshot("2", "a:80"))
        assert {c.recv().version_info for c in clients} == {"2"}
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("type_url", [LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE])
def test_subscribed_but_unknown_names_are_not_found(
    cp: ControlPlane, client: AdsClient, type_url: str
) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    known = "a:80" if type_url in (LISTENER_TYPE, ROUTE_TYPE) else None
    names = ["ghost", "zombie", *([known] if known else [])]
    client.send(type_url, names)
    resp = client.recv()
    assert errors_of(resp) == {"ghost": 5, "zombie": 5}
    err = resp.resource_errors[0]
    assert "'ghost' does not exist" in err.error_detail.message
    assert type_url.rsplit(".", 1)[-1] in err.error_detail.message
    assert len(resp.resources) == (1 if known else 0)
    # Reported again in the next response for the type: SotW responses are whole.
    client.ack(resp, tuple(names))
    cp.wait_for_ack(type_url, "1", TIMEOUT)
    cp.set_snapshot(stamped_snapshot("2", "a:80", "ghost"))
    if type_url in (LISTENER_TYPE, ROUTE_TYPE):
        pushed = client.recv()
        assert pushed.version_info == "2"
        assert errors_of(pushed) == {"zombie": 5}
        return
    # Snapshot 2 has no clusters or endpoints either: that type is not sent again (the
    # client holds version 1's content, which is 2's), and its ACK of 1 stands for 2.
    # The stream handles the change before a later request, so the next response is the
    # answer to that request.
    client.send(LISTENER_TYPE, ["a:80"])
    assert client.recv().type_url == LISTENER_TYPE
    assert cp.type_version("2", type_url) == "1"
    assert cp.wait_for_ack(type_url, "2", TIMEOUT).version == "1"


def test_only_the_types_a_snapshot_changes_are_sent_again_in_push_order(
    cp: ControlPlane, client: AdsClient
) -> None:
    """An endpoint change is one EDS response, not every listener and route again; what
    changed goes out clusters first, then endpoints, listeners, routes (Envoy's order)."""
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    client.send(LISTENER_TYPE)
    client.ack(client.recv())
    client.send(ROUTE_TYPE, ["a:80"])
    client.ack(client.recv(), ("a:80",))
    cp.wait_for_ack(ROUTE_TYPE, "1", TIMEOUT)
    # Same listeners, new route content: only RDS goes out.
    same_listeners = stamped_snapshot("1", "a:80").get(LISTENER_TYPE).values()
    routes = stamped_snapshot("2", "a:80").get(ROUTE_TYPE).values()
    cp.set_snapshot(Snapshot.of("2", listeners=same_listeners, routes=routes))
    pushed = client.recv()
    assert (pushed.type_url, pushed.version_info) == (ROUTE_TYPE, "2")
    client.ack(pushed, ("a:80",))
    assert cp.wait_for_ack(LISTENER_TYPE, "2", TIMEOUT).version == "1"
    # Both change: the listener is sent first although routes changed too.
    cp.set_snapshot(stamped_snapshot("3", "a:80"))
    first, second = client.recv(), client.recv()
    assert [(r.type_url, r.version_info) for r in (first, second)] == [
        (LISTENER_TYPE, "3"),
        (ROUTE_TYPE, "3"),
    ]


def test_wildcard_reports_no_errors_but_explicit_names_beside_it_do(
    cp: ControlPlane, client: AdsClient
) -> None:
    cp.set_snapshot(stamped_snapshot("1", "a:80"))
    client.send(LISTENER_TYPE)
    resp = client.recv()
    assert (names_of(resp), errors_of(resp)) == (["a:80"], {})
    # Adding a missing name to the wildcard is a new subscription: answered at once.
    client.send(LISTENER_TYPE, ["*", "ghost"], version="1", nonce=resp.nonce)
    resp2 = client.recv()
    assert (names_of(resp2), errors_of(resp2)) == (["a:80"], {"ghost": 5})


def test_control_planes_share_one_loop_that_outlives_them() -> None:
    """Stopping one control plane never closes the loop others (or late grpc completions)
    still use; all run on one ``pymesh-control-plane`` thread."""
    first, second = ControlPlane().start(), ControlPlane().start()
    try:
        first.set_snapshot(stamped_snapshot("1", "a:80"))
        second.set_snapshot(stamped_snapshot("1", "a:80"))
        a, b = AdsClient(first.address), AdsClient(second.address)
        try:
            a.send(LISTENER_TYPE)
            b.send(LISTENER_TYPE)
            assert a.recv().version_info == b.recv().version_info == "1"
            first.stop()  # while a's stream is open
            a.wait_closed()
            with ControlPlane() as third:
                third.set_snapshot(stamped_snapshot("3", "a:80"))
                c = AdsClient(third.address)
                try:
                    c.send(LISTENER_TYPE)
                    assert c.recv().version_info == "3"
                finally:
                    c.close()
            second.set_snapshot(stamped_snapshot("2", "a:80"))
            assert b.recv().version_info == "2"
            loops = [t for t in threading.enumerate() if t.name == "pymesh-control-plane"]
            assert len(loops) == 1
        finally:
            a.close()
            b.close()
    finally:
        first.stop()
        second.stop()


def test_blocking_calls_from_the_control_planes_own_loop_are_refused(cp: ControlPlane) -> None:
    from pymesh.server._runner import shared_loop

    async def stop_from_inside() -> None:
        cp.stop()

    fut = asyncio.run_coroutine_threadsafe(stop_from_inside(), shared_loop())
    with pytest.raises(RuntimeError, match="another thread"):
        fut.result(TIMEOUT)
    assert "serving" in repr(cp)  # still running; the fixture stops it normally
