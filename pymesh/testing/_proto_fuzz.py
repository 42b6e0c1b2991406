"""Fuzzing the xDS client with mutated resources, through a real control plane.

:func:`mutate` changes random fields of a valid xDS resource (any depth, any type,
out-of-range numbers, odd strings, unknown enum values, garbage inside typed ``Any``s).
:class:`FuzzRun` serves the mutants from pymesh's own ControlPlane to a real
:class:`~pymesh.xds.client.XdsClient` and checks, response by response, what must hold:
every response is ACKed or NACKed (nothing escapes, the client never stops), a NACK
names the resource and the field, a NACKed resource keeps its last good value, and an
accepted route configuration routes random requests without raising.

Used by tests/xds/client/test_xds_client_fuzz.py (hypothesis picks the seeds) and
benchmarks/xds_fuzz.py (>= 100 000 resources).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, message  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.descriptor import (  # type: ignore[import-untyped, unused-ignore]
    FieldDescriptor,
)

from pymesh.errors import MeshError
from pymesh.routing import RequestInfo, RouteTable
from pymesh.server import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
    Snapshot,
    compile_mesh,
)
from pymesh.xds.resources import decode
from pymesh.xds.resources.route import RouteConfiguration

__all__ = ["TYPES", "FuzzRun", "base_resources", "mutate"]

TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)

_INTS = (0, 1, -1, 2, 7, 100, 65535, 65536, 2**31 - 1, 2**32 - 1, 2**63 - 1, -(2**63))
_STRINGS = ("", "a", "*", "/", "/a", "(", ".*", "a(b", "\x00", "é", ":", "1.2.3.4", "x" * 300)
_FLOATS = (0.0, -1.0, 0.5, 1e300, float("inf"), float("nan"))
#: A NACK line: ``resource 'name': field.path: reason`` (or the type when no name).
_NACK_LINE = re.compile(r"^(resource '[^']*'|a resource of type '[^']+'|resource of type)")


def base_resources(services: int = 1) -> dict[str, list[Any]]:
    """A small, valid, richly configured set: listeners ``webN:80`` -> routes ->
    three clusters each (with endpoints), for ``services`` services."""
    service = {
        "port": 80,
        "versions": {
            "v1": {"endpoints": ["127.0.0.1:1", "127.0.0.2:1"]},
            "v2": {"endpoints": [{"address": "127.0.0.3:1", "weight": 2}]},
        },
        "routes": [
            {
                "match": {"prefix": "/api", "headers": {"x-a": {"regex": "b+"}}},
                "split": {"v2": 100},
                "retries": {"attempts": 2, "on": "5xx", "per_try_timeout": "1s"},
                "fault": {"abort": {"status": 503, "percent": 1}},
            },
            {"split": {"v1": 90, "v2": 10}, "timeout": "2s"},
        ],
        "traffic_policy": {
            "lb": "RING_HASH",
            "hash_on": {"header": "x-user"},
            "outlier_detection": {"consecutive_5xx": 3},
            "circuit_breakers": {"max_requests": 10},
        },
    }
    snap = compile_mesh({"services": {f"web{i}": service for i in range(services)}})
    return {t: list(snap.get(t).values()) for t in TYPES}


def _scalar(fd: Any, rng: random.Random) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if t == FieldDescriptor.TYPE_STRING:
        return rng.choice(_STRINGS)
    if t == FieldDescriptor.TYPE_BYTES:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(8)))
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return rng.choice(_FLOATS)
    if t == FieldDescriptor.TYPE_ENUM:
        values = [v.number for v in fd.enum_type.values]
        return rng.choice([*values, max(values) + 1, 99])
    return rng.choice(_INTS)


def _mutate_any(a: Any, rng: random.Random, depth: int) -> None:
    """An ``Any``: mutate what it holds (when decodable here), or break it."""
    roll = rng.random()
    if roll < 0.1:
        a.value = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 12)))
        return
    if roll < 0.15:
        a.type_url = rng.choice(("type.googleapis.com/no.such.Type", "", a.type_url + "x"))
        return
    from google.protobuf import symbol_database  # type: ignore[import-untyped, unused-ignore]

    try:
        cls = symbol_database.Default().GetSymbol(a.type_url.rsplit("/", 1)[-1])
    except KeyError:
        return
    inner = cls()
    try:
        inner.ParseFromString(a.value)
    except message.DecodeError:
        return  # broken by an earlier mutation of this round: leave it broken
    _mutate_one(inner, rng, depth + 1)
    a.Pack(inner)


def _mutate_one(msg: Any, rng: random.Random, depth: int) -> None:
    fields = msg.DESCRIPTOR.fields
    if not fields:
        return
    fd = rng.choice(fields)
    repeated = fd.is_repeated
    if fd.message_type is not None:
        if fd.message_type.GetOptions().map_entry:
            if rng.random() < 0.5:
                msg.ClearField(fd.name)
            return
        if rng.random() < 0.15 and depth > 0:
            msg.ClearField(fd.name)
            return
        if repeated:
            items = getattr(msg, fd.name)
            sub = rng.choice(items) if len(items) and rng.random() < 0.7 else items.add()
        else:
            sub = getattr(msg, fd.name)
            sub.SetInParent()
        if fd.message_type.full_name == "google.protobuf.Any":
            _mutate_any(sub, rng, depth)
        elif depth < 8:
            _mutate_one(sub, rng, depth + 1)
        return
    value = _scalar(fd, rng)
    try:
        if repeated:
            getattr(msg, fd.name).append(value)
        else:
            setattr(msg, fd.name, value)
    except (TypeError, ValueError):
        pass  # out of the field's range: protobuf itself refuses it


def mutate(msg: Any, rng: random.Random, mutations: int = 3) -> Any:
    """A copy of ``msg`` with ``mutations`` random field changes; the name is kept
    most of the time so the client still subscribes to the mutant."""
    out = type(msg)()
    out.CopyFrom(msg)
    for _ in range(mutations):
        _mutate_one(out, rng, 0)
    name_field = "cluster_name" if hasattr(out, "cluster_name") else "name"
    if rng.random() < 0.9:
        setattr(out, name_field, getattr(msg, name_field))
    return out


class _Keeper:
    """A watcher keeping the last value and counting events (on the xDS thread)."""

    def __init__(self) -> None:
        self.value: Any = None
        self.events: Counter[str] = Counter()

    def on_resource(self, name: str, value: Any) -> None:
        self.value = value
        self.events["resource"] += 1

    def on_error(self, name: str, error: MeshError) -> None:
        self.events["error"] += 1

    def on_does_not_exist(self, name: str) -> None:
        self.value = None
        self.events["dne"] += 1


@dataclass
class FuzzStats:
    responses: int = 0
    resources: int = 0
    acks: int = 0
    nacks: int = 0
    routed: int = 0
    nack_examples: list[str] = field(default_factory=list)


class FuzzRun:
    """Serve mutants to a real client and check the invariants after each response."""

    def __init__(
        self, control_plane: ControlPlane, client: Any, node_id: str, services: int = 1
    ) -> None:
        self.cp = control_plane
        self.client = client
        self.node_id = node_id
        self.base = base_resources(services)
        self.stats = FuzzStats()
        self.keepers: dict[tuple[str, str], _Keeper] = {}
        self._round = 0
        self._acked_for: dict[str, list[Any]] = dict(self.base)
        self._lock = threading.Lock()

    def _names(self, type_url: str, resources: list[Any]) -> list[str]:
        key = "cluster_name" if type_url == ENDPOINT_TYPE else "name"
        return [getattr(r, key) for r in resources]

    def subscribe(self) -> None:
        """Watch every base resource and wait until the valid set is ACKed."""
        self._serve(self.base, "base")
        for t in TYPES:
            for name in self._names(t, self.base[t]):
                k = self.keepers[(t, name)] = _Keeper()
                self.client.watch(t, name, k)
        for t in TYPES:
            self.cp.wait_for_ack(t, "base", 60, self.node_id)

    def _serve(self, resources: dict[str, list[Any]], version: str) -> None:
        snap = Snapshot.of(
            version,
            listeners=resources[LISTENER_TYPE],
            routes=resources[ROUTE_TYPE],
            clusters=resources[CLUSTER_TYPE],
            endpoints=resources[ENDPOINT_TYPE],
        )
        # The cache, not ControlPlane.set_snapshot: a mutant may dangle a reference, as a
        # foreign control plane's bad push would.
        self.cp.cache.set_snapshot(snap, self.node_id)

    def round(self, type_url: str, rng: random.Random, per_response: int = 1) -> str:
        """Send ``per_response`` mutants of ``type_url``'s base resources in one
        response; returns "ack" or "nack" after checking the invariants."""
        self._round += 1
        version = f"fuzz-{self._round}"
        base = self.base[type_url]
        mutants = []
        seen: set[str] = set()
        for i in range(per_response):
            m = mutate(base[i % len(base)], rng, rng.randint(1, 4))
            name = self._names(type_url, [m])[0]
            if name in seen:
                continue  # one resource per name in a response
            seen.add(name)
            mutants.append(m)
        resources = dict(self._acked_for)
        resources[type_url] = mutants
        before = {k: k_.value for k, k_ in self.keepers.items() if k[0] == type_url}
        try:
            self._serve(resources, version)
        except ValueError:
            return "skipped"  # e.g. two resources of one name
        answer = self._answer(type_url, version)
        self.stats.responses += 1
        self.stats.resources += len(mutants)
        if isinstance(answer, str):  # a NACK's message
            self.stats.nacks += 1
            rejected = self._check_nack(type_url, answer, before)
            self._check_routes(type_url, mutants, rejected)
            return "nack"
        self.stats.acks += 1
        self._acked_for[type_url] = mutants
        self._check_routes(type_url, mutants, set())
        return "ack"

    def _answer(self, type_url: str, version: str, timeout: float = 60.0) -> str | None:
        """None for an ACK of ``version``, the NACK's message for a NACK of it."""
        deadline = time.monotonic() + timeout
        # A mutant equal to what the client already holds is not sent again: the answer
        # is the one the version it was sent at got.
        sent_at = self.cp.versions_of(version, type_url, self.node_id)
        while time.monotonic() < deadline:
            for n in self.cp.nacks:
                if n.type_url == type_url and n.version in sent_at and n.node_id == self.node_id:
                    return n.message
            for a in self.cp.acks:
                if a.type_url == type_url and a.version in sent_at and a.node_id == self.node_id:
                    return None
            time.sleep(0.001)
        raise AssertionError(f"the client neither ACKed nor NACKed {type_url} {version}")

    def _check_nack(self, type_url: str, message: str, before: dict[Any, Any]) -> set[str]:
        """Check a NACK; returns the names of the resources it rejected."""
        for line in message.splitlines():
            assert _NACK_LINE.match(line), f"NACK line names no resource: {line!r}"
            assert ": " in line, f"NACK line names no field or reason: {line!r}"
        if len(self.stats.nack_examples) < 20:
            self.stats.nack_examples.append(message.splitlines()[0][:200])
        # A rejected resource keeps its last good value (gRFC A88). Its valid siblings
        # may change (gRFC A46), and a subscribed name the server reports NOT_FOUND in
        # resource_errors is gone whatever else the response holds. (That a rejected
        # response deletes nothing by mere absence is tested against a server that
        # sends no resource_errors: tests/xds/client/test_xds_client_fail_closed.py.)
        rejected = set(re.findall(r"^resource '([^']*)'", message, re.MULTILINE))
        after = self._values(type_url)
        for key, value in before.items():
            if key[1] in rejected:
                assert after[key] is value, f"{key} changed by a NACKed response: {message}"
        return rejected

    def _values(self, type_url: str) -> dict[Any, Any]:
        done = threading.Event()
        out: dict[Any, Any] = {}

        def read() -> None:
            out.update({k: k_.value for k, k_ in self.keepers.items() if k[0] == type_url})
            done.set()

        self.client.submit(read)  # on the xDS thread: after every callback of the response
        assert done.wait(30)
        return out

    def _check_routes(self, type_url: str, mutants: list[Any], rejected: set[str]) -> None:
        """Every route configuration the client accepted routes random requests."""
        if type_url != ROUTE_TYPE:
            return
        subscribed = set(self._names(type_url, self.base[type_url]))
        for m in mutants:
            if m.name not in subscribed or m.name in rejected:
                continue  # never sent, or rejected
            any_msg = any_pb2.Any()
            any_msg.Pack(m)
            _, rc = decode(ROUTE_TYPE, any_msg)
            assert isinstance(rc, RouteConfiguration)
            table = RouteTable.compile(rc)
            rng = random.Random(self._round)
            for _ in range(20):
                req = RequestInfo(
                    rng.choice(("GET", "POST")),
                    rng.choice(("web0:80", "web0", "x", "")),
                    rng.choice(("/", "/api", "/api/x?q=1", "/%", "")),
                    {"x-a": rng.choice(("b", "bbb", "", "c")), "x-user": str(rng.random())},
                )
                table.select(req, rng.getrandbits(64))
                self.stats.routed += 1


def run_rounds(
    fuzz: FuzzRun,
    seeds: list[int],
    per_response: int = 1,
    progress: Callable[[int], None] | None = None,
) -> FuzzStats:
    """One round per seed, cycling through the four resource types."""
    for i, seed in enumerate(seeds):
        fuzz.round(TYPES[i % len(TYPES)], random.Random(seed), per_response)
        if progress is not None:
            progress(i)
    return fuzz.stats
