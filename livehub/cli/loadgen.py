"""``livehub bench``'s load generator, for a livehub running on this machine.

N subscribers on one channel, one publisher on the server HTTP API, and the time from publish to
receipt measured with a timestamp carried in each publication. It is a tool for users sizing a
deployment, not the project's benchmark: one Python process drives every connection, so past some
tens of thousands of deliveries per second the generator, not the server, is what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from livehub.cli.wsclient import ClientRefused, open_client


class BenchError(Exception):
    """The bench cannot run or had to stop; the message says why."""


@dataclass
class BenchOptions:
    ws_url: str
    api_url: str
    channel: str = "bench"
    connections: int = 1000
    rate: float = 100.0
    duration: float = 10.0
    window: int = 100
    payload: int = 0
    api_key: str = ""
    token: str = ""
    sub_token: str = ""
    connect_concurrency: int = 100
    connect_timeout: float = 60.0
    drain_timeout: float = 5.0


class Histogram:
    """Latencies in log buckets 1% wide (from 1 µs): percentiles within 1%, constant memory."""

    _BASE = math.log(1.01)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        us = max(seconds * 1e6, 1.0)
        bucket = int(math.log(us) / self._BASE)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.total += 1
        if seconds > self.max:
            self.max = seconds

    def percentile(self, p: float) -> float:
        """Seconds; the upper edge of the bucket holding the p-th percentile (capped at max)."""
        if not self.total:
            return 0.0
        rank = max(1, math.ceil(self.total * p / 100))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(math.exp((bucket + 1) * self._BASE) / 1e6, self.max)
        return self.max


@dataclass
class BenchResult:
    connections: int = 0
    connect_failures: int = 0
    first_connect_error: str = ""
    connect_seconds: float = 0.0
    published: int = 0
    publish_errors: int = 0
    first_publish_error: str = ""
    publish_seconds: float = 0.0
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    disconnected: int = 0
    stalled: bool = False
    latency: Histogram = field(default_factory=Histogram)

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.delivered)


class _Sub:
    __slots__ = ("alive", "highest", "received", "task", "ws")

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.alive = True
        self.highest = 0
        self.received = 0
        self.task: asyncio.Task[None] | None = None


class Bench:
    """One run: connect, publish for ``duration``, drain, close. ``on_progress`` sees the phases."""

    def __init__(
        self, opts: BenchOptions, on_progress: Callable[[str, float, BenchResult], None] | None = None
    ) -> None:
        self.opts = opts
        self.run_id = uuid.uuid4().hex[:12]
        self.result = BenchResult()
        self.subs: list[_Sub] = []
        self.live = 0
        self.need = 0  # the publisher waits until every live subscriber has seen this seq
        self.reached = 0
        self.last_ok = 0  # seq of the last publication the server accepted
        self.progress = asyncio.Event()
        self._report = on_progress or (lambda phase, done, result: None)
        self._pad = "x" * opts.payload

    # -- subscribers

    async def _open(self, sem: asyncio.Semaphore) -> None:
        o = self.opts
        async with sem:
            try:
                ws, _, _ = await open_client(
                    o.ws_url,
                    o.channel,
                    token=o.token,
                    sub_token=o.sub_token,
                    name="livehub-bench",
                    open_timeout=10.0,
                    loopback_only=True,
                )
            except (ClientRefused, OSError, TimeoutError) as exc:
                self.result.connect_failures += 1
                if not self.result.first_connect_error:
                    self.result.first_connect_error = str(exc) or type(exc).__name__
                return
        sub = _Sub(ws)
        self.subs.append(sub)
        self.live += 1
        sub.task = asyncio.create_task(self._read(sub))

    async def _read(self, sub: _Sub) -> None:
        ws, result, run_id = sub.ws, self.result, self.run_id
        try:
            async for frame in ws:
                now = time.perf_counter()
                text = frame if isinstance(frame, str) else frame.decode()
                for line in text.split("\n"):
                    if line == "{}":
                        await ws.send("{}")
                        continue
                    if run_id not in line:
                        continue  # replies, join/leave, publications of another run
                    pub = orjson.loads(line).get("push", {}).get("pub")
                    if not pub:
                        continue
                    seq = pub["data"]["seq"]
                    if seq <= sub.highest:
                        result.duplicates += 1
                        continue
                    result.latency.add(now - pub["data"]["t"])
                    sub.received += 1
                    previous, sub.highest = sub.highest, seq
                    if previous < self.need <= seq:
                        self.reached += 1
                        if self.reached >= self.live:
                            self.progress.set()
        except ConnectionClosed:
            pass
        finally:
            if not self._closing:
                result.disconnected += 1
                sub.alive = False
                self.live -= 1
                if sub.highest >= self.need:
                    self.reached -= 1
                if self.reached >= self.live:
                    self.progress.set()

    _closing = False

    def _set_need(self, need: int) -> None:
        self.need = need
        self.reached = sum(1 for s in self.subs if s.alive and s.highest >= need)
        if self.reached >= self.live:
            self.progress.set()
        else:
            self.progress.clear()

    # -- the run

    async def run(self) -> BenchResult:
        o, result = self.opts, self.result
        _raise_fd_limit(o.connections + 64)
        self._report("connect", 0, result)
        sem = asyncio.Semaphore(o.connect_concurrency)
        start = time.perf_counter()
        tasks = [asyncio.create_task(self._open(sem)) for _ in range(o.connections)]
        try:
            async with asyncio.timeout(o.connect_timeout):
                for done in asyncio.as_completed(tasks):
                    await done
                    self._report("connect", len(self.subs) + result.connect_failures, result)
        except TimeoutError:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            result.connect_failures = o.connections - len(self.subs)
            result.first_connect_error = result.first_connect_error or (
                f"not all connected within {o.connect_timeout:g}s"
            )
        result.connect_seconds = time.perf_counter() - start
        result.connections = len(self.subs)
        try:
            if not self.subs:
                raise BenchError(f"no subscriber could connect: {result.first_connect_error}")
            await self._publish()
            await self._drain()
        finally:
            await self._close()
        result.delivered = sum(s.received for s in self.subs)
        return result

    async def _publish(self) -> None:
        o, result = self.opts, self.result
        headers = {"X-API-Key": o.api_key} if o.api_key else {}
        # Headers and body are two writes: Nagle must not hold the body back until an ACK.
        transport = httpx.AsyncHTTPTransport(
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            limits=httpx.Limits(max_connections=1),
        )
        async with httpx.AsyncClient(
            base_url=o.api_url, headers=headers, timeout=10.0, trust_env=False, transport=transport
        ) as client:
            start = time.perf_counter()
            end = start + o.duration
            self._report("publish", 0, result)
            seq = 0
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                if o.rate > 0:
                    due = start + seq / o.rate
                    if due > now:
                        await asyncio.sleep(min(due, end) - now)
                        continue
                if seq + 1 - o.window > 0 and self.need != seq + 1 - o.window:
                    self._set_need(seq + 1 - o.window)
                if not self.progress.is_set() and self.need > 0:
                    try:
                        async with asyncio.timeout(max(0.0, min(end - now, 5.0))):
                            await self.progress.wait()
                    except TimeoutError:
                        if time.perf_counter() < end:
                            result.stalled = True
                            break
                    continue
                seq += 1
                data: dict[str, Any] = {"run": self.run_id, "seq": seq, "t": time.perf_counter()}
                if self._pad:
                    data["pad"] = self._pad
                await self._publish_one(client, data)
                self._report("publish", min(1.0, (time.perf_counter() - start) / o.duration), result)
            result.publish_seconds = time.perf_counter() - start
        self._report("publish", 1.0, result)

    async def _publish_one(self, client: httpx.AsyncClient, data: dict[str, Any]) -> None:
        result = self.result
        error = ""
        try:
            r = await client.post(
                "/publish", content=orjson.dumps({"channel": self.opts.channel, "data": data})
            )
            if r.status_code == 401:
                raise BenchError("the server rejected the API key (HTTP 401): pass --api-key or --config")
            if r.status_code != 200:
                error = f"HTTP {r.status_code}: {r.text[:200]}"
            else:
                reply = r.json()
                if "error" in reply:
                    error = f"error {reply['error'].get('code')}: {reply['error'].get('message')}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error:
            result.publish_errors += 1
            result.first_publish_error = result.first_publish_error or error
            if result.publish_errors >= 10 and not result.published:
                raise BenchError(f"publishing fails: {result.first_publish_error}")
            return
        result.published += 1
        result.expected += self.live
        self.last_ok = data["seq"]

    async def _drain(self) -> None:
        """Wait (bounded) until every live subscriber has the last publication."""
        if not self.last_ok:
            return
        self._set_need(self.last_ok)
        self._report("drain", 0, self.result)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.opts.drain_timeout):
                await self.progress.wait()
        self._report("drain", 1, self.result)

    async def _close(self) -> None:
        self._closing = True
        tasks = [s.task for s in self.subs if s.task is not None]

        async def close(sub: _Sub) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.ws.close(), 2)

        await asyncio.gather(*(close(s) for s in self.subs))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            raise BenchError(
                f"{needed - 64} connections need {needed} file descriptors; this process may open "
                f"{target} (ulimit -n)"
            )
