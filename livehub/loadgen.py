"""A small client of the protocol for the command line: tokens, ``livehub sub`` and ``livehub bench``.

``bench`` is a load generator for a livehub running on this machine: N subscribers on one
channel, one publisher on the server HTTP API, and the time from publish to receipt measured
with a timestamp carried in each publication. It is a tool for users sizing a deployment, not
the project's benchmark: one Python process drives every connection, so past some tens of
thousands of deliveries per second the generator, not the server, is what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import resource
import socket
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
import orjson
from jwt.warnings import InsecureKeyLengthWarning
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from livehub.settings import Settings

# -- tokens


def mint_token(
    secret: str, user: str, *, channel: str = "", ttl: int = 0, info: Any = None, channels: Any = None
) -> str:
    """An HS256 JWT: a connection token, or with ``channel`` a subscription token; ttl 0 never expires."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user, "iat": now}
    if ttl > 0:
        claims["exp"] = now + ttl
    if channel:
        claims["channel"] = channel
    if info is not None:
        claims["info"] = info
    if channels:
        claims["channels"] = channels
    with warnings.catch_warnings():  # a short secret is the server's choice (the SDK tests use "secret")
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm="HS256")


def subscription_secret(settings: Settings) -> str:
    """The key subscription tokens are checked with: its own when enabled, else the connection one."""
    sub = settings.client.subscription_token
    if sub.enabled and sub.hmac_secret_key:
        return sub.hmac_secret_key
    return settings.client.token.hmac_secret_key


# -- URLs


def _loopback_for(address: str) -> str:
    """Where to reach a server listening on ``address`` from this machine."""
    if address in ("", "0.0.0.0", "localhost"):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address


def server_urls(settings: Settings) -> tuple[str, str]:
    """(WebSocket URL, HTTP API URL) of the server a config describes, as seen from this machine."""
    host = _loopback_for(settings.http_server.address)
    port = settings.http_server.port or 8000
    ws = f"ws://{host}:{port}{settings.websocket.handler_prefix}"
    api = f"http://{host}:{port}{settings.http_api.handler_prefix.rstrip('/')}"
    return ws, api


def api_url_for(ws_url: str, prefix: str = "/api") -> str:
    """The HTTP API next to a WebSocket endpoint: same host and port, path ``prefix``."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, prefix.rstrip("/"), "", ""))


def is_loopback(host: str) -> bool:
    """True if ``host`` is a loopback address or a name resolving only to loopback addresses."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


# -- the protocol, client side


class ProtocolError(Exception):
    """The server refused: an error reply, or the connection closed with a code."""


def close_reason(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "the connection was lost"
    return f"{rcvd.code} {rcvd.reason}".strip()


async def open_client(
    url: str,
    channel: str,
    *,
    token: str = "",
    sub_token: str = "",
    name: str = "livehub-cli",
    join_leave: bool = False,
    open_timeout: float = 10.0,
    loopback_only: bool = False,
) -> tuple[ClientConnection, dict[str, Any], list[dict[str, Any]]]:
    """Connect and subscribe to ``channel``; returns the socket, the connect result and any
    pushes that came with the replies. Raises ProtocolError (refused), OSError (unreachable)."""
    try:
        ws = await connect(
            url,
            open_timeout=open_timeout,
            ping_interval=None,  # the protocol has its own pings
            compression=None,
            max_size=None,
            max_queue=None if loopback_only else 64,
            proxy=None if loopback_only else True,
            user_agent_header="livehub-cli",
        )
    except (InvalidURI, InvalidHandshake) as exc:
        raise ProtocolError(str(exc)) from None
    connect_req: dict[str, Any] = {"name": name}
    if token:
        connect_req["token"] = token
    sub_req: dict[str, Any] = {"channel": channel}
    if sub_token:
        sub_req["token"] = sub_token
    if join_leave:
        sub_req["join_leave"] = True
    frame = orjson.dumps({"id": 1, "connect": connect_req}) + b"\n"
    frame += orjson.dumps({"id": 2, "subscribe": sub_req})
    pushes: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    try:
        await ws.send(frame.decode())
        pending = {1, 2}
        async with asyncio.timeout(open_timeout):
            while pending:
                for msg in decode_frame(await ws.recv()):
                    msg_id = msg.get("id")
                    if msg_id in pending:
                        pending.discard(msg_id)
                        error = msg.get("error")
                        if error:
                            what = "connect" if msg_id == 1 else f"subscribe to {channel!r}"
                            raise ProtocolError(f"{what}: error {error.get('code')}: {error.get('message')}")
                        if msg_id == 1:
                            result = msg.get("connect", {})
                    elif "push" in msg:
                        pushes.append(msg["push"])
                    elif not msg and result.get("pong"):
                        await ws.send("{}")
    except ConnectionClosed as exc:
        raise ProtocolError(f"the server closed the connection: {close_reason(exc)}") from None
    except TimeoutError:
        await ws.close()
        raise ProtocolError(f"no reply to connect/subscribe within {open_timeout:g}s") from None
    except BaseException:
        await ws.close()
        raise
    return ws, result, pushes


def decode_frame(frame: str | bytes) -> list[dict[str, Any]]:
    """The messages of one frame (newline-separated JSON); ``{}`` is a server ping."""
    if isinstance(frame, bytes):
        frame = frame.decode()
    return [orjson.loads(line) for line in frame.split("\n") if line.strip()]


# -- bench


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
            except (ProtocolError, OSError, TimeoutError) as exc:
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
