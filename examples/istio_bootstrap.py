"""Load an istio-agent style bootstrap, as a pod in an Istio mesh would.

Run: python examples/istio_bootstrap.py

In a pod with ``sidecar.istio.io/inject: "true"`` and the ``grpc-agent`` template,
istio-agent writes a bootstrap like istio_bootstrap.json and sets GRPC_XDS_BOOTSTRAP;
``pymesh.Mesh.from_env()`` picks it up unchanged, like grpcio's xDS client does. Outside
a cluster there is no istiod at unix:///etc/istio/proxy/XDS, so this example then points
the same bootstrap at a local control plane serving Istio-style names
(``reviews.default.svc.cluster.local:9080``) and sends a request.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import httpx

import pymesh
from pymesh.bootstrap import ENV_BOOTSTRAP_PATH, load_bootstrap
from pymesh.server import ControlPlane
from pymesh.testing import EchoBackend, push_mesh

HERE = Path(__file__).resolve().parent
HOST = "reviews.default.svc.cluster.local"


def main() -> None:
    bootstrap = load_bootstrap(HERE / "istio_bootstrap.json")
    print(f"node id        {bootstrap.node.id}")
    print(f"xDS server     {bootstrap.xds_servers[0].server_uri}")
    print(f"cert providers {', '.join(bootstrap.certificate_providers)}")
    print(f"listener name  {bootstrap.listener_resource_name(f'{HOST}:9080')}")

    data = json.loads((HERE / "istio_bootstrap.json").read_text(encoding="utf-8"))
    with ControlPlane(port=0) as cp, EchoBackend("reviews-v1") as backend:
        data["xds_servers"][0]["server_uri"] = cp.address  # stand-in for istiod
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bootstrap.json"
            path.write_text(json.dumps(data), encoding="utf-8")
            os.environ[ENV_BOOTSTRAP_PATH] = str(path)
            with pymesh.Mesh.from_env() as mesh:
                config = {"services": {HOST: {"port": 9080, "endpoints": [backend.address]}}}
                push_mesh(cp, mesh, config)
                with httpx.Client(transport=pymesh.MeshTransport(mesh)) as client:
                    r = client.get(f"http://{HOST}:9080/reviews/0")
                print(f"GET http://{HOST}:9080/ -> {r.status_code} from {r.headers['x-backend']}")


if __name__ == "__main__":
    main()
