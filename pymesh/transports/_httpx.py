"""httpx transports that route every request through the mesh.

``MeshTransport`` (sync) and ``AsyncMeshTransport`` (asyncio) are drivers of the call
engine (:mod:`pymesh.call`: plan, admission, attempts, hedging), which also drives the
gRPC channels: they only do the I/O and map httpcore's answer or exception to a Reply.
Each keeps one connection pool per cluster and endpoint; HTTP/1.1 pools enforce the
cluster's max_connections and max_pending_requests (pymesh.transports._pool).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import typing
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor

import httpcore
import httpx

from pymesh._mesh import ListenerState, Mesh
from pymesh._upstream import ClusterRuntime
from pymesh.call import (
    Attempts,
    LocalReply,
    Plan,
    Reply,
    Ticket,
    plan_by_path,
    plan_request,
    run_async,
    run_sync,
)
from pymesh.call._session import http_set_cookie
from pymesh.routing import RequestInfo
from pymesh.telemetry import RequestObserver, observe_request
from pymesh.telemetry._providers import off as telemetry_off
from pymesh.transports._conn_limits import AsyncLimitedBackend, LimitedBackend
from pymesh.transports._exceptions import failure_outcome, to_httpx
from pymesh.transports._pool import COUNT_REQUEST, AsyncEndpointPool, EndpointPool, PoolOverflow
from pymesh.transports._tls import (
    AsyncMeshTlsBackend,
    MeshTlsBackend,
    refusing_ssl_context,
    tls_lookup,
)
from pymesh.transports._wire import core_request, httpx_response
from pymesh.xds.resources.endpoint import Endpoint

__all__ = ["AsyncMeshTransport", "MeshTransport"]

log = logging.getLogger("pymesh.transport")

_KEEPALIVE_EXPIRY = 5.0  # idle upstream connections of a pool with no cluster (httpx default)
_GC_EVERY = 512  # requests between sweeps for pools of endpoints that left
_UPSTREAM_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError)
_AsyncPool = httpcore.AsyncConnectionPool | AsyncEndpointPool
_SyncPool = httpcore.ConnectionPool | EndpointPool
_TIMEOUT_KEYS = ("connect", "read", "write", "pool")  # httpcore's per-operation timeouts
_HEDGE_THREADS = 256  # sync hedging: attempts in flight at once, over all requests


#: How a hedged attempt that lost the race ends on its span.
_LOST = CancelledError("lost the hedging race")


def _failure(exc: Exception) -> Reply:
    if isinstance(exc, PoolOverflow):  # refused before sending: a local 503 UO
        return Reply(refused=("UO", str(exc)), error=exc)
    return Reply(failure=failure_outcome(exc), error=exc)


def _answer(a: Attempts, resp: httpcore.Response, t: Ticket | None = None) -> Reply:
    if t is not None and t.wants_load_report:
        t.report_headers(resp.headers)  # weighted round robin's per-call ORCA report
    return Reply(resp, resp.status, None, _header_map(resp.headers) if a.needs_headers else None)


def _attempt_ended(obs: RequestObserver, t: Ticket, reason: str | None) -> None:
    """Telemetry of one settled attempt (a hedged one ends with its own handle)."""
    reply = t.reply
    assert reply is not None
    status = reply.status if reply.failure is None else None
    obs.attempt_done(status, reply.error, reason, attempt=t.trace)  # type: ignore[arg-type]


class _IO:
    """What the sync and async httpx I/O share: building an attempt's upstream request
    and reading a hedged attempt's end (pymesh.call.SyncIO / AsyncIO)."""

    __slots__ = ("a", "obs", "one", "plan", "raw", "request", "transport")

    def __init__(
        self,
        transport: typing.Any,
        a: Attempts,
        plan: Plan,
        request: httpx.Request,
        obs: RequestObserver | None,
        raw: list[tuple[bytes, bytes]],
        one: float | None,
    ) -> None:
        self.transport = transport
        self.a = a
        self.plan = plan
        self.request = request
        self.obs = obs
        #: ``request.headers.raw``: httpx builds a new list on every read of it.
        self.raw = raw
        #: The caller's one timeout (:func:`_one_timeout`), read once per request.
        self.one = one

    def upstream(self, t: Ticket) -> tuple[ClusterRuntime, Endpoint, httpcore.Request]:
        """Attempt ``t``'s cluster, endpoint and httpcore request: the request's headers
        after the route's edits (trace context headers, when traced, replace any of the
        same name the caller set), timeouts bounded by the attempt's deadline, the
        route's per_try_idle_timeout (read) and the cluster's connect_timeout (Envoy's,
        default 5 s). One frame, no helper call, in the common case."""
        obs = self.obs
        rt, ep = t.runtime, t.endpoint
        assert rt is not None and ep is not None
        plan = self.plan
        a = self.a
        raw = self.raw
        action = plan.action
        if (
            plan.headers is None
            and not action.host_rewrite_literal
            and not action.auto_host_rewrite
            and raw
            and raw[0][0].lower() == b"host"
        ):
            headers = raw  # _outgoing_headers' answer for the common case
        else:
            headers = _outgoing_headers(plan, raw, ep)
        if obs is not None:
            trace = obs.attempt(rt, ep)
            if a.hedging:  # attempts run side by side: each ends with its own handle
                t.trace = obs.detach_attempt()
            if trace:
                names = {k for k, _ in trace}
                headers = [(k, v) for k, v in headers if k.lower() not in names]
                headers.extend(trace)
        retry = plan.retry
        idle = retry.per_try_idle_timeout if retry is not None else None
        cluster = rt.cluster
        connect = cluster.connect_timeout if cluster is not None else None
        request = self.request
        given = request.extensions
        caller = given.get("timeout")
        deadline = t.deadline
        one = self.one
        timeout: Timeouts
        if one is not None and deadline is not None and idle is None:
            # _ops_timeout's answer for httpx's one timeout for all four, in one go.
            left = deadline - time.monotonic()
            if left < 0.0:
                left = 0.0
            v = left if left <= one else one
            timeout = {
                "connect": connect if connect is not None and connect < v else v,
                "read": v,
                "write": v,
                "pool": v,
            }
        else:
            timeout = _ops_timeout(caller, deadline, idle, connect)
        extensions: dict[str, typing.Any]
        if caller is not None and len(given) == 1:
            extensions = {"timeout": timeout}  # httpx's usual extensions: no copy to make
        else:
            extensions = dict(given)
            extensions["timeout"] = timeout
        if not a.pooled:  # the engine took the request slot (hedging)
            extensions[COUNT_REQUEST] = False
        req = core_request(
            request.method.encode("ascii"),
            b"http",
            ep.host.encode("ascii"),
            ep.port,
            plan.path.encode("ascii"),
            headers,
            request.stream,
            extensions,
        )
        return rt, ep, req

    def collect(self, t: Ticket) -> Reply:
        fut: typing.Any = t.handle  # a concurrent or an asyncio future
        exc = fut.exception()
        if exc is None:
            return _answer(self.a, fut.result(), t)
        if isinstance(exc, _UPSTREAM_ERRORS):
            return _failure(exc)
        raise exc

    def lost(self, t: Ticket) -> None:
        if self.obs is not None:
            self.obs.attempt_done(None, _LOST, None, attempt=t.trace)  # type: ignore[arg-type]


def _finish(a: Attempts, request: httpx.Request, result: Ticket | LocalReply) -> httpx.Response:
    """The engine's answer when it is no upstream response: a local reply, or a last
    failure (Envoy's local 504 when a timeout of the route's fired, else httpx's own
    error raised)."""
    if isinstance(result, LocalReply):
        return _local_response(result, request)
    reply = result.reply
    assert reply is not None and reply.failure is not None
    failure = reply.failure
    exc = reply.error
    assert isinstance(exc, Exception)
    if failure.timeout:
        local = a.timed_out(result, _idle_timeout_fired(a.plan, request, exc))
        if local is not None:
            return _local_response(local, request)
    raise to_httpx(exc) from exc


def _close_abandoned(fut: Future[httpcore.Response]) -> None:
    """A sync hedged attempt that lost: close its response when it arrives."""
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


Timeouts = dict[str, float | None]


def _one_timeout(t: Timeouts | None) -> float | None:
    """The caller's one timeout when httpx's four (connect, read, write, pool) are the
    same, as httpx's ``timeout=`` sets them: the common case; else None."""
    if t and len(t) == 4:
        get = t.get
        c = get("connect")
        if c is not None and c == get("read") == get("write") == get("pool"):
            return c
    return None


def _longest_timeout(t: Timeouts | None) -> float | None:
    """The caller's longest per-operation timeout (httpx has no total timeout)."""
    longest: float | None = None
    for v in (t or {}).values():
        if v is not None and (longest is None or v > longest):
            longest = v
    return longest


def _caller_timeout(request: httpx.Request) -> float | None:
    """The caller's longest per-operation timeout (httpx has no total timeout)."""
    t: Timeouts | None = request.extensions.get("timeout")
    one = _one_timeout(t)
    return one if one is not None else _longest_timeout(t)


def _default_port_authority(request: httpx.Request) -> str | None:
    """``host:80`` / ``host:443`` when the URL had no explicit port (httpx drops a written
    default port, so ``http://svc:80/`` arrives as ``svc``); None otherwise."""
    url = request.url
    if url.port is not None:
        return None
    return f"{url.netloc.decode('ascii')}:{443 if url.scheme == 'https' else 80}"


class _LazyHeaders(Mapping[str, str]):
    """The request's headers as routing sees them (lower-case names, repeated values
    joined with ","), built on first use: most route tables never look at a header."""

    __slots__ = ("_joined", "_raw", "_repeated", "repeated")

    def __init__(self, raw: list[tuple[str, str]] | typing.Callable[[], list[tuple[str, str]]]):
        self._raw = raw
        self._joined: dict[str, str] | None = None
        self._repeated: dict[str, list[str]] = {}
        #: Individual values of headers that occur more than once (Envoy matches each).
        self.repeated = _Repeated(self)

    def _build(self) -> dict[str, str]:
        joined: dict[str, str] = {}
        raw = self._raw
        for k, v in raw() if callable(raw) else raw:
            prev = joined.get(k)
            if prev is None:
                joined[k] = v
            else:
                joined[k] = f"{prev},{v}"
                self._repeated.setdefault(k, [prev]).append(v)
        self._joined = joined
        return joined

    def get(self, key: str, default: typing.Any = None) -> typing.Any:
        joined = self._joined if self._joined is not None else self._build()
        return joined.get(key, default)

    def __getitem__(self, key: str) -> str:
        joined = self._joined if self._joined is not None else self._build()
        return joined[key]

    def __iter__(self) -> Iterator[str]:
        joined = self._joined if self._joined is not None else self._build()
        return iter(joined)

    def __len__(self) -> int:
        joined = self._joined if self._joined is not None else self._build()
        return len(joined)


class _Repeated(Mapping[str, list[str]]):
    """The repeated-header view of :class:`_LazyHeaders` (builds it on first use)."""

    __slots__ = ("_owner",)

    def __init__(self, owner: _LazyHeaders) -> None:
        self._owner = owner

    def _map(self) -> dict[str, list[str]]:
        owner = self._owner
        if owner._joined is None:
            owner._build()
        return owner._repeated

    def __getitem__(self, key: str) -> list[str]:
        return self._map()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())


def _authority(request: httpx.Request, raw: list[tuple[bytes, bytes]]) -> str:
    """The request's authority: its (first) Host header, else the URL's."""
    if raw and raw[0][0].lower() == b"host":
        return raw[0][1].decode("latin-1")  # where httpx puts it
    for key, value in raw:
        if key.lower() == b"host":
            return value.decode("latin-1")
    return request.url.netloc.decode("ascii")


def _request_info(request: httpx.Request, authority: str, path: str) -> RequestInfo:
    headers = request.headers
    lazy = _LazyHeaders(headers.multi_items)
    grpc = False
    method = request.method
    if method == "POST":  # gRPC is always a POST
        for key, value in headers.raw:
            if key.lower() == b"content-type":
                grpc = value.startswith(b"application/grpc")
    return RequestInfo(method, authority, path, lazy, grpc, repeated=lazy.repeated)


def _local_response(reply: LocalReply, request: httpx.Request) -> httpx.Response:
    headers = [("content-type", "text/plain"), ("x-pymesh-local-reply", reply.flags or "1")]
    headers.extend(reply.headers)
    if reply.grpc_status is not None and request.headers.get("content-type", "").startswith(
        "application/grpc"
    ):
        headers.append(("grpc-status", str(reply.grpc_status)))
    return httpx.Response(reply.status, headers=headers, content=reply.body, request=request)


def _is_replayable(request: httpx.Request) -> bool:
    """Buffered bodies (bytes/form/json, or already read) can be sent again."""
    return isinstance(request.stream, httpx.ByteStream) or hasattr(request, "_content")


def _ops_timeout(
    caller: dict[str, float | None] | None,
    deadline: float | None,
    idle: float | None = None,
    connect: float | None = None,
) -> dict[str, float | None]:
    """The caller's per-operation timeouts, each capped by the time left to the deadline;
    ``idle`` (the route's per_try_idle_timeout) caps the read timeout, which is httpcore's
    wait between two reads of the response: Envoy's "no progress for this long";
    ``connect`` (the cluster's connect_timeout) caps the connect timeout."""
    if not caller:
        caller = {}
    if deadline is None:
        out = dict(caller)
    else:
        left = deadline - time.monotonic()
        if left < 0.0:
            left = 0.0
        get = caller.get
        c, r, w, p = get("connect"), get("read"), get("write"), get("pool")
        if c is not None and c == r == w == p and left <= c:
            # httpx's usual one timeout for all, and the deadline is sooner: all "left".
            out = dict.fromkeys(_TIMEOUT_KEYS, left)
        else:
            out = {
                "connect": left if c is None or c > left else c,
                "read": left if r is None or r > left else r,
                "write": left if w is None or w > left else w,
                "pool": left if p is None or p > left else p,
            }
    if idle is not None:
        read = out.get("read")
        out["read"] = idle if read is None or idle < read else read
    if connect is not None:
        current = out.get("connect")
        out["connect"] = connect if current is None or connect < current else current
    return out


def _idle_timeout_fired(plan: Plan, request: httpx.Request, exc: BaseException) -> bool:
    """Whether a read timeout was the route's per_try_idle_timeout, not the caller's."""
    idle = plan.retry.per_try_idle_timeout if plan.retry is not None else None
    if idle is None or not isinstance(exc, httpcore.ReadTimeout):
        return False
    read = (request.extensions.get("timeout") or {}).get("read")
    return read is None or idle < read


def _outgoing_headers(
    plan: Plan, raw: list[tuple[bytes, bytes]], ep: Endpoint
) -> list[tuple[bytes, bytes]]:
    """The request's headers (``raw``: ``request.headers.raw``) after the route's edits,
    with the Host the route wants."""
    authority = plan.authority
    rewritten = bool(plan.action.host_rewrite_literal)
    if plan.action.auto_host_rewrite and ep.hostname:
        authority = ep.hostname  # Envoy: the endpoint's hostname from EDS
        rewritten = True
    if plan.headers is None:
        if not rewritten and raw and raw[0][0].lower() == b"host":
            # The common case: the plan's authority is this Host header (_authority).
            return raw
        pairs = [(k, v) for k, v in raw if k.lower() != b"host"]
    else:
        pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in plan.headers if k != "host"]
    pairs.insert(0, (b"host", authority.encode("ascii")))
    return pairs


def _shadow_request(plan: Plan, request: httpx.Request, ep: Endpoint) -> httpcore.Request:
    """The mirror copy: Envoy appends ``-shadow`` to the authority; the body is buffered."""
    raw = request.headers.raw
    headers = [(k, v) for k, v in _outgoing_headers(plan, raw, ep) if k.lower() != b"host"]
    headers.insert(0, (b"host", f"{plan.authority}-shadow".encode("ascii")))
    return httpcore.Request(  # the mirror path: httpcore wraps the buffered body
        method=request.method,
        url=httpcore.URL(
            scheme=b"http",
            host=ep.host.encode("ascii"),
            port=ep.port,
            target=plan.path.encode("ascii"),
        ),
        headers=headers,
        content=request.content,
        extensions={"timeout": _ops_timeout(request.extensions.get("timeout"), plan.deadline)},
    )


def _header_map(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}


def _response(
    plan: Plan,
    request: httpx.Request,
    resp: httpcore.Response,
    stream: httpx.SyncByteStream | httpx.AsyncByteStream,
    address: str = "",
) -> httpx.Response:
    """The httpx response for an upstream one (from endpoint ``address``), with the
    route's response header edits and a stateful session's Set-Cookie."""
    headers = resp.headers
    mutation = plan.decision.response_mutation
    if not mutation.empty:
        edited = mutation.apply(
            [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]
        )
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in edited]
    session = plan.session
    if session is not None:
        cookie = http_set_cookie(session, address)
        if cookie is not None:
            headers = [*headers, (b"set-cookie", cookie.encode("latin-1"))]
    return httpx_response(resp.status, headers, stream, resp.extensions, request)


#: A connection pool's key: (endpoint address, cluster name, connection settings).
PoolKey = tuple[str, str, object]


def _pool_key(rt: ClusterRuntime, ep: Endpoint) -> PoolKey:
    """Pools are per cluster and endpoint address, as Envoy's (a cluster's breakers
    count its own connections, even to an address another cluster shares), and per
    connection settings: a cluster that turns TLS on (or changes it) gets new
    connections, never a plaintext one kept from before; a new
    max_requests_per_connection gets new connections too. A tuple of strings whose
    hashes are cached: no new string to build and hash on every attempt."""
    cluster = rt.cluster
    if cluster is None:
        return (ep.address, rt.name, None)
    tls, limit = cluster.tls, cluster.max_requests_per_connection
    if tls is None and limit is None:
        return (ep.address, rt.name, None)
    return (ep.address, rt.name, (hash(tls), limit))


def _pool_options(
    mesh: Mesh, rt: ClusterRuntime, *, asynchronous: bool = False
) -> dict[str, typing.Any]:
    """Connection pool settings from the cluster (HTTP/2, TLS, keep-alive).

    HTTP/1.1 pools are pymesh's (pymesh.transports._pool), limited by the cluster's
    circuit breaker over all its endpoints; an HTTP/2 pool is httpcore's, one
    multiplexed connection per endpoint (the cap below only bounds a runaway).

    TLS (pymesh.transports._tls): a TLS cluster's pool gets a backend that, at connect
    time, does the cluster's TLS handshake and SAN check (the URL scheme stays http; the
    backend owns the upgrade). Fails closed: a TLS config that cannot be satisfied raises
    TlsConfigError here and at connect, never plaintext. Plaintext clusters use httpcore's
    own backend (no wrapper on their connections).
    """
    cluster = rt.cluster
    options: dict[str, typing.Any] = {
        "max_connections": 1024,
        "http1": True,
        "http2": bool(cluster and cluster.http2),
        # The cluster's idle_timeout (Envoy's default: 1 hour). httpx's own 5 s would
        # reconnect every endpoint of a large cluster that round robin visits less often
        # than that (1 000 endpoints at 1 ms a request: each one every second or so).
        "keepalive_expiry": cluster.idle_timeout if cluster else _KEEPALIVE_EXPIRY,
        "ssl_context": refusing_ssl_context(),  # httpcore itself must never start TLS
    }
    if cluster is not None and cluster.tls is not None:
        lookup = tls_lookup(mesh, rt)
        lookup()  # raises TlsConfigError (cluster + provider named) before any pool exists
        options["network_backend"] = (
            AsyncMeshTlsBackend(lookup) if asynchronous else MeshTlsBackend(lookup)
        )
    limit = cluster.max_requests_per_connection if cluster is not None else None
    if limit and not options["http2"]:  # HTTP/1.1 only (pymesh.transports._conn_limits)
        inner = options.get("network_backend")
        options["network_backend"] = (
            AsyncLimitedBackend(limit, inner) if asynchronous else LimitedBackend(limit, inner)
        )
    return options


@typing.overload
def _new_pool(
    mesh: Mesh, rt: ClusterRuntime, ep: Endpoint, *, asynchronous: typing.Literal[False]
) -> _SyncPool: ...


@typing.overload
def _new_pool(
    mesh: Mesh, rt: ClusterRuntime, ep: Endpoint, *, asynchronous: typing.Literal[True]
) -> _AsyncPool: ...


def _new_pool(
    mesh: Mesh, rt: ClusterRuntime, ep: Endpoint, *, asynchronous: bool
) -> _SyncPool | _AsyncPool:
    """A new connection pool to endpoint ``ep`` of cluster ``rt`` (:func:`_pool_options`):
    httpcore's for HTTP/2, else pymesh's HTTP/1.1 pool with the cluster's breakers."""
    options = _pool_options(mesh, rt, asynchronous=asynchronous)
    if options["http2"]:
        if asynchronous:
            return httpcore.AsyncConnectionPool(**options)
        return httpcore.ConnectionPool(**options)
    origin = httpcore.Origin(b"http", ep.host.encode("ascii"), ep.port)
    endpoint_pool = AsyncEndpointPool if asynchronous else EndpointPool
    return endpoint_pool(
        origin,
        rt,
        keepalive_expiry=options["keepalive_expiry"],
        ssl_context=options["ssl_context"],
        network_backend=options.get("network_backend"),
    )


class _SyncStream(httpx.SyncByteStream):
    def __init__(self, stream: typing.Iterable[bytes], on_close: typing.Callable[[], None]) -> None:
        self._stream = stream
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        # try/except rather than ``with map_httpcore_exceptions()``: the same mapping
        # without a generator-based context manager per response body.
        try:
            yield from self._stream
        except Exception as exc:
            mapped = to_httpx(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def close(self) -> None:
        try:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(
        self, stream: typing.AsyncIterable[bytes], on_close: typing.Callable[[], None]
    ) -> None:
        self._stream = stream
        self._on_close = on_close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:  # as _SyncStream.__iter__
            async for part in self._stream:
                yield part
        except Exception as exc:
            mapped = to_httpx(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._stream, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._on_close()


def _observe(request: httpx.Request, state: ListenerState) -> RequestObserver | None:
    """Telemetry hook: the request's observer, or None when telemetry is off."""
    return observe_request(request.method, request.url, state.config.listener.name)


def _routed(obs: RequestObserver, plan: Plan) -> None:
    route = plan.decision.route
    obs.routed(route.name or str(plan.decision.route_index), plan.cluster_name)


def _finished(obs: RequestObserver, response: httpx.Response) -> httpx.Response:
    flag = response.headers.get("x-pymesh-local-reply", "")
    obs.finish(response.status_code, local_reply="" if flag == "1" else flag)
    return response


def _passthrough_failed(
    exc: httpx.ConnectError, request: httpx.Request, listener: str
) -> httpx.ConnectError:
    """httpx's own error for a passthrough that could not connect, saying that the mesh
    did not route it: a typo in a host or port otherwise reads as a network problem."""
    host = request.url.netloc.decode("ascii")
    return httpx.ConnectError(
        f"{exc} (pymesh: the control plane has no listener {listener!r}, so {host} was "
        "sent directly, outside the mesh; check the host and port, and what the mesh "
        f"knows with `pymesh status {host}`; Mesh(passthrough=False) makes unknown hosts "
        "an UnknownHostError instead)",
        request=request,
    )


class _Base:
    """What both transports share: the mesh, passthrough, and routing one request."""

    def __init__(self, mesh: Mesh, *, passthrough: bool | None, xds_authority: str | None) -> None:
        self.mesh = mesh
        self.passthrough = mesh.passthrough if passthrough is None else passthrough
        #: A bootstrap ``authorities`` entry whose servers and listener template name
        #: this transport's hosts (gRFC A47 federation; httpx's ``xds://authority/``).
        self.xds_authority = xds_authority
        self._requests = 0

    def _plan(
        self,
        state: ListenerState,
        request: httpx.Request,
        raw: list[tuple[bytes, bytes]],
        caller_timeout: float | None,
    ) -> Plan | LocalReply:
        """The request's plan (``raw``: ``request.headers.raw``; ``caller_timeout``: the
        caller's longest timeout)."""
        authority = _authority(request, raw)
        path = request.url.raw_path.decode("ascii")
        plan = plan_by_path(state, authority, path, caller_timeout)
        if plan is not None:
            return plan  # the common case: the path decides; headers are not read
        return plan_request(
            state,
            _request_info(request, authority, path),
            request.headers.multi_items,
            self.mesh.rng,
            caller_timeout,
        )

    def _attempts(
        self,
        plan: Plan,
        state: ListenerState,
        request: httpx.Request,
        obs: RequestObserver | None,
    ) -> Attempts:
        """The engine's attempts of one request (only buffered bodies are retried)."""
        return Attempts(
            plan,
            state,
            self.mesh.rng,
            # (only read when the route may retry)
            replayable=plan.decider is None or _is_replayable(request),
            on_end=None if obs is None else functools.partial(_attempt_ended, obs),
            pooled=True,  # the HTTP/1.1 pools take request slots (pymesh.transports._pool)
        )

    @staticmethod
    def _answer(
        a: Attempts,
        request: httpx.Request,
        result: Ticket | LocalReply,
        stream: type[_SyncStream] | type[_AsyncStream],
    ) -> httpx.Response:
        """The httpx response for the engine's answer; an upstream body is wrapped in
        ``stream``, which gives the attempt's slot back when the body is closed."""
        reply = result.reply if type(result) is Ticket else None
        if reply is None or reply.failure is not None:  # local, or a last failure
            return _finish(a, request, result)
        resp: typing.Any = reply.value
        body = stream(resp.stream, result.release)  # type: ignore[union-attr]
        plan = a.plan
        if plan.session is None and plan.decision.response_mutation.empty:
            # Nothing to edit (the common case): _response's answer, without its call.
            return httpx_response(resp.status, resp.headers, body, resp.extensions, request)
        return _response(plan, request, resp, body, result.address)  # type: ignore[union-attr]

    def _mirror_targets(
        self, plan: Plan, state: ListenerState, request: httpx.Request
    ) -> list[tuple[ClusterRuntime, Endpoint]]:
        """Endpoints of the route's mirror clusters that this request is shadowed to.

        Only buffered bodies are mirrored (a stream can be read once)."""
        if not _is_replayable(request):
            return []
        out = []
        rng = self.mesh.rng
        for mirror in plan.action.request_mirror_policies:
            fraction = mirror.runtime_fraction
            if fraction is not None and rng.random() >= fraction.as_fraction():
                continue
            rt = state.clusters.get(mirror.cluster)
            picker = rt.picker if rt is not None else None
            ep = picker.pick(plan.hash_key) if picker is not None else None
            if rt is not None and ep is not None:
                out.append((rt, ep))
        return out

    def _departed(self, pools: typing.Mapping[PoolKey, typing.Any]) -> list[PoolKey]:
        """Pools of endpoints no cluster has any more, whose connections are all idle."""
        live: set[str] = set()
        for rt in self.mesh.clusters().values():
            live |= rt.addresses
        return [
            key
            for key, pool in pools.items()
            if key[0] not in live and all(c.is_idle() for c in pool.connections)
        ]


class MeshTransport(_Base, httpx.BaseTransport):
    """An ``httpx.BaseTransport`` that sends each request through the mesh.

    The URL authority names the xDS listener; hosts the control plane does not know
    go directly (unless ``passthrough=False``, or the Mesh's own setting).
    ``xds_authority`` takes listeners from that bootstrap authority (federation), as a
    gRPC target ``xds://<xds_authority>/host`` does.
    """

    def __init__(
        self, mesh: Mesh, *, passthrough: bool | None = None, xds_authority: str | None = None
    ) -> None:
        super().__init__(mesh, passthrough=passthrough, xds_authority=xds_authority)
        self._pools: dict[PoolKey, _SyncPool] = {}
        self._direct = httpx.HTTPTransport()
        self._shadow: ThreadPoolExecutor | None = None
        self._hedger: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"<MeshTransport pools={len(self._pools)} {self.mesh!r}>"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        mesh = self.mesh
        slot = mesh.slot(request.url.netloc.decode("ascii"), self.xds_authority)
        state = slot.state
        if state is None:
            state = mesh.wait_listener(
                slot,
                _default_port_authority(request),
                _caller_timeout(request),
                passthrough=self.passthrough,
                xds_authority=self.xds_authority,
            )
            if state is None:
                try:
                    return self._direct.handle_request(request)
                except httpx.ConnectError as exc:
                    raise _passthrough_failed(exc, request, slot.name) from exc
        if telemetry_off():  # the common case: one check, no observer
            return self._routed(state, request, None)
        obs = _observe(request, state)
        if obs is None:
            return self._routed(state, request, None)
        try:
            return _finished(obs, self._routed(state, request, obs))
        except BaseException as exc:
            obs.finish(None, error=exc)
            raise

    def _routed(
        self, state: ListenerState, request: httpx.Request, obs: RequestObserver | None
    ) -> httpx.Response:
        raw = request.headers.raw
        timeouts = request.extensions.get("timeout")
        one = _one_timeout(timeouts)
        caller_timeout = one if one is not None else _longest_timeout(timeouts)
        plan = self._plan(state, request, raw, caller_timeout)
        if isinstance(plan, LocalReply):
            if plan.wait_cluster is not None:
                # A cluster_header target not subscribed yet: wait for it, then plan again.
                state = self.mesh.wait_cluster(state, plan.wait_cluster, caller_timeout)
                plan = self._plan(state, request, raw, caller_timeout)
            if isinstance(plan, LocalReply):
                if plan.delay:
                    time.sleep(plan.delay)
                return _local_response(plan, request)
        if obs is not None:
            _routed(obs, plan)
        if plan.fault_delay:
            time.sleep(plan.fault_delay)
        n = self._requests = self._requests + 1  # routed requests
        if n % _GC_EVERY == 0:  # now and then: pools of endpoints that left
            for address in self._departed(self._pools):
                self._pools.pop(address).close()
        if plan.action.request_mirror_policies:
            for rt, ep in self._mirror_targets(plan, state, request):
                if self._shadow is None:
                    self._shadow = ThreadPoolExecutor(4, thread_name_prefix="pymesh-mirror")
                self._shadow.submit(self._mirror, rt, ep, _shadow_request(plan, request, ep))
        a = self._attempts(plan, state, request, obs)
        result = run_sync(a, _SyncIO(self, a, plan, request, obs, raw, one))
        return self._answer(a, request, result, _SyncStream)

    def _mirror(self, rt: ClusterRuntime, ep: Endpoint, req: httpcore.Request) -> None:
        """Fire and forget: the caller never sees a mirror's answer or failure."""
        try:
            resp = self._pool(rt, ep).handle_request(req)
            try:
                resp.read()
            finally:
                resp.close()
        except Exception as exc:
            log.debug("mirror to %s failed: %s", ep.address, exc)

    def _pool(self, rt: ClusterRuntime, ep: Endpoint) -> _SyncPool:
        key = _pool_key(rt, ep)
        pool = self._pools.get(key)
        if pool is None:
            new = _new_pool(self.mesh, rt, ep, asynchronous=False)
            pool = self._pools.setdefault(key, new)
            if pool is not new:
                new.close()  # another thread made it first
        return pool

    def hedger(self) -> ThreadPoolExecutor:
        """Sync hedging: attempts run on worker threads, so a per-try timeout can start
        another while the first keeps going."""
        if self._hedger is None:
            self._hedger = ThreadPoolExecutor(_HEDGE_THREADS, thread_name_prefix="pymesh-hedge")
        return self._hedger

    def close(self) -> None:
        if self._shadow is not None:
            self._shadow.shutdown(wait=False, cancel_futures=True)
        if self._hedger is not None:
            self._hedger.shutdown(wait=False, cancel_futures=True)
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()
        self._direct.close()


class AsyncMeshTransport(_Base, httpx.AsyncBaseTransport):
    """The asyncio twin of :class:`MeshTransport` (never blocks the event loop)."""

    def __init__(
        self, mesh: Mesh, *, passthrough: bool | None = None, xds_authority: str | None = None
    ) -> None:
        super().__init__(mesh, passthrough=passthrough, xds_authority=xds_authority)
        self._pools: dict[PoolKey, _AsyncPool] = {}
        self._direct = httpx.AsyncHTTPTransport()
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<AsyncMeshTransport pools={len(self._pools)} {self.mesh!r}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        mesh = self.mesh
        slot = mesh.slot(request.url.netloc.decode("ascii"), self.xds_authority)
        state = slot.state
        if state is None:
            state = await mesh.wait_listener_async(
                slot,
                _default_port_authority(request),
                _caller_timeout(request),
                passthrough=self.passthrough,
                xds_authority=self.xds_authority,
            )
            if state is None:
                try:
                    return await self._direct.handle_async_request(request)
                except httpx.ConnectError as exc:
                    raise _passthrough_failed(exc, request, slot.name) from exc
        if telemetry_off():  # the common case: one check, no observer
            return await self._routed(state, request, None)
        obs = _observe(request, state)
        if obs is None:
            return await self._routed(state, request, None)
        try:
            return _finished(obs, await self._routed(state, request, obs))
        except BaseException as exc:
            obs.finish(None, error=exc)
            raise

    async def _routed(
        self, state: ListenerState, request: httpx.Request, obs: RequestObserver | None
    ) -> httpx.Response:
        raw = request.headers.raw
        timeouts = request.extensions.get("timeout")
        one = _one_timeout(timeouts)
        caller_timeout = one if one is not None else _longest_timeout(timeouts)
        plan = self._plan(state, request, raw, caller_timeout)
        if isinstance(plan, LocalReply):
            if plan.wait_cluster is not None:
                # A cluster_header target not subscribed yet: wait for it, then plan again.
                state = await self.mesh.wait_cluster_async(state, plan.wait_cluster, caller_timeout)
                plan = self._plan(state, request, raw, caller_timeout)
            if isinstance(plan, LocalReply):
                if plan.delay:
                    await asyncio.sleep(plan.delay)
                return _local_response(plan, request)
        if obs is not None:
            _routed(obs, plan)
        if plan.fault_delay:
            await asyncio.sleep(plan.fault_delay)
        n = self._requests = self._requests + 1  # routed requests
        if n % _GC_EVERY == 0:  # now and then: pools of endpoints that left
            for address in self._departed(self._pools):
                await self._pools.pop(address).aclose()
        if plan.action.request_mirror_policies:
            await request.aread()
            for rt, ep in self._mirror_targets(plan, state, request):
                task = asyncio.create_task(self._mirror(rt, ep, _shadow_request(plan, request, ep)))
                self._shadow_tasks.add(task)  # a strong reference until it is done
                task.add_done_callback(self._shadow_tasks.discard)
        a = self._attempts(plan, state, request, obs)
        result = await run_async(a, _AsyncIO(self, a, plan, request, obs, raw, one))
        return self._answer(a, request, result, _AsyncStream)

    async def _mirror(self, rt: ClusterRuntime, ep: Endpoint, req: httpcore.Request) -> None:
        """Fire and forget: the caller never sees a mirror's answer or failure."""
        try:
            resp = await self._pool(rt, ep).handle_async_request(req)
            try:
                await resp.aread()
            finally:
                await resp.aclose()
        except Exception as exc:
            log.debug("mirror to %s failed: %s", ep.address, exc)

    def _pool(self, rt: ClusterRuntime, ep: Endpoint) -> _AsyncPool:
        key = _pool_key(rt, ep)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools.setdefault(key, _new_pool(self.mesh, rt, ep, asynchronous=True))
        return pool

    async def aclose(self) -> None:
        for task in list(self._shadow_tasks):
            task.cancel()
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.aclose()
        await self._direct.aclose()


class _SyncIO(_IO):
    """MeshTransport's I/O of one request's attempts."""

    __slots__ = ()
    transport: MeshTransport

    def send(self, t: Ticket) -> Reply:
        rt, ep, req = self.upstream(t)
        try:
            resp = self.transport._pool(rt, ep).handle_request(req)
        except _UPSTREAM_ERRORS as exc:
            return _failure(exc)
        if t.wants_load_report:
            t.report_headers(resp.headers)  # weighted round robin's per-call ORCA report
        a = self.a
        return Reply(
            resp, resp.status, None, _header_map(resp.headers) if a.needs_headers else None
        )

    def start(self, t: Ticket) -> Future[httpcore.Response]:
        rt, ep, req = self.upstream(t)
        return self.transport.hedger().submit(self.transport._pool(rt, ep).handle_request, req)

    def discard(self, t: Ticket) -> None:
        assert t.reply is not None
        t.reply.value.close()  # type: ignore[attr-defined]

    def cancel(self, t: Ticket) -> None:
        # A thread cannot be interrupted mid-read: the attempt is abandoned (its slot
        # already given back) and its response, with its connection, closed on arrival.
        fut: Future[httpcore.Response] = t.handle  # type: ignore[assignment]
        fut.cancel()
        fut.add_done_callback(_close_abandoned)
        self.lost(t)


class _AsyncIO(_IO):
    """AsyncMeshTransport's I/O of one request's attempts."""

    __slots__ = ()
    transport: AsyncMeshTransport

    async def send(self, t: Ticket) -> Reply:
        rt, ep, req = self.upstream(t)
        try:
            resp = await self.transport._pool(rt, ep).handle_async_request(req)
        except _UPSTREAM_ERRORS as exc:
            return _failure(exc)
        return _answer(self.a, resp, t)

    def start(self, t: Ticket) -> asyncio.Future[httpcore.Response]:
        rt, ep, req = self.upstream(t)
        return asyncio.ensure_future(self.transport._pool(rt, ep).handle_async_request(req))

    async def discard(self, t: Ticket) -> None:
        assert t.reply is not None
        await t.reply.value.aclose()  # type: ignore[attr-defined]

    async def cancel(self, t: Ticket) -> None:
        task: asyncio.Future[httpcore.Response] = t.handle  # type: ignore[assignment]
        self.lost(t)
        if task.done() and not task.cancelled() and task.exception() is None:
            await task.result().aclose()
        else:
            task.cancel()  # httpcore closes its connection
