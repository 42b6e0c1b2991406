"""A fast keep-alive HTTP/1.1 upstream for benchmarks, run as its own process.

Listens on one port on N loopback addresses (127.0.0.1, 127.0.0.2, ...), so one process
stands in for N endpoints. Prints "READY <port>" when listening.

    python benchmarks/_upstream.py --hosts 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


def loopback_hosts(n: int) -> list[str]:
    """127.0.0.1 .. : N distinct loopback addresses (127.0.x.y, y in 1..254)."""
    out = []
    i = 0
    while len(out) < n:
        hi, lo = divmod(i, 254)
        out.append(f"127.0.{hi}.{lo + 1}")
        i += 1
    return out


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(n: int) -> None:
    # One free port that every loopback address can bind.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers = [await asyncio.start_server(_handle, h, port) for h in loopback_hosts(n)]
    print(f"READY {port}", flush=True)
    await asyncio.gather(*(srv.serve_forever() for srv in servers))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=1)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(ap.parse_args().hosts))
