"""Real ``livehub serve`` processes on one Redis, real SDK clients, a loopback TCP proxy
and a throwaway redis-server: the pieces the cluster tests are made of.

Everything listens on 127.0.0.1; every wait is bounded; every process is started in
its own session and killed with its group when the test ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from centrifuge import (  # type: ignore[import-untyped]
    Client,
    ClientEventHandler,
    ConnectingContext,
    DisconnectedContext,
    JoinContext,
    PublicationContext,
    ServerSubscribedContext,
    SubscribedContext,
    SubscribingContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

from tests.servers import ROOT, free_port

REDIS_URL = os.environ.get("LIVEHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379")
#: A database the other test suites leave alone (pub/sub is server-wide: the prefix separates).
REDIS_DB = 4
SECRET = "cluster-tests-secret-of-32-bytes-at-least"
API_KEY = "cluster-tests-key"
PRESENCE_TTL = 3.0

CONFIG: dict[str, Any] = {
    "client": {
        "token": {"hmac_secret_key": SECRET},
        "presence_update_interval": "1s",
        "channel_position_check_delay": "1s",
    },
    "http_api": {"key": API_KEY},
    "channel": {
        "namespaces": [
            {
                "name": "chat",
                "presence": True,
                "join_leave": True,
                "history_size": 100,
                "history_ttl": "300s",
                "force_recovery": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_presence_for_subscriber": True,
            },
            {
                "name": "stream",
                "history_size": 5000,
                "history_ttl": "600s",
                "force_recovery": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
            },
        ]
    },
}


def engine_url(prefix: str, base: str = "", db: int = REDIS_DB, **options: str) -> str:
    opts = {"prefix": prefix, "presence_ttl": f"{PRESENCE_TTL:g}s", **options}
    return f"{base or REDIS_URL}/{db}?" + "&".join(f"{k}={v}" for k, v in opts.items())


def token(user: str) -> str:
    return jwt.encode({"sub": user}, SECRET, algorithm="HS256")


async def until(check: Callable[[], Any], what: str, within: float = 10.0, every: float = 0.05) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after ``within`` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = check()
            if isinstance(last, Awaitable):
                last = await last
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s (last: {last!r})")
        await asyncio.sleep(every)


# -- livehub serve processes


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def alive(self) -> bool:
        return self.proc.poll() is None


class Cluster:
    """``livehub serve`` processes; ``close()`` kills whatever is left (process groups)."""

    def __init__(self, tmp: Path, prefix: str) -> None:
        self.tmp = tmp
        self.prefix = prefix
        self.nodes: list[Node] = []
        self.config = tmp / "config.json"
        self.config.write_text(json.dumps(CONFIG))
        self.http = httpx.AsyncClient(timeout=10.0, trust_env=False)

    def engine(self) -> str:
        return engine_url(self.prefix)

    async def start(self, count: int = 1, engine: str = "", workers: int = 1) -> list[Node]:
        started = [self._spawn(engine or self.engine(), workers) for _ in range(count)]
        for node in started:
            await until(lambda n=node: self._ready(n), f"node on port {node.port} answering", within=20)
        return started

    def _spawn(self, engine: str, workers: int) -> Node:
        port = free_port()
        log = self.tmp / f"node-{port}.log"
        cmd = [sys.executable, "-m", "livehub", "serve", "--config", str(self.config)]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
        cmd += ["--engine", engine, "--workers", str(workers)]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        node = Node(port, proc, log)
        self.nodes.append(node)
        return node

    async def _ready(self, node: Node) -> bool:
        if not node.alive():
            tail = node.log.read_text()[-3000:]
            raise RuntimeError(f"livehub serve exited with {node.proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            reply = await self.api(node, "info")
            return "result" in reply
        return False

    def kill(self, node: Node) -> None:
        """kill -9, as a crash would: no goodbye to clients or to the cluster."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(10)

    async def api(self, node: Node, method: str, **params: Any) -> dict[str, Any]:
        response = await self.http.post(
            f"http://127.0.0.1:{node.port}/api/{method}", json=params, headers={"X-API-Key": API_KEY}
        )
        response.raise_for_status()
        reply: dict[str, Any] = response.json()
        return reply

    async def close(self) -> None:
        await self.http.aclose()
        for node in self.nodes:
            if node.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGTERM)
        for node in self.nodes:
            try:
                node.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGKILL)
                node.proc.wait(5)
            with contextlib.suppress(ProcessLookupError):  # workers of a --workers parent
                os.killpg(node.proc.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(
            f"--- {n.log.name}\n{n.log.read_text()[-4000:]}" for n in self.nodes if n.log.exists()
        )


# -- SDK clients


@dataclass
class Watcher(SubscriptionEventHandler):  # type: ignore[misc]
    """Everything one subscription saw, in order."""

    pubs: list[tuple[int, Any]] = field(default_factory=list)
    subscribed: list[SubscribedContext] = field(default_factory=list)
    subscribing: list[int] = field(default_factory=list)
    unsubscribed: list[int] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # when each subscribed event came

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.pubs.append((ctx.pub.offset, ctx.pub.data))

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)
        self.times.append(time.monotonic())

    async def on_subscribing(self, ctx: SubscribingContext) -> None:
        self.subscribing.append(ctx.code)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribed.append(ctx.code)

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append(ctx.info.user)

    def offsets(self) -> list[int]:
        return [offset for offset, _ in self.pubs]


@dataclass
class ClientEvents(ClientEventHandler):  # type: ignore[misc]
    disconnects: list[int] = field(default_factory=list)
    connecting: list[int] = field(default_factory=list)
    server_subs: list[str] = field(default_factory=list)

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.connecting.append(ctx.code)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnects.append(ctx.code)

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        self.server_subs.append(ctx.channel)


@dataclass
class SDKClient:
    user: str
    client: Client
    events: ClientEvents
    subs: dict[str, Any] = field(default_factory=dict)
    watchers: dict[str, Watcher] = field(default_factory=dict)

    async def subscribe(self, channel: str) -> Watcher:
        watcher = Watcher()
        sub = self.client.new_subscription(channel, events=watcher)
        self.subs[channel], self.watchers[channel] = sub, watcher
        await sub.subscribe()
        await until(lambda: watcher.subscribed, f"{self.user} subscribed to {channel}")
        return watcher


async def connect(url: str, user: str) -> SDKClient:
    events = ClientEvents()
    client = Client(url, token=token(user), events=events, proxy=None, max_reconnect_delay=1.0)
    sdk = SDKClient(user, client, events)
    await client.connect()
    await until(lambda: client.state.value == "connected", f"{user} connected")
    return sdk


# -- a loopback TCP proxy: the SDK's one address, forwarding to the first node that answers


class Proxy:
    def __init__(self, upstreams: list[int]) -> None:
        self.upstreams = upstreams
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connected_to: list[int] = []
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for port in self.upstreams:
            with contextlib.suppress(OSError):
                upstream = await asyncio.open_connection("127.0.0.1", port)
                self.connected_to.append(port)
                break
        if upstream is None:
            writer.close()
            self._writers.discard(writer)
            return
        up_reader, up_writer = upstream
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()

        try:
            directions = [pipe(reader, up_writer), pipe(up_reader, writer)]
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(d) for d in directions], return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
        finally:
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in list(self._writers):
            w.close()


# -- a redis-server of the test's own, to restart at will


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("the cluster tests need redis-server (apt-get install redis-server)")
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._spawn()
        await until(self._answers, f"redis-server on port {self.port}", within=10)

    def _spawn(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def _answers(self) -> bool:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(b"PING\r\n")
            line = await asyncio.wait_for(reader.readline(), 1)
            writer.close()
            return line.startswith(b"+PONG")
        return False

    async def shutdown_nosave(self) -> None:
        """SHUTDOWN NOSAVE: everything it held is gone."""
        assert self.proc is not None
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(b"SHUTDOWN NOSAVE\r\n")
            await writer.drain()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
        proc = self.proc
        await until(lambda: proc.poll() is not None, "redis-server stopped", within=10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def unique_prefix() -> str:
    return "lhcluster" + secrets.token_hex(4)
