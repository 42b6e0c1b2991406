"""httpx (asyncio) through pymesh: concurrent requests across a weighted split.

Run: python examples/httpx_async.py

AsyncMeshTransport makes the same routing decisions as MeshTransport and never blocks
the event loop, not even while waiting for the first xDS config.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

import pymesh
from pymesh.server import ControlPlane
from pymesh.testing import EchoBackend, bootstrap_for, push_mesh


async def main() -> None:
    with (
        ControlPlane(port=0) as cp,
        EchoBackend("blue") as blue,
        EchoBackend("green", delay=0.005) as green,
        pymesh.Mesh(bootstrap=bootstrap_for(cp, "httpx-async-example"), seed=2) as mesh,
    ):
        config = {
            "services": {
                "shop": {
                    "port": 8080,
                    "versions": {
                        "blue": {"endpoints": [blue.address]},
                        "green": {"endpoints": [green.address]},
                    },
                    "routes": [{"split": {"blue": 50, "green": 50}}],
                }
            }
        }
        # push_mesh blocks until the mesh ACKs; run it off the event loop.
        await asyncio.to_thread(push_mesh, cp, mesh, config)
        async with httpx.AsyncClient(transport=pymesh.AsyncMeshTransport(mesh)) as client:
            responses = await asyncio.gather(
                *(client.get("http://shop:8080/cart") for _ in range(100))
            )
        served = Counter(r.headers["x-backend"] for r in responses)
        print(f"100 concurrent requests: {dict(sorted(served.items()))}")
        print(f"all ok: {all(r.status_code == 200 for r in responses)}")


if __name__ == "__main__":
    asyncio.run(main())
