#!/usr/bin/env python3
"""bench/stream_fanout.py — fan-out to N subscribers over SSE vs over WebSocket, same server, same run.

    .venv/bin/python bench/stream_fanout.py --subs 1000 --messages 200 --reps 3

One ``livehub serve`` (bench/fanout.toml plus ``sse`` and ``http_stream`` enabled) pinned to CPU 0;
this process, pinned to CPU 1, opens N subscribers of one transport (SSE: ``GET
/connection/sse?cf_connect=<connect + subscribe>``; WebSocket: the two commands in one frame),
then one WebSocket publisher sends ``--messages`` publications to channel ``bench`` in windows of
``--window`` (the next window once every subscriber got the previous one). Deliveries are counted
in the raw bytes each subscriber receives (every publication push holds ``"pub"`` once, whatever
the framing), so both transports cost this process the same. Figures: deliveries/s and the bytes
on the wire per delivery; each repetition measures both transports (order alternating), and the
medians of ``--reps`` are printed with the SSE/WebSocket ratio as one JSON object.

Loopback only; every wait bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
[client]
insecure = true
ping_interval = "25s"
queue_max_size = 10485760

[channel.without_namespace]
presence = false

[http_stream]
enabled = true

[sse]
enabled = true
"""
COMMANDS = '{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"bench"}}'
MARK = b'"pub"'
WAIT = 30.0


class Counter(asyncio.Protocol):
    """A subscriber: counts the publication pushes in whatever bytes arrive."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.tail = b""
        self.ready = asyncio.get_running_loop().create_future()
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.run.bytes += len(data)
        if not self.ready.done():
            self.buf += data
            if b'"id":2' in self.buf:
                self.ready.set_result(None)
            return
        chunk = self.tail + data
        self.run.count += chunk.count(MARK)
        self.tail = data[-4:]
        if self.run.count >= self.run.expected and self.run.waiter is not None and not self.run.waiter.done():
            self.run.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before subscribed"))


class Run:
    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.expected = 0
        self.waiter: asyncio.Future[None] | None = None


def ws_frame(text: str) -> bytes:
    """A masked client text frame (mask 0: the payload unchanged)."""
    payload = text.encode()
    n = len(payload)
    head = bytes([0x81])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def ws_upgrade() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        "GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def open_subscriber(port: int, transport: str, run: Run) -> asyncio.Transport:
    loop = asyncio.get_running_loop()
    t, p = await loop.create_connection(lambda: Counter(run), "127.0.0.1", port)
    if transport == "sse":
        t.write(f"GET /connection/sse?cf_connect={quote(COMMANDS)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    else:
        t.write(ws_upgrade() + ws_frame(COMMANDS))
    await asyncio.wait_for(p.ready, WAIT)
    return t


class Publisher(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.replies = 0
        self.event = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.replies += data.count(b'"id":')
        self.event.set()


async def measure(port: int, transport: str, subs: int, messages: int, window: int) -> dict[str, Any]:
    run = Run()
    conns = []
    sem = asyncio.Semaphore(50)

    async def one() -> None:
        async with sem:
            conns.append(await open_subscriber(port, transport, run))

    await asyncio.gather(*(one() for _ in range(subs)))
    loop = asyncio.get_running_loop()
    pt, pub = await loop.create_connection(Publisher, "127.0.0.1", port)
    pt.write(ws_upgrade() + ws_frame('{"id":1,"connect":{}}'))
    await asyncio.sleep(0.5)
    run.count = 0
    run.bytes = 0
    payload = json.dumps({"text": "x" * 64})
    start = time.perf_counter()
    sent = 0
    cid = 2
    while sent < messages:
        k = min(window, messages - sent)
        frame = "\n".join(
            json.dumps({"id": cid + i, "publish": {"channel": "bench", "data": json.loads(payload)}}) for i in range(k)
        )
        cid += k
        sent += k
        run.expected = sent * subs
        run.waiter = loop.create_future()
        pt.write(ws_frame(frame))
        if run.count < run.expected:
            await asyncio.wait_for(run.waiter, WAIT)
    elapsed = time.perf_counter() - start
    deliveries = run.count
    for t in conns:
        t.close()
    pt.close()
    await asyncio.sleep(0.5)
    return {
        "transport": transport,
        "deliveries_per_s": round(deliveries / elapsed),
        "bytes_per_delivery": round(run.bytes / deliveries, 1),
        "elapsed_s": round(elapsed, 3),
    }


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("livehub serve exited")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--port", type=int, default=18766)
    a = parser.parse_args()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(CONFIG)
        cmd = ["taskset", "-c", "0", str(ROOT / ".venv/bin/livehub"), "serve", "--config", str(config)]
        cmd += ["--port", str(a.port), "--log-level", "warning"]
        proc = subprocess.Popen(cmd, cwd=ROOT)
        try:
            wait_port(a.port, proc)
            results: dict[str, list[dict[str, Any]]] = {"websocket": [], "sse": []}
            for rep in range(a.reps):
                order = ["websocket", "sse"] if rep % 2 == 0 else ["sse", "websocket"]
                for transport in order:
                    r = asyncio.run(measure(a.port, transport, a.subs, a.messages, a.window))
                    print(json.dumps(r), file=sys.stderr)
                    results[transport].append(r)
        finally:
            proc.terminate()
            proc.wait(10)
    med = {
        t: {k: statistics.median(r[k] for r in rs) for k in ("deliveries_per_s", "bytes_per_delivery")}
        for t, rs in results.items()
    }
    print(
        json.dumps(
            {
                "subs": a.subs,
                "messages": a.messages,
                "window": a.window,
                "reps": a.reps,
                "median": med,
                "sse_over_websocket_deliveries": round(
                    med["sse"]["deliveries_per_s"] / med["websocket"]["deliveries_per_s"], 3
                ),
                "runs": results,
            }
        )
    )


if __name__ == "__main__":
    main()
