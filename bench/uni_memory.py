#!/usr/bin/env python3
"""bench/uni_memory.py — server memory per idle connection, by transport.

For each transport, starts ``livehub serve`` (insecure, uni transports enabled) on a free
loopback port, opens ``--connections`` raw connections that connect and then stay idle, and
reports the growth of the server's resident memory (``/proc/<pid>/status`` VmRSS) divided by
the number of connections::

    .venv/bin/python bench/uni_memory.py --connections 1000

Safety: loopback only; connections are opened 100 at a time and closed at the end; the
server is stopped after each transport (``tests/servers.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import serve  # noqa: E402
from tests.test_connection import client_frame  # noqa: E402
from tests.test_unidirectional import _rss_kb, _server_pid  # noqa: E402

CONFIG = {
    "client": {"insecure": True},
    "uni_websocket": {"enabled": True},
    "uni_sse": {"enabled": True},
    "uni_http_stream": {"enabled": True},
}
UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)
REQUESTS = {
    "websocket": f"GET /connection/websocket HTTP/1.1\r\nHost: x\r\n{UPGRADE}".encode(),
    "uni_websocket": (
        f"GET /connection/uni_websocket?cf_connect=%7B%7D HTTP/1.1\r\nHost: x\r\n{UPGRADE}".encode()
    ),
    "uni_sse": b"GET /connection/uni_sse HTTP/1.1\r\nHost: x\r\n\r\n",
    "uni_http_stream": b"POST /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
}

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_one(port: int, transport: str) -> Connection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUESTS[transport])
    if transport == "websocket":  # the bidirectional client sends its connect command
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(client_frame(b'{"id":1,"connect":{}}'))
    await asyncio.wait_for(reader.read(1), 10)  # connected: something came back
    return reader, writer


async def measure(port: int, transport: str, count: int) -> float:
    pid = _server_pid(port)
    await asyncio.sleep(0.5)
    before = _rss_kb(pid)
    connections: list[Connection] = []
    for start in range(0, count, 100):
        connections += await asyncio.gather(
            *(open_one(port, transport) for _ in range(min(100, count - start)))
        )
    await asyncio.sleep(1)
    grown = _rss_kb(pid) - before
    for _, writer in connections:
        writer.close()
    return grown / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(CONFIG))
        for transport in REQUESTS:
            with serve(config) as port:
                per = asyncio.run(measure(port, transport, args.connections))
            print(f"{transport:16} {args.connections} idle connections: {per:.1f} KiB of server RSS each")


if __name__ == "__main__":
    main()
