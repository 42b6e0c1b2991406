"""/stats text: prometheus_client's exposition of the same reading as the OTel instruments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

import pymesh
from pymesh.telemetry import OBSERVED, collect, prometheus_text
from pymesh.testing import EchoBackend

CLUSTER = "outbound|9080||reviews"


def test_stats_text_parses_and_matches_the_collected_values(
    mesh: pymesh.Mesh, push_mesh: Callable[..., Any], echo_backend: EchoBackend
) -> None:
    policy = {"outlier_detection": {"consecutive_5xx": 1, "max_ejection_percent": 100}}
    svc = {"port": 9080, "endpoints": [echo_backend.address], "traffic_policy": policy}
    push_mesh({"services": {"reviews": svc}})
    echo_backend.fail_next(1, status=503)
    with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
        assert client.get("http://reviews:9080/").status_code == 503

    text = prometheus_text(mesh)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # Every observed metric is exposed, counters under their name without _total (the
    # parser strips it) and typed as such.
    for spec in OBSERVED:
        family = families[spec.name.replace(".", "_")]
        assert family.type == spec.kind
        assert family.documentation == spec.description
    expected = collect([mesh])
    for spec in OBSERVED:
        samples = families[spec.name.replace(".", "_")].samples
        got = {
            tuple(sorted((k, v) for k, v in s.labels.items())): s.value
            for s in samples
            if not s.name.endswith("_created")
        }
        want = {
            tuple(sorted((k.replace(".", "_"), v) for k, v in attrs)): value
            for attrs, value in expected[spec.name].items()
        }
        assert got == want, spec.name
    ejected = families["pymesh_outlier_ejections_active"].samples
    assert [(s.labels, s.value) for s in ejected] == [({"pymesh_cluster": CLUSTER}, 1.0)]
    assert f'pymesh_outlier_ejections_total{{pymesh_cluster="{CLUSTER}"}} 1.0' in text
