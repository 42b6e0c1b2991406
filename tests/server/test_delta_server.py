"""Delta (incremental) ADS over a real gRPC connection: per-resource versions, removals,
reconnects with initial_resource_versions, ACK/NACK by nonce, subscriptions, NOT_FOUND."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest
from _server_helpers import TIMEOUT, DeltaClient, delta_view, errors_of, simple_snapshot

from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
    NackRecord,
)


@pytest.fixture
def cp() -> Iterator[ControlPlane]:
    with ControlPlane() as server:
        yield server


@pytest.fixture
def client(cp: ControlPlane) -> Iterator[DeltaClient]:
    c = DeltaClient(cp.address)
    yield c
    c.close()


def versions(cp: ControlPlane, type_url: str) -> dict[str, str]:
    snap = cp.cache.get_snapshot("test-node")
    assert snap is not None
    return dict(snap.resource_versions(type_url))


def test_wildcard_gets_everything_then_only_changes(cp: ControlPlane, client: DeltaClient) -> None:
    cp.set_snapshot(simple_snapshot("1", "a:80", "b:80"))
    v1 = versions(cp, LISTENER_TYPE)
    client.send(LISTENER_TYPE)  # legacy wildcard: the first LDS request names nothing
    resp = client.recv()
    assert resp.system_version_info == "1"
    assert resp.type_url == LISTENER_TYPE
    assert delta_view(resp) == (v1, [])
    assert errors_of(resp) == {}
    client.ack(resp)
    ack = cp.wait_for_ack(LISTENER_TYPE, "1", TIMEOUT)
    assert (ack.node_id, ack.nonce) == ("test-node", resp.nonce)

    # b:80 is deleted, c:80 added, a:80 unchanged (same content, so same version).
    cp.set_snapshot(simple_snapshot("2", "a:80", "c:80"))
    pushed = client.recv()
    sent, removed = delta_view(pushed)
    assert sent == {"c:80": versions(cp, LISTENER_TYPE)["c:80"]}
    assert removed == ["b:80"]
    assert errors_of(pushed) == {}  # a wildcard deletion is not an error
    assert pushed.nonce != resp.nonce
    client.ack(pushed)
    cp.wait_for_ack(LISTENER_TYPE, "2", TIMEOUT)

    # A new snapshot version with identical resources sends nothing.
    cp.set_snapshot(simple_snapshot("3", "a:80", "c:80"))
    cp.set_snapshot(simple_snapshot("4", "a:80", "c:80", "d:80"))
    assert delta_view(client.recv())[0].keys() == {"d:80"}
    assert cp.nacks == []


def test_named_subscription_and_not_found(cp: ControlPlane, client: DeltaClient) -> None:
    cp.set_snapshot(simple_snapshot("1", "a:80", "b:80"))
    client.send(ROUTE_TYPE, ["a:80", "ghost"])
    resp = client.recv()
    sent, removed = delta_view(resp)
    assert sent.keys() == {"a:80"}
    # The delta way to say "does not exist", and the TP3 error beside it.
    assert removed == ["ghost"]
    assert errors_of(resp) == {"ghost": 5}
    client.ack(resp)
    assert cp.wait_for_ack(ROUTE_TYPE, "1", TIMEOUT, not_found=["ghost"])

    # Told once: an unrelated change does not repeat it.
    cp.set_snapshot(simple_snapshot("2", "b:80", "a:80", "c:80"))
    with pytest.raises(queue.Empty):
        client.recv(timeout=0.3)  # bounded check that nothing is sent (not a sync point)

    # The missing resource appears: it is sent. Then it is deleted: removed + NOT_FOUND.
    cp.set_snapshot(simple_snapshot("3", "a:80", "ghost"))
    sent, removed = delta_view(client.recv())
    assert (sent.keys(), removed) == ({"ghost"}, [])
    cp.set_snapshot(simple_snapshot("4", "a:80"))
    gone = client.recv()
    assert delta_view(gone) == ({}, ["ghost"])
    assert errors_of(gone) == {"ghost": 5}


@pytest.mark.parametrize("type_url", [LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE])
def test_not_found_for_every_type(cp: ControlPlane, client: DeltaClient, type_url: str) -> None:
    cp.set_snapshot(simple_snapshot("1", "a:80"))
    client.send(type_url, ["nope"])
    resp = client.recv()
    assert delta_view(resp) == ({}, ["nope"])
    assert errors_of(resp) == {"nope": 5}
    assert "'nope' does not exist" in resp.resource_errors[0].error_detail.message


def test_unsubscribe_and_resubscribe_resends(cp: ControlPlane, client: DeltaClient) -> None:
    cp.set_snapshot(simple_snapshot("1", "a:80", "b:80"))
    client.send(ROUTE_TYPE, ["a:80", "b:80"])
    first = client.recv()
    assert delta_view(first)[0].keys() == {"a:80", "b:80"}
    client.ack(first)
    client.send(ROUTE_TYPE, unsubscribe=["b:80"])
    # Unsubscribing needs no answer; a change to b:80 is no longer sent.
    cp.set_snapshot(simple_snapshot("2", "a:80", "b:80", "c:80"))
    with pytest.raises(queue.Empty):
        client.recv(timeout=0.3)  # bounded check that nothing is sent (not a sync point)
    # Subscribing again resends it even though it did not change: the client forgot it.
    client.send(ROUTE_TYPE, ["b:80"])
    assert delta_view(client.recv())[0].keys() == {"b:80"}


def test_wildcard_plus_name_unsubscribe_gets_an_answer(
    cp: ControlPlane, client: DeltaClient
) -> None:
    cp.set_snapshot(simple_snapshot("1", "a:80"))
    client.send(LISTENER_TYPE, ["*", "ghost"])
    first = client.recv()
    assert delta_view(first) == ({"a:80": versions(cp, LISTENER_TYPE)["a:80"]}, ["ghost"])
    # Subscribing by name resends (the client may have forgotten it).
    client.send(LISTENER_TYPE, ["a:80"], nonce=first.nonce)
    assert delta_view(client.recv())[0].keys() == {"a:80"}
    # Dropping the names but not the wildcard: a:80 is still covered by it, so it is sent
    # again; ghost is not, so it is removed (the protocol doc's wildcard + name exception).
    client.send(LISTENER_TYPE, unsubscribe=["a:80", "ghost"])
    last = client.recv()
    assert delta_view(last) == ({"a:80": versions(cp, LISTENER_TYPE)["a:80"]}, ["ghost"])
    assert errors_of(last) == {}  # no longer subscribed by name: a removal, not an error


def test_reconnect_with_initial_resource_versions(cp: ControlPlane) -> None:
    cp.set_snapshot(simple_snapshot("1", "a:80", "b:80", "c:80"))
    v = versions(cp, ROUTE_TYPE)
    c = DeltaClient(cp.address)
    try:
        # The client has a:80 current, b:80 stale, and d:80 which no longer exists.
        c.send(
            ROUTE_TYPE,
            ["a:80", "b:80", "c:80", "d:80"],
            initial={"a:80": v["a:80"], "b:80": "old", "d:80": "old"},
        )
        sent, removed = delta_view(c.recv())
        assert sent == {"b:80": v["b:80"], "c:80": v["c:80"]}
        assert removed == ["d:80"]
    finally:
        c.close()
    c = DeltaClient(cp.address)
    try:
        # A wildcard LDS client that is fully up to date gets nothing at all.
        c.send(LISTENER_TYPE, initial=dict(versions(cp, LISTENER_TYPE)))
        with pytest.raises(queue.Empty):
            c.recv(timeout=0.3)  # bounded check that nothing is sent (not a sync point)
        cp.set_snapshot(simple_snapshot("2", "a:80", "b:80"))
        assert delta_view(c.recv()) == ({}, ["c:80"])
    finally:
        c.close()


def test_nack_is_recorded_and_not_resent(cp: ControlPlane, client: DeltaClient) -> None:
    cp.set_snapshot(simple_snapshot("1", "a:80"))
    client.send(LISTENER_TYPE)
    resp = client.recv()
    client.send(LISTENER_TYPE, nonce=resp.nonce, error="bad listener a:80")
    nack = cp.wait_for_nack(LISTENER_TYPE, TIMEOUT)
    assert nack == NackRecord(LISTENER_TYPE, "test-node", "1", resp.nonce, "bad listener a:80")
    # Not resent; the next change is sent.
    cp.set_snapshot(simple_snapshot("2", "a:80", "b:80"))
    assert delta_view(client.recv())[0].keys() == {"b:80"}
    assert cp.acks == []


def test_stale_nonce_still_changes_the_subscription(cp: ControlPlane, client: DeltaClient) -> None:
    cp.set_snapshot(simple_snapshot("1", "a:80", "b:80"))
    client.send(ROUTE_TYPE, ["a:80"])
    first = client.recv()
    client.ack(first)
    cp.wait_for_ack(ROUTE_TYPE, "1", TIMEOUT)
    # A nonce this stream never sent (or already answered) is not an ACK, but the
    # subscription it carries counts.
    client.send(ROUTE_TYPE, ["b:80"], nonce="no-such-nonce")
    assert delta_view(client.recv())[0].keys() == {"b:80"}
    assert [a.nonce for a in cp.acks] == [first.nonce]


def test_sotw_and_delta_clients_share_one_server(cp: ControlPlane) -> None:
    from _server_helpers import AdsClient, names_of

    cp.set_snapshot(simple_snapshot("1", "a:80"))
    sotw, delta = AdsClient(cp.address, "sotw"), DeltaClient(cp.address, "delta")
    try:
        sotw.send(LISTENER_TYPE)
        delta.send(LISTENER_TYPE)
        assert names_of(sotw.recv()) == ["a:80"]
        assert delta_view(delta.recv())[0].keys() == {"a:80"}
        assert cp.stream_count == 2
        cp.set_snapshot(simple_snapshot("2", "a:80", "b:80"))
        assert names_of(sotw.recv()) == ["a:80", "b:80"]
        assert delta_view(delta.recv())[0].keys() == {"b:80"}
    finally:
        sotw.close()
        delta.close()
