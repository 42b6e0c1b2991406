"""The ``pymesh`` command line: serve, demo, explain, status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pymesh.errors import MeshError


def _serve(args: argparse.Namespace) -> int:
    from pymesh.server._serve import serve

    serve(args.config, args.port, host=args.host, bootstrap_out=args.bootstrap_out)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pymesh._demo import run_demo

    return run_demo(forever=args.forever, plain=args.plain, seed=args.seed)


def _require_bootstrap(args: argparse.Namespace) -> None:
    """Fail with the fix when neither --admin, --bootstrap nor the environment says where
    the control plane is (rather than guessing that an argument is an admin address)."""
    if args.admin is not None or args.bootstrap is not None:
        return
    if os.environ.get("GRPC_XDS_BOOTSTRAP") or os.environ.get("GRPC_XDS_BOOTSTRAP_CONFIG"):
        return
    target = " ".join(args.host) if args.command == "status" else args.url
    about = f" to resolve {target}" if target else ""
    raise MeshError(
        f"{args.command}: no bootstrap, so no control plane to ask{about}; fix: pass "
        "--bootstrap FILE or set GRPC_XDS_BOOTSTRAP=FILE (`pymesh serve mesh.yaml "
        "--bootstrap-out FILE` writes one for a local control plane); to ask a running "
        "pymesh process's admin server instead, pass --admin HOST:PORT"
    )


def _explain(args: argparse.Namespace) -> int:
    from pymesh._explain_cli import run_explain

    _require_bootstrap(args)
    return run_explain(
        bootstrap=args.bootstrap,
        method=args.method,
        url=args.url,
        headers=args.header,
        as_json=args.json,
        timeout=args.timeout,
        admin=args.admin,
        random_value=args.random,
    )


def _status(args: argparse.Namespace) -> int:
    from pymesh._explain_cli import run_status, run_status_admin, run_status_csds

    if args.csds is not None:
        if args.host or args.admin is not None:
            raise MeshError(
                f"status --csds {args.csds}: drop the hosts and --admin; fix: CSDS shows "
                "every resource of the process it asks"
            )
        return run_status_csds(csds=args.csds, as_json=args.json, timeout=args.timeout)
    if args.admin is not None:
        if args.host:
            raise MeshError(
                f"status --admin {args.admin}: also got hosts {' '.join(args.host)}; fix: "
                "drop them (the admin server shows every listener its process uses) or "
                "drop --admin and pass --bootstrap FILE to resolve them"
            )
        return run_status_admin(admin=args.admin, as_json=args.json, timeout=args.timeout)
    _require_bootstrap(args)
    return run_status(
        bootstrap=args.bootstrap, hosts=args.host, as_json=args.json, timeout=args.timeout
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pymesh",
        description="A proxyless, client-side service mesh for Python.",
        epilog="Exit codes: 0 done; 1 could not finish the job (status: the control plane is "
        "unreachable or a host did not resolve, after printing what it has; demo: failed "
        "part-way); 2 an error (its message names the file or field and the fix); "
        "130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "serve",
        help="serve a mesh file as an xDS control plane (ADS)",
        description="Serve a mesh file as an xDS control plane (ADS); every saved edit is "
        "pushed to connected clients. Prints a ready bootstrap for those clients.",
    )
    p.add_argument("config", help="mesh.yaml: services, versions, routes, traffic policy")
    p.add_argument(
        "--port",
        type=int,
        default=18000,
        help="port to listen on (default: %(default)s; 0: any free port)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s; 0.0.0.0: every interface, "
        "reachable from other machines)",
    )
    p.add_argument(
        "--bootstrap-out",
        metavar="FILE",
        help="write the clients' bootstrap (gRPC format) to FILE, for GRPC_XDS_BOOTSTRAP=FILE",
    )
    p.set_defaults(func=_serve)

    p = sub.add_parser("demo", help="run the demo: control plane, backends, live traffic")
    p.add_argument("--forever", action="store_true", help="keep running until Ctrl-C")
    p.add_argument("--plain", action="store_true", help="plain line output even on a terminal")
    p.add_argument(
        "--seed",
        type=int,
        default=7,
        help="seed of every random choice (default: 7); counts still vary a little with "
        "timing (docs/quickstart.md says what and why)",
    )
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "explain", help="show how a request would be routed (router_check for humans)"
    )
    p.add_argument("--bootstrap", help="bootstrap file (default: GRPC_XDS_BOOTSTRAP)")
    p.add_argument("method_or_url", nargs="+", metavar="[METHOD] URL")
    p.add_argument("-H", "--header", action="append", default=[], help="'name: value'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for config")
    p.add_argument("--admin", metavar="HOST:PORT", help="ask a running mesh's admin server")
    p.add_argument(
        "--random", type=int, metavar="N", help="fixed 64-bit random value (weighted pick)"
    )
    p.set_defaults(func=_explain)

    p = sub.add_parser("status", help="show listeners, clusters and endpoints as tables")
    p.add_argument("--bootstrap", help="bootstrap file (default: GRPC_XDS_BOOTSTRAP)")
    p.add_argument(
        "host",
        nargs="*",
        help="hosts (authorities) to resolve, e.g. reviews:9080",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for config (default: 10)"
    )
    p.add_argument(
        "--admin",
        metavar="HOST:PORT",
        help="read a running pymesh process's admin server instead of a bootstrap",
    )
    p.add_argument(
        "--csds",
        metavar="HOST:PORT",
        help="ask a CSDS server (ClientStatusDiscoveryService, e.g. Mesh.start_csds()) "
        "for every resource and its status",
    )
    p.set_defaults(func=_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "explain":
        words = args.method_or_url
        if len(words) == 1:
            args.method, args.url = "GET", words[0]
        elif len(words) == 2:
            args.method, args.url = words[0].upper(), words[1]
        else:
            parser.error("explain takes [METHOD] URL")
    try:
        return int(args.func(args))
    except MeshError as exc:
        print(f"pymesh: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
