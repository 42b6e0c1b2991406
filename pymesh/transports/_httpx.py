"""httpx transports that route every request through the mesh.

``MeshTransport`` (sync) and ``AsyncMeshTransport`` (asyncio) share all decisions
(:mod:`pymesh.transports._plan`); they differ only in waiting and I/O. Each keeps one
httpcore connection pool per endpoint, sized by the cluster's circuit breakers.
"""

from __future__ import annotations

import asyncio
import time
import typing
from collections.abc import AsyncIterator, Iterator

import httpcore
import httpx

from pymesh._mesh import ListenerState, Mesh
from pymesh._upstream import ClusterRuntime
from pymesh.errors import MeshError, TlsConfigError
from pymesh.resilience import Outcome
from pymesh.routing import RequestInfo
from pymesh.transports._exceptions import failure_outcome, map_httpcore_exceptions, to_httpx
from pymesh.transports._plan import LocalReply, Plan, leaf_runtime, plan_request
from pymesh.xds.resources.endpoint import Endpoint

__all__ = ["AsyncMeshTransport", "MeshTransport"]

_GC_EVERY = 512  # requests between sweeps for pools of endpoints that left


def _caller_timeout(request: httpx.Request) -> float | None:
    """The caller's longest per-operation timeout (httpx has no total timeout)."""
    t = request.extensions.get("timeout")
    if not t:
        return None
    values = [v for v in t.values() if v is not None]
    return max(values) if values else None


def _request_info(request: httpx.Request) -> tuple[RequestInfo, list[tuple[str, str]]]:
    headers = request.headers.multi_items()  # lower-case names
    joined: dict[str, str] = {}
    for k, v in headers:
        prev = joined.get(k)
        joined[k] = v if prev is None else f"{prev},{v}"
    authority = joined.get("host") or request.url.netloc.decode("ascii")
    ctype = joined.get("content-type", "")
    info = RequestInfo(
        request.method,
        authority,
        request.url.raw_path.decode("ascii"),
        joined,
        ctype.startswith("application/grpc"),
    )
    return info, headers


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


def _ops_timeout(request: httpx.Request, deadline: float | None) -> dict[str, float | None]:
    """The caller's per-operation timeouts, each capped by the time left to the deadline."""
    caller = request.extensions.get("timeout") or {}
    if deadline is None:
        return dict(caller)
    left = max(deadline - time.monotonic(), 0.0)
    out: dict[str, float | None] = {}
    for key in ("connect", "read", "write", "pool"):
        v = caller.get(key)
        out[key] = left if v is None else min(v, left)
    return out


def _upstream_request(
    plan: Plan, request: httpx.Request, ep: Endpoint, deadline: float | None
) -> httpcore.Request:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in plan.headers if k != "host"]
    headers.insert(0, (b"host", plan.authority.encode("ascii")))
    extensions = dict(request.extensions)
    extensions["timeout"] = _ops_timeout(request, deadline)
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(scheme=b"http", host=ep.host.encode("ascii"), port=ep.port,
                         target=plan.path.encode("ascii")),
        headers=headers,
        content=request.stream,
        extensions=extensions,
    )


def _no_upstream(plan: Plan, why: str, flags: str, status: int = 503) -> LocalReply:
    return LocalReply(
        status, f"pymesh: {why} (cluster {plan.cluster_name!r})\n".encode(), grpc_status=14,
        flags=flags,
    )


def _choose(plan: Plan, state: ListenerState, tried: set[str]) -> tuple[ClusterRuntime, Endpoint] | None:
    rt = plan.runtime
    if rt.leaf_clusters:
        leaf = leaf_runtime(plan, state)
        if leaf is None:
            return None
        rt = leaf
    picker = rt.picker
    if picker is None:
        return None
    exclude = tried if plan.retry is not None and "previous_hosts" in plan.retry.retry_host_predicates else ()
    ep = picker.pick(plan.hash_key, exclude)
    return (rt, ep) if ep is not None else None


def _outcome(status: int, headers: list[tuple[bytes, bytes]], want_headers: bool) -> Outcome:
    if not want_headers:
        return Outcome.response(status)
    return Outcome.response(status, {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers})


class _BaseMeshTransport:
    def __init__(self, mesh: Mesh, *, passthrough: bool | None = None) -> None:
        self.mesh = mesh
        self.passthrough = mesh.passthrough if passthrough is None else passthrough
        self._requests = 0

    def _tls_check(self, rt: ClusterRuntime) -> None:
        cluster = rt.cluster
        if cluster is not None and cluster.tls is not None:
            # Fail closed: until the cluster's TLS context can be built, never plaintext.
            raise TlsConfigError(
                "cluster requires TLS, which this transport cannot satisfy yet",
                node_id=self.mesh.node_id,
                resource_name=rt.name,
            )

    def _live_addresses(self) -> set[str]:
        live: set[str] = set()
        for rt in self.mesh.clusters().values():
            live |= rt.addresses
        return live


class _SyncStream(httpx.SyncByteStream):
    def __init__(self, stream: typing.Iterable[bytes], on_close: typing.Callable[[], None]) -> None:
        self._stream = stream
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        with map_httpcore_exceptions():
            yield from self._stream

    def close(self) -> None:
        try:
            if hasattr(self._stream, "close"):
                self._stream.close()
        finally:
            on_close, self._on_close = self._on_close, _noop
            on_close()


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(
        self, stream: typing.AsyncIterable[bytes], on_close: typing.Callable[[], None]
    ) -> None:
        self._stream = stream
        self._on_close = on_close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_httpcore_exceptions():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        try:
            if hasattr(self._stream, "aclose"):
                await self._stream.aclose()
        finally:
            on_close, self._on_close = self._on_close, _noop
            on_close()


def _noop() -> None:
    return None


class MeshTransport(_BaseMeshTransport, httpx.BaseTransport):
    """An ``httpx.BaseTransport`` that sends each request through the mesh.

    The URL authority names the xDS listener; hosts the control plane does not know
    go directly (unless ``passthrough=False``).
    """

    def __init__(self, mesh: Mesh, *, passthrough: bool | None = None) -> None:
        super().__init__(mesh, passthrough=passthrough)
        self._pools: dict[str, httpcore.ConnectionPool] = {}
        self._direct = httpx.HTTPTransport()

    def __repr__(self) -> str:
        return f"<MeshTransport pools={len(self._pools)} {self.mesh!r}>"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        mesh = self.mesh
        slot = mesh.slot(request.url.netloc.decode("ascii"))
        state = slot.state
        if state is None:
            state = mesh.wait_state(slot, _caller_timeout(request))
            if state is None:
                return self._direct.handle_request(request)
        info, headers = _request_info(request)
        plan = plan_request(state, info, headers, mesh.rng, _caller_timeout(request))
        if isinstance(plan, LocalReply):
            if plan.delay:
                time.sleep(plan.delay)
            return _local_response(plan, request)
        if plan.fault_delay:
            time.sleep(plan.fault_delay)
        self._requests += 1
        if self._requests % _GC_EVERY == 0:
            self._gc_pools()
        return self._send(plan, state, request)

    def _pool(self, rt: ClusterRuntime, ep: Endpoint) -> httpcore.ConnectionPool:
        pool = self._pools.get(ep.address)
        if pool is None:
            self._tls_check(rt)
            cluster = rt.cluster
            limits = cluster.circuit_breakers if cluster is not None else None
            pool = self._pools.setdefault(
                ep.address,
                httpcore.ConnectionPool(
                    max_connections=limits.max_connections if limits else 1024,
                    http1=True,
                    http2=bool(cluster and cluster.http2),
                ),
            )
        return pool

    def _send(self, plan: Plan, state: ListenerState, request: httpx.Request) -> httpx.Response:
        decider = plan.decider
        attempts = 1 + plan.retry.num_retries if decider is not None and plan.retry else 1
        if attempts > 1 and not _is_replayable(request):
            attempts = 1  # a streaming body cannot be rewound: sent once
        tried: set[str] = set()
        want_headers = decider is not None and decider.needs_headers
        attempt = 0
        while True:
            chosen = _choose(plan, state, tried)
            if chosen is None:
                return _local_response(_no_upstream(plan, "no healthy upstream", "UH"), request)
            rt, ep = chosen
            breaker = rt.breaker
            if breaker is not None:
                ok = breaker.try_acquire_request() if attempt == 0 else breaker.try_acquire_retry()
                if not ok:
                    return _local_response(_no_upstream(plan, "upstream overflow", "UO"), request)
            release = _releaser(breaker, attempt)
            state_ep = rt.states.get_or_create(ep.address)
            state_ep.active_requests += 1
            started = time.monotonic()
            tried.add(ep.address)
            try:
                resp = self._pool(rt, ep).handle_request(_upstream_request(plan, request, ep, plan.deadline))
            except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
                state_ep.active_requests -= 1
                release()
                outcome = failure_outcome(exc)
                if rt.outlier is not None:
                    rt.outlier.record(ep.address, outcome)
                if (
                    attempt + 1 < attempts
                    and decider is not None
                    and decider.should_retry(outcome)
                    and self._backoff(decider, attempt, plan)
                ):
                    attempt += 1
                    continue
                raise to_httpx(exc) from exc
            except BaseException:
                state_ep.active_requests -= 1
                release()
                raise
            state_ep.active_requests -= 1
            state_ep.observe(time.monotonic() - started, time.monotonic())
            outcome = _outcome(resp.status, resp.headers, want_headers)
            if rt.outlier is not None:
                rt.outlier.record(ep.address, outcome)
            if (
                attempt + 1 < attempts
                and decider is not None
                and decider.should_retry(outcome)
            ):
                resp.close()
                release()
                if self._backoff(decider, attempt, plan):
                    attempt += 1
                    continue
                # No time left for another try: answer what we have (re-send is impossible).
                return _local_response(_no_upstream(plan, "retry deadline exceeded", "UT", 504), request)
            return self._response(plan, request, resp, release)

    def _backoff(self, decider: typing.Any, attempt: int, plan: Plan) -> bool:
        delay = decider.backoff_delay(attempt, self.mesh.rng)
        if plan.deadline is not None and time.monotonic() + delay >= plan.deadline:
            return False
        if delay > 0:
            time.sleep(delay)
        return True

    @staticmethod
    def _response(
        plan: Plan, request: httpx.Request, resp: httpcore.Response, release: typing.Callable[[], None]
    ) -> httpx.Response:
        headers = resp.headers
        mutation = plan.decision.response_mutation
        if not mutation.empty:
            edited = mutation.apply([(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers])
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in edited]
        assert isinstance(resp.stream, typing.Iterable)
        return httpx.Response(
            status_code=resp.status,
            headers=headers,
            stream=_SyncStream(resp.stream, release),
            extensions=resp.extensions,
            request=request,
        )

    def _gc_pools(self) -> None:
        live = self._live_addresses()
        for address, pool in list(self._pools.items()):
            if address not in live and all(c.is_idle() for c in pool.connections):
                self._pools.pop(address, None)
                pool.close()

    def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()
        self._direct.close()


def _releaser(breaker: typing.Any, attempt: int) -> typing.Callable[[], None]:
    if breaker is None:
        return _noop
    done = False

    def release() -> None:
        nonlocal done
        if not done:
            done = True
            if attempt == 0:
                breaker.release_request()
            else:
                breaker.release_retry()

    return release


class AsyncMeshTransport(_BaseMeshTransport, httpx.AsyncBaseTransport):
    """The asyncio twin of :class:`MeshTransport` (never blocks the event loop)."""

    def __init__(self, mesh: Mesh, *, passthrough: bool | None = None) -> None:
        super().__init__(mesh, passthrough=passthrough)
        self._pools: dict[str, httpcore.AsyncConnectionPool] = {}
        self._direct = httpx.AsyncHTTPTransport()

    def __repr__(self) -> str:
        return f"<AsyncMeshTransport pools={len(self._pools)} {self.mesh!r}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        mesh = self.mesh
        slot = mesh.slot(request.url.netloc.decode("ascii"))
        state = slot.state
        if state is None:
            state = await mesh.wait_state_async(slot, _caller_timeout(request))
            if state is None:
                return await self._direct.handle_async_request(request)
        info, headers = _request_info(request)
        plan = plan_request(state, info, headers, mesh.rng, _caller_timeout(request))
        if isinstance(plan, LocalReply):
            if plan.delay:
                await asyncio.sleep(plan.delay)
            return _local_response(plan, request)
        if plan.fault_delay:
            await asyncio.sleep(plan.fault_delay)
        self._requests += 1
        if self._requests % _GC_EVERY == 0:
            await self._gc_pools()
        return await self._send(plan, state, request)

    def _pool(self, rt: ClusterRuntime, ep: Endpoint) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get(ep.address)
        if pool is None:
            self._tls_check(rt)
            cluster = rt.cluster
            limits = cluster.circuit_breakers if cluster is not None else None
            pool = self._pools.setdefault(
                ep.address,
                httpcore.AsyncConnectionPool(
                    max_connections=limits.max_connections if limits else 1024,
                    http1=True,
                    http2=bool(cluster and cluster.http2),
                ),
            )
        return pool

    async def _send(self, plan: Plan, state: ListenerState, request: httpx.Request) -> httpx.Response:
        decider = plan.decider
        attempts = 1 + plan.retry.num_retries if decider is not None and plan.retry else 1
        if attempts > 1 and not _is_replayable(request):
            attempts = 1
        tried: set[str] = set()
        want_headers = decider is not None and decider.needs_headers
        attempt = 0
        while True:
            chosen = _choose(plan, state, tried)
            if chosen is None:
                return _local_response(_no_upstream(plan, "no healthy upstream", "UH"), request)
            rt, ep = chosen
            breaker = rt.breaker
            if breaker is not None:
                ok = breaker.try_acquire_request() if attempt == 0 else breaker.try_acquire_retry()
                if not ok:
                    return _local_response(_no_upstream(plan, "upstream overflow", "UO"), request)
            release = _releaser(breaker, attempt)
            state_ep = rt.states.get_or_create(ep.address)
            state_ep.active_requests += 1
            started = time.monotonic()
            tried.add(ep.address)
            try:
                resp = await self._pool(rt, ep).handle_async_request(
                    _upstream_request(plan, request, ep, plan.deadline)
                )
            except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
                state_ep.active_requests -= 1
                release()
                outcome = failure_outcome(exc)
                if rt.outlier is not None:
                    rt.outlier.record(ep.address, outcome)
                if (
                    attempt + 1 < attempts
                    and decider is not None
                    and decider.should_retry(outcome)
                    and await self._backoff(decider, attempt, plan)
                ):
                    attempt += 1
                    continue
                raise to_httpx(exc) from exc
            except BaseException:
                state_ep.active_requests -= 1
                release()
                raise
            state_ep.active_requests -= 1
            state_ep.observe(time.monotonic() - started, time.monotonic())
            outcome = _outcome(resp.status, resp.headers, want_headers)
            if rt.outlier is not None:
                rt.outlier.record(ep.address, outcome)
            if attempt + 1 < attempts and decider is not None and decider.should_retry(outcome):
                await resp.aclose()
                release()
                if await self._backoff(decider, attempt, plan):
                    attempt += 1
                    continue
                return _local_response(_no_upstream(plan, "retry deadline exceeded", "UT", 504), request)
            return self._response(plan, request, resp, release)

    async def _backoff(self, decider: typing.Any, attempt: int, plan: Plan) -> bool:
        delay = decider.backoff_delay(attempt, self.mesh.rng)
        if plan.deadline is not None and time.monotonic() + delay >= plan.deadline:
            return False
        if delay > 0:
            await asyncio.sleep(delay)
        return True

    @staticmethod
    def _response(
        plan: Plan, request: httpx.Request, resp: httpcore.Response, release: typing.Callable[[], None]
    ) -> httpx.Response:
        headers = resp.headers
        mutation = plan.decision.response_mutation
        if not mutation.empty:
            edited = mutation.apply([(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers])
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in edited]
        assert isinstance(resp.stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=resp.status,
            headers=headers,
            stream=_AsyncStream(resp.stream, release),
            extensions=resp.extensions,
            request=request,
        )

    async def _gc_pools(self) -> None:
        live = self._live_addresses()
        for address, pool in list(self._pools.items()):
            if address not in live and all(c.is_idle() for c in pool.connections):
                self._pools.pop(address, None)
                await pool.aclose()

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.aclose()
        await self._direct.aclose()
