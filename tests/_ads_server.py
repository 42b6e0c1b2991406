"""A scripted ADS server for tests: a real grpc server on 127.0.0.1 whose responses the
test sends by hand, recording every DiscoveryRequest it receives.

Sync API: ``send(...)`` pushes a DiscoveryResponse on the current stream;
``wait_request(predicate)`` blocks (on a Condition) until a matching request arrives.
``stop()`` / ``restart()`` kill and revive the server on the same port.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

_CLOSE = object()


@dataclass
class Recorded:
    stream: int
    request: Any  # DiscoveryRequest


class _Stream:
    def __init__(self, sid: int) -> None:
        self.id = sid
        self.responses: queue.Queue[Any] = queue.Queue()


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(
        self, *, unix_path: str | None = None, credentials: grpc.ServerCredentials | None = None
    ) -> None:
        self._unix_path = unix_path
        self._credentials = credentials
        self._cond = threading.Condition()
        self.requests: list[Recorded] = []
        self._streams: list[_Stream] = []
        self._ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self.port = 0
        self._server: grpc.Server | None = None
        self.start()

    @property
    def address(self) -> str:
        if self._unix_path:
            return f"unix://{self._unix_path}"
        return f"127.0.0.1:{self.port}"

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, server)
        bind = f"unix:{self._unix_path}" if self._unix_path else f"127.0.0.1:{self.port}"
        if self._credentials is not None:
            port = server.add_secure_port(bind, self._credentials)
        else:
            port = server.add_insecure_port(bind)
        assert port, "could not bind"
        self.port = port
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            with self._cond:
                for s in self._streams:
                    s.responses.put(_CLOSE)
                self._streams.clear()
            self._server.stop(grace=None).wait(5)
            self._server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # ------------------------------------------------------------ servicer
    def StreamAggregatedResources(
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        stream = _Stream(next(self._ids))
        with self._cond:
            self._streams.append(stream)
            self._cond.notify_all()

        def read() -> None:
            try:
                for req in request_iterator:
                    with self._cond:
                        self.requests.append(Recorded(stream.id, req))
                        self._cond.notify_all()
            except Exception:
                pass
            stream.responses.put(_CLOSE)

        threading.Thread(target=read, daemon=True, name="ads-test-reader").start()
        while context.is_active():
            item = stream.responses.get()
            if item is _CLOSE:
                break
            yield item
        with self._cond:
            if stream in self._streams:
                self._streams.remove(stream)
            self._cond.notify_all()

    # ------------------------------------------------------------ test API
    def wait_stream(self, timeout: float = 30.0) -> int:
        """Wait until a stream is open; returns its id."""
        with self._cond:
            ok = self._cond.wait_for(lambda: bool(self._streams), timeout)
            assert ok, "no ADS stream opened"
            return self._streams[-1].id

    def wait_no_stream(self, timeout: float = 30.0) -> None:
        """Wait until every stream has ended (the client went away)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: not self._streams, timeout)
            assert ok, "an ADS stream is still open"

    def send(
        self,
        type_url: str,
        resources: Sequence[Any],
        version: str,
        *,
        nonce: str | None = None,
        errors: dict[str, int] | None = None,
    ) -> str:
        """Send a response on the newest stream; returns its nonce.

        ``resources`` are messages (packed here) or ready ``Any``s (sent as they are, to
        send a wrong type or garbage bytes); ``errors`` maps names to a google.rpc code
        sent as ``resource_errors`` (xRFC TP3).
        """
        nonce = nonce or f"n{next(self._nonces)}"
        resp = discovery_pb2.DiscoveryResponse(type_url=type_url, version_info=version, nonce=nonce)
        for r in resources:
            if isinstance(r, any_pb2.Any):
                resp.resources.append(r)
            else:
                resp.resources.add().Pack(r)
        for name, code in (errors or {}).items():
            err = resp.resource_errors.add()
            err.resource_name.name = name
            err.error_detail.code = code
            err.error_detail.message = f"server error {code} for {name}"
        with self._cond:
            assert self._streams, "no stream"
            self._streams[-1].responses.put(resp)
        return nonce

    def mark(self) -> int:
        with self._cond:
            return len(self.requests)

    def wait_request(
        self, predicate: Callable[[Any], bool], *, since: int = 0, timeout: float = 30.0
    ) -> Any:
        """The first request at index >= ``since`` matching ``predicate``."""
        found: list[Any] = []

        def check() -> bool:
            for rec in self.requests[since:]:
                if predicate(rec.request):
                    found.append(rec.request)
                    return True
            return False

        with self._cond:
            ok = self._cond.wait_for(check, timeout)
        assert ok, f"no matching request; got {[_short(r.request) for r in self.requests]}"
        return found[0]

    def requests_of(self, type_url: str) -> list[Any]:
        with self._cond:
            return [r.request for r in self.requests if r.request.type_url == type_url]


def _short(req: Any) -> str:
    return (
        f"{req.type_url.rsplit('.', 1)[-1]} v={req.version_info!r} n={req.response_nonce!r} "
        f"names={list(req.resource_names)} err={req.error_detail.message!r}"
    )
