#!/usr/bin/env python3
"""bench/stream_fanout.py — fan-out to N subscribers over several transports (SSE vs WebSocket,
or JSON vs Protobuf over WebSocket), same server, same run.

    .venv/bin/python bench/stream_fanout.py --subs 1000 --messages 200 --reps 3
    .venv/bin/python bench/stream_fanout.py --transports websocket,websocket_protobuf

One ``livehub serve`` (bench/fanout.toml plus ``sse`` and ``http_stream`` enabled) pinned to CPU 0;
this process, pinned to CPU 1, opens N subscribers of one transport (SSE: ``GET
/connection/sse?cf_connect=<connect + subscribe>``; WebSocket: the two JSON commands in one text
frame; ``websocket_protobuf``: subprotocol ``centrifuge-protobuf``, the two commands as
length-delimited Protobuf in one binary frame), then one WebSocket (JSON) publisher sends
``--messages`` publications to channel ``bench`` in windows of ``--window`` (the next window once
every subscriber got the previous one). Deliveries are counted in the raw bytes each subscriber
receives with one ``bytes.count`` of a marker that every publication push holds once, whatever the
framing, and no ping or reply holds: ``"pub"`` in JSON, in Protobuf the bytes ``12 05 'bench' 22``
(Push.channel = "bench" then the tag of Push.pub) that precede each publication. So every
transport costs this process the same (one count over the bytes, a tail of the marker's length
less one kept between reads), and after the last window the count must equal N x messages
exactly (an overcount fails the run). Figures: deliveries/s and the bytes on the wire per
delivery; each repetition measures every transport (order alternating), and the medians of
``--reps`` are printed with each transport's ratio to the first as one JSON object.

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

from livehub.protocol import protobuf

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
# Protobuf: Command{id = 1, connect = 4 {}}, Command{id = 2, subscribe = 5 {channel = 1}}.
PB_COMMANDS = protobuf.delimited(b"\x08\x01\x22\x00") + protobuf.delimited(
    b"\x08\x02\x2a" + protobuf.delimited(b"\x0a" + protobuf.delimited(b"bench"))
)
# What each publication push holds once and nothing else does (see the docstring), and the bytes
# of the subscribe reply (JSON: "id":2; Protobuf: Reply.id = 2 then the tag of Reply.subscribe).
MARKS = {"json": b'"pub"', "protobuf": b"\x12\x05bench\x22"}
READY = {"json": b'"id":2', "protobuf": b"\x08\x02\x32"}
TRANSPORTS = ("websocket", "sse", "websocket_protobuf")
WAIT = 30.0


def encoding(transport: str) -> str:
    return "protobuf" if transport.endswith("_protobuf") else "json"


class Counter(asyncio.Protocol):
    """A subscriber: counts the publication pushes in whatever bytes arrive."""

    def __init__(self, run: Run, mark: bytes, ready: bytes) -> None:
        self.run = run
        self.mark = mark
        self.ready_mark = ready
        self.keep = len(mark) - 1
        self.tail = b""
        self.ready = asyncio.get_running_loop().create_future()
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.run.bytes += len(data)
        if not self.ready.done():
            self.buf += data
            if self.ready_mark in self.buf:
                self.ready.set_result(None)
            return
        chunk = self.tail + data
        self.run.count += chunk.count(self.mark)
        self.tail = chunk[-self.keep :]
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


def ws_frame(text: str | bytes) -> bytes:
    """A masked client frame, text or binary (mask 0: the payload unchanged)."""
    payload = text.encode() if isinstance(text, str) else text
    n = len(payload)
    head = bytes([0x81 if isinstance(text, str) else 0x82])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def ws_upgrade(subprotocol: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    offer = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    return (
        "GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    ).encode()


async def open_subscriber(port: int, transport: str, run: Run) -> asyncio.Transport:
    loop = asyncio.get_running_loop()
    enc = encoding(transport)
    t, p = await loop.create_connection(lambda: Counter(run, MARKS[enc], READY[enc]), "127.0.0.1", port)
    if transport == "sse":
        t.write(f"GET /connection/sse?cf_connect={quote(COMMANDS)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    elif transport == "websocket_protobuf":
        t.write(ws_upgrade("centrifuge-protobuf") + ws_frame(PB_COMMANDS))
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
            json.dumps({"id": cid + i, "publish": {"channel": "bench", "data": json.loads(payload)}})
            for i in range(k)
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
    await asyncio.sleep(0.2)  # anything late would be an overcount
    if run.count != subs * messages:
        raise RuntimeError(f"{transport}: counted {run.count} deliveries, expected {subs * messages}")
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--port", type=int, default=18766)
    parser.add_argument(
        "--transports", default="websocket,sse", help=f"comma-separated, of {', '.join(TRANSPORTS)}"
    )
    a = parser.parse_args()
    transports = a.transports.split(",")
    if (
        not transports
        or any(t not in TRANSPORTS for t in transports)
        or len(set(transports)) != len(transports)
    ):
        parser.error(f"--transports: distinct names among {', '.join(TRANSPORTS)}")
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
            results: dict[str, list[dict[str, Any]]] = {t: [] for t in transports}
            for rep in range(a.reps):
                order = transports if rep % 2 == 0 else transports[::-1]
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
                **{
                    f"{t}_over_{transports[0]}_deliveries": round(
                        med[t]["deliveries_per_s"] / med[transports[0]]["deliveries_per_s"], 3
                    )
                    for t in transports[1:]
                },
                "runs": results,
            }
        )
    )


if __name__ == "__main__":
    main()
