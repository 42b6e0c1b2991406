"""The demo's bundled mesh file: its backends, its phases, and one snapshot per phase."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from pymesh.errors import ConfigFileError
from pymesh.server import Snapshot, compile_mesh
from pymesh.server.config_file import parse_duration

__all__ = ["BackendSpec", "DemoConfig", "PhaseSpec", "load_demo_config"]

SOURCE = "pymesh/demo_mesh.yaml"
_PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"


@dataclass(frozen=True)
class BackendSpec:
    """One demo backend: which version it serves and how it behaves."""

    name: str
    version: str
    delay: float
    fail_rate: float


@dataclass(frozen=True)
class PhaseSpec:
    """One phase: a title, a sentence for the user and the service's routes/policy."""

    name: str
    say: str
    routes: list[Any]
    traffic_policy: Mapping[str, Any] | None


@dataclass(frozen=True)
class DemoConfig:
    """The parsed bundled file."""

    mesh: Mapping[str, Any]  # the `services` part, a mesh file without endpoints
    service: str
    port: int
    phase_seconds: float
    workers: int
    requests_per_second: float
    test_user: str
    backends: tuple[BackendSpec, ...]
    phases: tuple[PhaseSpec, ...]

    @property
    def authority(self) -> str:
        """``service:port``, the URL authority (and listener name) clients use."""
        return f"{self.service}:{self.port}"

    def cluster(self, version: str) -> str:
        """Istio's subset cluster name for ``version``."""
        return f"outbound|{self.port}|{version}|{self.service}"

    def snapshot(self, phase: PhaseSpec, addresses: Mapping[str, str], version: str) -> Snapshot:
        """The phase's snapshot, with real backend ``addresses`` (backend name → ip:port)."""
        mesh = copy.deepcopy(dict(self.mesh))
        svc = mesh["services"][self.service]
        for b in self.backends:
            svc["versions"][b.version].setdefault("endpoints", []).append(addresses[b.name])
        svc["routes"] = copy.deepcopy(phase.routes)
        if phase.traffic_policy is not None:
            svc["traffic_policy"] = copy.deepcopy(dict(phase.traffic_policy))
        snap = compile_mesh(mesh, f"{SOURCE} (phase {phase.name!r})")
        return dataclasses.replace(snap, version=version)


def _fail(where: str, reason: str) -> ConfigFileError:
    return ConfigFileError(SOURCE, where, reason)


def _seconds(value: object, where: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise _fail(where, str(e)) from e


def load_demo_config(text: str | None = None) -> DemoConfig:
    """Parse the bundled ``demo_mesh.yaml`` (or ``text``). Raises ConfigFileError."""
    if text is None:
        text = resources.files("pymesh").joinpath("demo_mesh.yaml").read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _fail("<yaml>", f"not valid YAML: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("demo"), dict):
        raise _fail("demo", "missing the demo section")
    demo: dict[str, Any] = data.pop("demo")
    try:
        service = str(demo["service"])
        port = int(data["services"][service]["port"])
        backends = tuple(
            BackendSpec(
                name=str(name),
                version=str(spec["version"]),
                delay=_seconds(spec.get("delay", 0), f"demo.backends.{name}.delay"),
                fail_rate=float(spec.get("fail_rate", 0.0)),
            )
            for name, spec in demo["backends"].items()
        )
        phases = tuple(
            PhaseSpec(
                name=str(p["name"]),
                say=str(p.get("say", "")),
                routes=list(p["routes"]),
                traffic_policy=p.get("traffic_policy"),
            )
            for p in demo["phases"]
        )
        versions = data["services"][service]["versions"]
        for b in backends:
            if b.version not in versions:
                raise _fail(f"demo.backends.{b.name}", f"unknown version {b.version!r}")
        return DemoConfig(
            mesh=data,
            service=service,
            port=port,
            phase_seconds=_seconds(demo.get("phase_seconds", 5), "demo.phase_seconds"),
            workers=int(demo.get("workers", 4)),
            requests_per_second=float(demo.get("requests_per_second", 100)),
            test_user=str(demo.get("test_user", "jason")),
            backends=backends,
            phases=phases,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _fail("demo", f"malformed demo section: {e!r}") from e
