"""What RBAC adds to a request on a pymesh HTTP server, side by side with no RBAC.

One process, one run: an ASGI app called in-process (no sockets, so only the middleware's
own work is measured) with and without ``pymesh.asgi.RbacMiddleware``; the policy set is
an Istio-like ALLOW filter of N policies where the request matches only the last one
(every policy is tried): header, path prefix and SPIFFE principal matchers. Reports µs
per request for: the bare app, the app behind the middleware, and the engine's decision
alone (request view already built), and the ratio middleware / bare.

    python benchmarks/rbac_check.py                 # 20 000 requests, 10 policies
    python benchmarks/rbac_check.py --requests 100000 --policies 50
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pymesh.asgi import RbacMiddleware, rbac_request
from pymesh.security import RbacAuthorizer
from pymesh.xds.resources.matchers import HeaderMatcher, StringMatcher
from pymesh.xds.resources.rbac import (
    AuthenticatedRule,
    HeaderRule,
    RbacConfig,
    RbacPolicy,
    RbacRules,
    UrlPathRule,
)

SPIFFE = "spiffe://cluster.local/ns/shop/sa/"


def _cert_pem(service: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SPIFFE + service)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def policies(n: int) -> RbacAuthorizer:
    """N policies; only the last admits sa/frontend's GET /orders/..."""
    out = []
    for i in range(n):
        who = "frontend" if i == n - 1 else f"svc-{i}"
        out.append(
            (
                f"p{i:03d}",
                RbacPolicy(
                    (
                        HeaderRule(HeaderMatcher(":method", StringMatcher("exact", "GET"))),
                        UrlPathRule(StringMatcher("prefix", "/orders/")),
                    ),
                    (AuthenticatedRule(StringMatcher("exact", SPIFFE + who)),),
                ),
            )
        )
    return RbacAuthorizer.from_config(RbacConfig(RbacRules("ALLOW", tuple(out))))


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def scope(pem: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/orders/1",
        "raw_path": b"/orders/1",
        "query_string": b"",
        "scheme": "https",
        "headers": [
            (b"host", b"orders:8443"),
            (b"user-agent", b"python-httpx/0.28"),
            (b"accept", b"*/*"),
            (b"accept-encoding", b"gzip, deflate"),
            (b"x-request-id", b"0f0e0d0c"),
        ],
        "client": ("10.0.0.5", 50000),
        "server": ("10.0.0.9", 8443),
        "extensions": {"tls": {"client_cert_chain": [pem]}},
    }


async def run(target: Any, s: dict[str, Any], n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_msg: Any) -> None:
        return None

    start = time.perf_counter()
    for _ in range(n):
        await target(s, receive, send)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--policies", type=int, default=10)
    args = ap.parse_args()
    pem = _cert_pem("frontend")
    s = scope(pem)
    auth = policies(args.policies)
    mw = RbacMiddleware(app, auth)
    assert mw.decide(s) is not None and auth.decide(rbac_request(s)).allowed
    n = args.requests
    # Interleaved rounds so drift hits both sides alike.
    bare, with_rbac = [], []
    for _ in range(3):
        bare.append(asyncio.run(run(app, s, n)))
        with_rbac.append(asyncio.run(run(mw, s, n)))
    view = rbac_request(s)
    start = time.perf_counter()
    for _ in range(n):
        auth.decide(view)
    engine = (time.perf_counter() - start) / n * 1e6
    b, w = min(bare), min(with_rbac)
    print(f"{n} requests, {args.policies} ALLOW policies (the last one matches)")
    print(f"  bare ASGI app            {b:7.2f} µs/request")
    print(f"  + RbacMiddleware         {w:7.2f} µs/request  (adds {w - b:.2f} µs, x{w / b:.2f})")
    print(f"  engine decision alone    {engine:7.2f} µs/request")


if __name__ == "__main__":
    main()
