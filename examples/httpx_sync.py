"""httpx (sync) through pymesh: a 90/10 canary and a header route, all on 127.0.0.1.

Run: python examples/httpx_sync.py

It starts pymesh's embedded xDS control plane and three real HTTP backends, gives the
mesh a config, and sends requests with an ordinary httpx.Client whose transport is
pymesh.MeshTransport. The URL authority (reviews:9080) names the xDS listener.
"""

from __future__ import annotations

from collections import Counter

import httpx

import pymesh
from pymesh.server import ControlPlane
from pymesh.testing import EchoBackend, bootstrap_for, push_mesh


def main() -> None:
    with (
        ControlPlane(port=0) as cp,
        EchoBackend("v1") as v1,
        EchoBackend("v2") as v2,
        EchoBackend("v3") as v3,
        pymesh.Mesh(bootstrap=bootstrap_for(cp, "httpx-sync-example"), seed=1) as mesh,
    ):
        # The same dict you would write as a mesh file (docs/mesh-file.md).
        push_mesh(
            cp,
            mesh,
            {
                "services": {
                    "reviews": {
                        "port": 9080,
                        "versions": {
                            "v1": {"endpoints": [v1.address]},
                            "v2": {"endpoints": [v2.address]},
                            "v3": {"endpoints": [v3.address]},
                        },
                        "routes": [
                            {"match": {"headers": {"end-user": "jason"}}, "split": "v3"},
                            {"split": {"v1": 90, "v2": 10}, "retries": {"attempts": 2}},
                        ],
                    }
                }
            },
        )
        with httpx.Client(transport=pymesh.MeshTransport(mesh), timeout=5.0) as client:
            served = Counter(client.get("http://reviews:9080/api").text for _ in range(200))
            print(f"200 requests: {dict(sorted(served.items()))}")
            jason = client.get("http://reviews:9080/api", headers={"end-user": "jason"})
            print(f"end-user: jason -> {jason.headers['x-backend']}")
            dump = mesh.config_dump()
            print(f"xDS: {len(dump['resources'])} resources, connected={dump['connected']}")


if __name__ == "__main__":
    main()
