"""Conflation measured end to end: a publisher at 10x what a slow subscriber reads.

Starts ``livehub serve`` (namespace ``ticks`` conflates, namespace ``plain`` does not; both
keep history, so publications carry offsets; ``client.queue_max_size`` 64 KiB), then over
real sockets:

* a publisher (HTTP API ``batch``) writes ``--rate`` publications a second, spread over
  ``--keys`` keys, for ``--seconds``;
* a fast subscriber reads ``ticks:demo`` as fast as it can;
* a slow subscriber reads ``ticks:demo`` at ``--rate / 10`` publications' worth of bytes a
  second (it sleeps after each frame for the frame's share; its socket's receive buffer is
  small, so the server's socket really pushes back);
* a slow subscriber of ``plain:demo``, reading the same way, shows what happens without
  conflation.

Prints one JSON object: what each subscriber received, whether it was disconnected (and
with which code), the slow subscriber's convergence time (from the last publication until
it holds the latest value of every key), the offsets it saw (rising, never a loss), and the
server's resident memory before and after.

    .venv/bin/python bench/conflation.py [--rate 1000] [--keys 20] [--seconds 5] [--size 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
[client]
insecure = true
queue_max_size = 65536

[http_api]
insecure = true

[[channel.namespaces]]
name = "ticks"
conflate = true
history_size = 1000
history_ttl = "10m"

[[channel.namespaces]]
name = "plain"
history_size = 1000
history_ttl = "10m"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Subscriber:
    """One client connection subscribed to one channel; ``bytes_per_second`` 0 reads at once."""

    def __init__(self, name: str, channel: str, bytes_per_second: float) -> None:
        self.name = name
        self.channel = channel
        self.bytes_per_second = bytes_per_second
        self.received = 0
        self.latest: dict[str, int] = {}  # key -> the latest seq received
        self.offsets: list[int] = []
        self.close_code: int | None = None
        self.converged_at: float | None = None
        self.target: dict[str, int] | None = None  # set when the publisher is done
        self.ws: ClientConnection | None = None

    async def start(self, port: int) -> None:
        sock = socket.socket()
        if self.bytes_per_second:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # before connect: a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        self.ws = await connect(
            f"ws://127.0.0.1:{port}/connection/websocket",
            sock=sock,
            max_queue=1 if self.bytes_per_second else 1024,
            max_size=None,
        )
        await self.ws.send(json.dumps({"id": 1, "connect": {}}))
        await self.ws.send(json.dumps({"id": 2, "subscribe": {"channel": self.channel}}))
        while True:  # until the subscribe reply
            replies = [json.loads(line) for line in str(await self.ws.recv()).split("\n")]
            if any(r.get("id") == 2 for r in replies):
                assert all("error" not in r for r in replies), replies
                return

    async def read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                text = frame if isinstance(frame, str) else frame.decode()
                for line in text.split("\n"):
                    message = json.loads(line)
                    if not message:
                        await self.ws.send("{}")  # pong
                        continue
                    pub = message.get("push", {}).get("pub")
                    if pub is None:
                        continue
                    self.received += 1
                    self.offsets.append(pub.get("offset", 0))
                    self.latest[pub["data"]["k"]] = pub["data"]["seq"]
                self.check()
                if self.bytes_per_second:
                    await asyncio.sleep(len(text) / self.bytes_per_second)
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else 1006

    def check(self) -> None:
        if self.converged_at is None and self.target is not None and self.latest == self.target:
            self.converged_at = time.monotonic()


async def publish(
    port: int,
    rate: int,
    keys: int,
    seconds: float,
    size: int,
    channels: tuple[str, ...] = ("ticks:demo", "plain:demo"),
) -> tuple[dict[str, int], int, float]:
    """Publish ``rate`` a second to ``channels`` for ``seconds``; the last seq of each key,
    how many were published per channel, and when the last one was."""
    latest: dict[str, int] = {}
    seq = 0
    pad = "x" * max(0, size - 140)  # the rest of a publication on the wire is about 140 bytes
    tick = 0.02
    per_tick = max(1, round(rate * tick))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < seconds:
            commands = []
            for _ in range(per_tick):
                seq += 1
                key = f"k{seq % keys}"
                latest[key] = seq
                data = {"k": key, "seq": seq, "pad": pad}
                for channel in channels:
                    commands.append({"publish": {"channel": channel, "data": data, "key": key}})
            reply = (await http.post("/api/batch", json={"commands": commands})).json()
            assert all("error" not in r for r in reply["replies"]), reply
            n += 1
            await asyncio.sleep(max(0.0, started + n * tick - time.monotonic()))
    return latest, seq, time.monotonic()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def sample_queues(port: int, peak: dict[str, float], stop: asyncio.Event) -> None:
    """The largest ``livehub_node_queued_bytes`` seen, and the last ``livehub_node_conflated``."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        while not stop.is_set():
            text = (await http.get("/metrics")).text
            peak["queued_bytes"] = max(peak["queued_bytes"], metric(text, "livehub_node_queued_bytes"))
            peak["conflated"] = metric(text, "livehub_node_conflated")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


async def measure(port: int, pid: int, rate: int, keys: int, seconds: float, size: int) -> dict[str, Any]:
    slow_rate = rate / 10 * size
    fast = Subscriber("fast", "ticks:demo", 0)
    slow = Subscriber("slow", "ticks:demo", slow_rate)
    plain = Subscriber("slow_plain", "plain:demo", slow_rate)
    subscribers = (fast, slow, plain)
    for sub in subscribers:
        await sub.start(port)
    readers = [asyncio.create_task(sub.read()) for sub in subscribers]
    rss_before = rss_kib(pid)
    peak = {"queued_bytes": 0.0, "conflated": 0.0}
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_queues(port, peak, stop))
    latest, published, last_at = await publish(port, rate, keys, seconds, size)
    rss_after = rss_kib(pid)
    for sub in subscribers:
        sub.target = latest
        sub.check()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (fast.converged_at is None or slow.converged_at is None):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    stop.set()
    await sampler
    rss_end = rss_kib(pid)
    for sub in subscribers:
        if sub.ws is not None:
            await sub.ws.close()
    for task in readers:
        with contextlib.suppress(Exception):
            await task

    def report(sub: Subscriber) -> dict[str, Any]:
        rising = all(a < b for a, b in zip(sub.offsets, sub.offsets[1:], strict=False))
        return {
            "received": sub.received,
            "disconnected_with": sub.close_code if sub.close_code not in (None, 1000) else None,
            "converged_after_s": None if sub.converged_at is None else round(sub.converged_at - last_at, 3),
            "offsets_rising": rising,
        }

    return {
        "published_per_channel": published,
        "rate_per_s": rate,
        "keys": keys,
        "seconds": seconds,
        "publication_bytes": size,
        "slow_reads_bytes_per_s": round(slow_rate),
        "fast": report(fast),
        "slow": report(slow),
        "slow_without_conflation": report(plain),
        "server_rss_kib": {"before": rss_before, "after_publishing": rss_after, "converged": rss_end},
        "server_queued_bytes_peak": int(peak["queued_bytes"]),
        "server_conflated": int(peak["conflated"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="publications a second")
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=1000, help="bytes of one publication on the wire")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "conflation.toml"
        config.write_text(CONFIG)
        port = free_port()
        cmd = [sys.executable, "-m", "livehub", "serve", "--config", str(config), "--port", str(port)]
        proc = subprocess.Popen([*cmd, "--log-level", "warning"], cwd=ROOT)
        try:
            deadline = time.monotonic() + 15
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                    break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("livehub serve did not start")
                time.sleep(0.05)
            result = asyncio.run(measure(port, proc.pid, args.rate, args.keys, args.seconds, args.size))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
