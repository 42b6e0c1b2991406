"""State and bookkeeping shared by the sync and aio mesh channels (no I/O, no waiting)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import grpc

from pymesh._mesh import ListenerState, Mesh
from pymesh._upstream import ClusterRuntime
from pymesh.grpc._core import (
    LocalStatus,
    Metadata,
    choose,
    no_upstream,
    parse_target,
    record,
    remaining,
)
from pymesh.grpc._tls import TlsEndpoint, pick_tls, picked_tls
from pymesh.telemetry._rpc import RpcObserver, observe_rpc
from pymesh.transports._plan import Plan

OutMetadata = Metadata | None
# Statuses that mean the endpoint gave no real answer (peak EWMA penalises them).
_NO_ANSWER = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
Done = Callable[[grpc.StatusCode], None]

SubT = TypeVar("SubT")


class Prepared:
    """A planned call: where it goes and until when (``obs``: its telemetry, if on)."""

    __slots__ = ("deadline", "metadata", "obs", "plan", "state")

    def __init__(
        self, plan: Plan, state: ListenerState, deadline: float | None, metadata: OutMetadata
    ) -> None:
        self.plan = plan
        self.state = state
        self.deadline = deadline
        self.metadata = metadata
        self.obs: RpcObserver | None = None


class LocalFailure(Exception):
    """Raised inside the call path for a status pymesh answers itself."""

    def __init__(self, status: LocalStatus, flag: str = "") -> None:
        super().__init__(status.details)
        self.status = status
        self.flag = flag  # Envoy's response flag (UH, UO) for telemetry


def begin_attempt(
    p: Prepared, rt: ClusterRuntime, address: str, done: Done
) -> tuple[float | None, OutMetadata] | None:
    """The timeout and metadata of the attempt about to start on ``address``; None, with
    the attempt ended as DEADLINE_EXCEEDED, when the call's deadline has already passed
    (the caller raises its channel's deadline error)."""
    timeout = remaining(p.deadline)
    if timeout is not None and timeout <= 0:
        done(grpc.StatusCode.DEADLINE_EXCEEDED)
        return None
    obs = p.obs
    return timeout, (p.metadata if obs is None else obs.attempt(rt, address, p.metadata))


def observe_failure(p: Prepared, exc: LocalFailure) -> None:
    """Note on the call's telemetry that pymesh answered it itself (and why)."""
    if p.obs is not None and exc.flag:
        p.obs.local_reply = exc.flag


class MeshChannelBase(Generic[SubT]):
    """Target, listener slot, per-endpoint sub-channels and the endpoint choice."""

    def __init__(
        self,
        target: str,
        mesh: Mesh,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Iterable[tuple[str, Any]] | None = None,
        compression: grpc.Compression | None = None,
    ) -> None:
        self.target = target
        self.mesh = mesh
        self.authority = parse_target(target)
        self._credentials = credentials
        # gRPC sends the target's authority upstream; TLS verifies against it too
        # (unless the caller set an authority of their own).
        opts = tuple(options or ())
        if not any(key == "grpc.default_authority" for key, _ in opts):
            opts = (*opts, ("grpc.default_authority", self.authority))
        self._options = opts
        self._compression = compression
        # A42: the io.grpc.channel_id hash policy hashes a random per-channel number.
        self.channel_id = mesh.rng.getrandbits(64)
        self._slot = mesh.slot(self.authority)  # subscribe now, not on the first call
        self._lock = threading.Lock()  # sub-channel creation and cleanup only
        self._subs: dict[str, SubT] = {}
        self._inflight: dict[str, int] = {}
        self._count_lock = threading.Lock()  # calls end on grpc's threads too
        self._draining: set[str] = set()
        self._seen: ListenerState | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<pymesh.grpc.{type(self).__name__} {self.target} subchannels={len(self._subs)}"
            f"{' closed' if self._closed else ''}>"
        )

    # Implemented by the sync / aio channel.
    def _new_channel(self, address: str) -> SubT:
        raise NotImplementedError

    def _close_sub(self, address: str, sub: SubT) -> None:
        raise NotImplementedError

    def _on_new_sub(self, address: str, sub: SubT) -> None:
        return None

    def _new_tls_endpoint(self, address: str, plain: SubT | None) -> SubT:
        """The sub-channel of an endpoint that TLS clusters use (pymesh/grpc/_tls.py),
        adopting the address's plaintext channel ``plain`` if there is one."""
        raise NotImplementedError

    def subchannel(self, address: str) -> SubT:
        """The cached real channel to one endpoint address (created on first use).

        For a call whose pick is a TLS cluster (``acquire`` remembered its ClientTls),
        the view of the endpoint's TlsEndpoint for that cluster's TLS config.
        """
        tls = picked_tls()
        sub = self._subs.get(address)
        if sub is not None:
            if isinstance(sub, TlsEndpoint):
                return sub.view(tls)  # type: ignore[no-any-return]
            if tls is None:
                return sub
        with self._lock:
            if self._closed:
                raise LocalFailure(LocalStatus(grpc.StatusCode.CANCELLED, "channel closed"))
            sub = self._subs.get(address)
            if sub is None and tls is None:
                sub = self._new_channel(address)
                self._on_new_sub(address, sub)
                self._subs[address] = sub
            elif not isinstance(sub, TlsEndpoint) and tls is not None:
                # Never reuse a plaintext channel for a TLS cluster: the endpoint gets a
                # TlsEndpoint, which keeps serving plaintext calls on the old channel.
                sub = self._new_tls_endpoint(address, sub)
                self._on_new_sub(address, sub)
                self._subs[address] = sub
        assert sub is not None
        return sub.view(tls) if isinstance(sub, TlsEndpoint) else sub

    def collect(self, state: ListenerState) -> None:
        """Close sub-channels of endpoints that left every cluster (after their calls)."""
        self._seen = state
        live: set[str] = set()
        for rt in self.mesh.clusters().values():
            live |= rt.addresses
        closing: list[tuple[str, SubT]] = []
        with self._lock:
            for address in [a for a in self._subs if a not in live]:
                if self._inflight.get(address, 0) > 0:
                    self._draining.add(address)
                else:
                    closing.append((address, self._subs.pop(address)))
        for address, sub in closing:
            self._close_sub(address, sub)

    def _finish(self, address: str) -> None:
        with self._count_lock:
            left = self._inflight.get(address, 1) - 1
            self._inflight[address] = left
        if left <= 0 and address in self._draining:
            with self._lock:
                self._draining.discard(address)
                sub = self._subs.pop(address, None)
            if sub is not None:
                self._close_sub(address, sub)

    def observe(self, method: str) -> RpcObserver | None:
        """Telemetry for one call, or None when it is off (then every hook is skipped)."""
        return observe_rpc(self.target, method, self._slot.name, self.authority)

    def avoid(self) -> frozenset[str] | set[str]:
        """Addresses whose sub-channel is in TRANSIENT_FAILURE."""
        return frozenset()

    def acquire(
        self, p: Prepared, tried: set[str], attempt: int
    ) -> tuple[ClusterRuntime, str, Done]:
        """Pick an endpoint and take the circuit breaker; return ``done(code)`` to call once.

        Raises LocalFailure (UNAVAILABLE) for no healthy upstream or overflow (A32).
        """
        chosen = choose(p.plan, p.state, tried, self.avoid())
        if chosen is None:
            raise LocalFailure(no_upstream(p.plan, "no healthy upstream", self.mesh.node_id), "UH")
        rt, ep = chosen
        # Upstream TLS from the cluster's UpstreamTlsContext (pymesh/grpc/_tls.py): remember
        # this pick's ClientTls for subchannel(); fail closed, before any socket, when the
        # config cannot be satisfied. Channels with the caller's own credentials keep them.
        refused = pick_tls(self.mesh, rt, p.plan, enabled=self._credentials is None)
        if refused is not None:
            raise LocalFailure(refused, "UF")
        address = ep.address
        breaker = rt.breaker
        if breaker is not None:
            ok = breaker.try_acquire_request() if attempt == 0 else breaker.try_acquire_retry()
            if not ok:
                raise LocalFailure(
                    no_upstream(p.plan, "upstream overflow", self.mesh.node_id), "UO"
                )
        st = rt.states.get_or_create(address)
        picker = rt.picker
        # Only the peak-EWMA policy reads latencies: skip the clock and math otherwise.
        started = time.monotonic() if picker is not None and picker.policy == "peak_ewma" else None
        st.on_start(started)  # A48 least request reads the count, peak EWMA the timing
        with self._count_lock:
            self._inflight[address] = self._inflight.get(address, 0) + 1
        tried.add(address)
        finished = False

        def done(code: grpc.StatusCode) -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            if started is None:
                st.on_finish()
            else:
                now = time.monotonic()
                if code in _NO_ANSWER:
                    st.on_failure(now - started, now)  # penalised: see EndpointState
                else:
                    st.on_finish(now - started, now)
            if breaker is not None:
                if attempt == 0:
                    breaker.release_request()
                else:
                    breaker.release_retry()
            self._finish(address)
            if rt.outlier is not None:
                record(rt, address, code)

        return rt, address, done

    def backoff_delay(self, p: Prepared, attempt: int) -> float | None:
        """Seconds to wait before retry ``attempt`` (1-based); None if the deadline forbids it."""
        decider = p.plan.decider
        assert decider is not None
        delay = decider.backoff_delay(attempt, self.mesh.rng)
        if p.deadline is not None and time.monotonic() + delay >= p.deadline:
            return None
        return delay
