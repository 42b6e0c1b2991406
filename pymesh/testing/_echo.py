"""EchoBackend: a real HTTP/1.1 server on 127.0.0.1 that answers with its own name.

Every response carries the backend's name in the ``x-backend`` header and as the body,
so a test (or the demo) can tell which endpoint served a request. A backend can be told
to fail: the next N requests, or a seeded fraction of them, with a chosen status; and to
answer after a delay.
"""

from __future__ import annotations

import random
import socketserver
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import TracebackType

__all__ = ["EchoBackend", "EchoRequest", "start_echo_backends"]


@dataclass(frozen=True)
class EchoRequest:
    """One request as the backend saw it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    status: int  # the status the backend answered with
    at: float  # time.monotonic() when it arrived
    peer: str = ""  # the client's "host:port": one per connection

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


class _Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    backend: EchoBackend

    def handle_error(self, request: object, client_address: object) -> None:
        # A client closing a keep-alive connection mid-read (a pool dropping a response it
        # will not read, say) is normal for a test upstream; anything else is printed.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real upstream
    # Headers and body go out in two writes: without this, Nagle plus delayed ACKs add
    # ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server: _Server

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        backend = self.server.backend
        status, delay = backend._decide()
        if delay > 0:
            time.sleep(delay)  # simulated service time, not synchronisation
        backend._record(
            EchoRequest(
                method=self.command,
                path=self.path,
                headers=tuple(self.headers.items()),
                body=body,
                status=status,
                at=time.monotonic(),
                peer=f"{self.client_address[0]}:{self.client_address[1]}",
            )
        )
        payload = backend.name.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-backend", backend.name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: tests and the demo print what matters


class EchoBackend:
    """A threaded HTTP server on ``host:0`` answering ``200 <name>`` with ``x-backend: <name>``.

    ``fail_rate`` (0..1) makes that fraction of requests answer ``fail_status``, decided by
    a ``random.Random(seed)`` so runs repeat; :meth:`fail_next` fails the next N requests;
    ``delay`` (seconds) is added to every answer. Use as a context manager, or call
    :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        name: str = "echo",
        *,
        host: str = "127.0.0.1",
        fail_rate: float = 0.0,
        fail_status: int = 503,
        delay: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be within 0..1; got {fail_rate!r}")
        self.name = name
        self.host = host
        self.fail_rate = fail_rate
        self.fail_status = fail_status
        self.delay = delay
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._fail_next: list[int] = []  # statuses for the next requests, in order
        self._requests: list[EchoRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> EchoBackend:
        """Bind an OS-assigned port and serve on a daemon thread. Returns self."""
        if self._server is not None:
            raise RuntimeError(f"echo backend {self.name!r} already started")
        server = _Server((self.host, 0), _Handler)
        server.backend = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"pymesh-echo-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    def __enter__(self) -> EchoBackend:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.address if self._server is not None else "stopped"
        return f"<EchoBackend {self.name!r} {where} requests={self.request_count}>"

    # -- addresses -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError(f"echo backend {self.name!r} is not started")
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """``host:port``, as a mesh file endpoint."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://host:port`` for direct requests."""
        return f"http://{self.address}"

    # -- behaviour -----------------------------------------------------------------

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status``."""
        with self._lock:
            self._fail_next.extend([status] * count)

    def _decide(self) -> tuple[int, float]:
        with self._lock:
            if self._fail_next:
                return self._fail_next.pop(0), self.delay
            if self.fail_rate and self._rng.random() < self.fail_rate:
                return self.fail_status, self.delay
            return 200, self.delay

    def _record(self, req: EchoRequest) -> None:
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()

    # -- observation ---------------------------------------------------------------

    @property
    def requests(self) -> list[EchoRequest]:
        """Every request served so far (a copy), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many requests were answered."""
        with self._lock:
            return len(self._requests)

    def status_counts(self) -> Counter[int]:
        """Answers by status code."""
        with self._lock:
            return Counter(r.status for r in self._requests)

    def reset(self) -> None:
        """Forget recorded requests and pending failures."""
        with self._lock:
            self._requests.clear()
            self._fail_next.clear()

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[EchoRequest]:
        """Block until at least ``count`` requests arrived; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"echo backend {self.name!r} saw {len(self._requests)} requests, "
                    f"wanted {count}, within {timeout}s"
                )
            return list(self._requests)


def start_echo_backends(
    n: int,
    prefix: str = "backend",
    *,
    fail_rate: float = 0.0,
    fail_status: int = 503,
    delay: float = 0.0,
    seed: int = 0,
) -> list[EchoBackend]:
    """Start ``n`` backends named ``{prefix}-0`` ... ``{prefix}-{n-1}``; close them yourself.

    Each gets its own seed (``seed + i``) so their failure sequences differ but repeat.
    """
    started: list[EchoBackend] = []
    try:
        for i in range(n):
            b = EchoBackend(
                f"{prefix}-{i}",
                fail_rate=fail_rate,
                fail_status=fail_status,
                delay=delay,
                seed=seed + i,
            )
            started.append(b.start())
    except BaseException:
        for b in started:
            b.close()
        raise
    return started
