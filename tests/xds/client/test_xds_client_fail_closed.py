"""The xDS client fails closed: absence is judged only on what a response provably
answers, a rejected response changes nothing it rejects, oversize responses are
reported, subscriptions are batched, unchanged resources are not decoded again.

Against the scripted, real ADS server on 127.0.0.1 (tests/xds/client/_ads_server.py).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from _ads_server import AdsServer
from _xds_builders import cla, eds_cluster, listener
from google.protobuf import any_pb2
from test_xds_client import Recorder, _bootstrap, _client, is_ack, is_nack

from pymesh.errors import XdsStreamError
from pymesh.xds.client import CDS, EDS, LDS, Backoff, XdsClient

NOT_FOUND, PERMISSION_DENIED = 5, 7
#: Long enough that a test finishing first proves the timer played no part.
NEVER = 600.0


@pytest.fixture
def server() -> Any:
    s = AdsServer()
    yield s
    s.stop()


def _names(r: Any) -> set[str]:
    return set(r.resource_names)


def test_response_to_an_earlier_request_does_not_declare_new_names_absent(
    server: AdsServer,
) -> None:
    # Defect 1 of the fail-open issue: a response answering a request that did not name
    # "b" arrived after "b" was subscribed, and "b" was declared DOES_NOT_EXIST.
    a, b = Recorder(), Recorder()
    with _client(server, timeout=NEVER) as client:
        client.watch(LDS, "a", a)
        server.wait_request(lambda r: r.type_url == LDS and _names(r) == {"a"})
        client.watch(LDS, "b", b)
        server.wait_request(lambda r: r.type_url == LDS and _names(r) == {"a", "b"})
        # The server answers the first request only ({"a"}): says nothing about "b".
        n1 = server.send(LDS, [listener("a", "rc")], "1")
        a.wait(lambda e: e[0] == "resource")
        server.wait_request(is_ack(LDS, "1", n1))
        assert b.kinds("b") == []
        assert {r["name"]: r["status"] for r in client.config_dump()["resources"]} == {
            "a": "ACKED",
            "b": "REQUESTED",
        }
        # The answer to the request naming "b" arrives: "b" exists after all.
        server.send(LDS, [listener("a", "rc"), listener("b", "rc")], "2")
        b.wait(lambda e: e[0] == "resource")
        assert b.kinds("b") == ["resource"]
        assert client.stats.does_not_exist == 0


def test_absence_from_a_response_that_answers_the_naming_request_is_definitive(
    server: AdsServer,
) -> None:
    # The only request ever written named "x": the empty answer provably covers it.
    x = Recorder()
    with _client(server, timeout=NEVER) as client:
        client.watch(LDS, "x", x)
        server.wait_request(lambda r: r.type_url == LDS)
        server.send(LDS, [], "1")
        x.wait(lambda e: e == ("dne", "x", None))
        # A response carrying a name first subscribed together with "y" proves the
        # server read that request, so "y" is absent at once too.
        y, z = Recorder(), Recorder()
        mark = server.mark()
        client.watch(LDS, "y", y)
        client.watch(LDS, "z", z)
        server.wait_request(lambda r: r.type_url == LDS and {"y", "z"} <= _names(r), since=mark)
        server.send(LDS, [listener("z", "rc")], "2")
        y.wait(lambda e: e == ("dne", "y", None))
        z.wait(lambda e: e[0] == "resource")


def test_resource_errors_not_found_is_does_not_exist_other_codes_keep_the_value(
    server: AdsServer,
) -> None:
    gone, kept = Recorder(), Recorder()
    with _client(server, timeout=NEVER) as client:
        client.watch(CDS, "gone", gone)
        client.watch(CDS, "kept", kept)
        server.wait_request(lambda r: r.type_url == CDS and _names(r) == {"gone", "kept"})
        n1 = server.send(CDS, [eds_cluster("kept")], "1", errors={"gone": NOT_FOUND})
        gone.wait(lambda e: e == ("dne", "gone", None))
        kept.wait(lambda e: e[0] == "resource")
        server.wait_request(is_ack(CDS, "1", n1))
        server.send(CDS, [], "2", errors={"kept": PERMISSION_DENIED})
        _, _, err = kept.wait(lambda e: e[0] == "error")
        assert "code 7" in err.message and err.resource_name == "kept"
        assert kept.kinds("kept") == ["resource", "error"]  # not deleted
        status = {r["name"]: r["status"] for r in client.config_dump()["resources"]}
        assert status == {"gone": "DOES_NOT_EXIST", "kept": "ACKED"}


def _wrong_type() -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(listener("not-a-cluster", "rc"))
    return a


def _garbage() -> any_pb2.Any:
    return any_pb2.Any(type_url=CDS, value=b"\xff\xff\xff\xff")


@pytest.mark.parametrize("bad", [_wrong_type, _garbage], ids=["wrong-type", "garbage"])
def test_a_nacked_full_state_response_deletes_nothing(server: AdsServer, bad: Any) -> None:
    # Defect 2: a CDS response with one unusable resource was NACKed, and yet cluster
    # "c1", absent from it, was deleted.
    w = Recorder()
    with _client(server, timeout=NEVER) as client:
        client.watch(CDS, "c1", w)
        server.wait_request(lambda r: r.type_url == CDS)
        n1 = server.send(CDS, [eds_cluster("c1")], "1")
        w.wait(lambda e: e[0] == "resource")
        server.wait_request(is_ack(CDS, "1", n1))
        n2 = server.send(CDS, [bad()], "2")
        nack = server.wait_request(is_nack(CDS, n2))
        assert nack.version_info == "1"
        assert "cannot decode" in nack.error_detail.message or "type" in nack.error_detail.message
        assert w.kinds("c1") == ["resource"]
        [res] = client.config_dump()["resources"]
        assert (res["name"], res["status"], res["version"]) == ("c1", "ACKED", "1")
        # An accepted response without "c1" still deletes it: the rule is not lost.
        n3 = server.send(CDS, [], "3")
        w.wait(lambda e: e == ("dne", "c1", None))
        server.wait_request(is_ack(CDS, "3", n3))


def test_oversize_response_is_reported_not_a_silent_loop(server: AdsServer) -> None:
    # Defect 4: gRPC's 4 MiB default failed the stream on every big response, silently.
    w = Recorder()
    client = XdsClient(
        _bootstrap(server.address),
        resource_timeout=NEVER,
        backoff=Backoff(base=0.2, maximum=1.0),
        max_message_bytes=64 * 1024,
    )
    with client:
        client.watch(EDS, "big", w)
        server.wait_request(lambda r: r.type_url == EDS)
        server.send(EDS, [cla("big", [("127.0.0.1", p) for p in range(1, 10_000)])], "1")
        _, _, err = w.wait(lambda e: e[0] == "error")
        assert isinstance(err, XdsStreamError)
        assert "max_message_bytes=65536" in err.message and err.resource_name == "big"
        dump = client.config_dump()
        assert "max_message_bytes" in (dump["last_stream_error"] or "")
        assert client.stats.oversize_responses >= 1


def test_default_limit_takes_an_istio_sized_response(server: AdsServer) -> None:
    # ~6 MiB of endpoints: over gRPC's 4 MiB default, under pymesh's.
    w = Recorder()
    endpoints = [(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 8080) for i in range(250_000)]
    assignment = cla("huge", endpoints)
    assert assignment.ByteSize() > 4 * 1024 * 1024
    with _client(server, timeout=NEVER) as client:
        client.watch(EDS, "huge", w)
        server.wait_request(lambda r: r.type_url == EDS)
        n = server.send(EDS, [assignment], "1")
        _, _, value = w.wait(lambda e: e[0] == "resource")
        server.wait_request(is_ack(EDS, "1", n))
        assert sum(len(loc.endpoints) for loc in value.localities) == len(endpoints)
        assert client.stats.oversize_responses == 0


def test_watches_added_together_go_out_in_few_requests(server: AdsServer) -> None:
    watchers = [Recorder() for _ in range(300)]
    with _client(server, timeout=NEVER) as client:
        client.watch(CDS, "first", Recorder())
        server.wait_request(lambda r: r.type_url == CDS)
        mark = server.mark()
        # One burst from one thread, as a dependency walk or a traffic burst makes them.
        done = threading.Event()

        def burst() -> None:
            for i, w in enumerate(watchers):
                client.watch(CDS, f"c{i}", w)
            done.set()

        client.submit(burst)  # on the xDS thread: all before the next write
        assert done.wait(30)
        req = server.wait_request(lambda r: r.type_url == CDS and len(r.resource_names) == 301)
        later = [r for r in server.requests_of(CDS)][mark:]
        assert len(later) == 1 and later[0] is req
        # Watches from other threads coalesce too (bounded, not one request each).
        for i in range(300, 400):
            client.watch(CDS, f"c{i}", Recorder())
        server.wait_request(lambda r: r.type_url == CDS and len(r.resource_names) == 401)
        assert len(server.requests_of(CDS)) < 2 + 100 // 2


def test_unchanged_resources_are_not_decoded_again(server: AdsServer) -> None:
    w = Recorder()
    with _client(server, timeout=NEVER) as client:
        client.watch(EDS, "e", w)
        server.wait_request(lambda r: r.type_url == EDS)
        server.send(EDS, [cla("e", [("127.0.0.1", 1)])], "1")
        w.wait(lambda e: e[0] == "resource")
        n2 = server.send(EDS, [cla("e", [("127.0.0.1", 1)])], "2")
        server.wait_request(is_ack(EDS, "2", n2))
        assert client.stats.decodes_skipped == 1
        assert w.kinds("e") == ["resource"]
        n3 = server.send(EDS, [cla("e", [("127.0.0.1", 2)])], "3")
        server.wait_request(is_ack(EDS, "3", n3))
        assert w.kinds("e") == ["resource", "resource"]
        assert client.stats.decodes_skipped == 1
