"""One long-lived Redis pub/sub connection that keeps itself subscribed.

The broker hands it the channels it wants; the connection owns the wire: it connects,
(re)subscribes to everything wanted, reads messages and hands them to ``on_message``.
When the connection breaks — the server restarts, ``CLIENT KILL``, a network cut
noticed by an unanswered PING — it reconnects with exponential backoff and jitter and
subscribes again to every wanted channel, without the broker doing anything.

Publications sent while it was down are lost for this node: pub/sub is at most once.
Clients notice the gap by offsets on the next publication and recover from history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from redis.asyncio import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from livehub.engines.backoff import Backoff
from livehub.engines.base import EngineUnavailable

log = logging.getLogger("livehub.engines.redis")

#: Channels per SUBSCRIBE command when resubscribing after a reconnect.
BATCH = 512


class ConnectionSource(Protocol):
    """Where connections come from: a ConnectionPool, or a ClusterNode."""

    @property
    def connection_class(self) -> type[AbstractConnection]: ...

    @property
    def connection_kwargs(self) -> dict[str, Any]: ...


class PubSub(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def subscribe(self, key: bytes) -> None: ...
    async def unsubscribe(self, key: bytes) -> None: ...


class PubSubConnection:
    def __init__(
        self,
        pool: ConnectionSource,
        on_message: Callable[[bytes, bytes], None],
        *,
        name: str,
        sharded: bool = False,
        ping_interval: float = 5.0,
        reply_timeout: float = 2.0,
    ) -> None:
        self._pool = pool
        self._on_message = on_message
        self._name = name
        self._subscribe_cmd, self._unsubscribe_cmd = (
            ("SSUBSCRIBE", "SUNSUBSCRIBE") if sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
        )
        self._ping_interval = ping_interval
        self._reply_timeout = reply_timeout
        self._wanted: set[bytes] = set()
        self._waiting: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._unsubscribing: dict[bytes, int] = {}  # our SUNSUBSCRIBEs not yet answered
        self._conn: AbstractConnection | None = None
        self._lock = asyncio.Lock()  # one writer at a time on the socket
        self._up = asyncio.Event()
        self._tried = asyncio.Event()  # the first connection attempt is over, either way
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Times a connection was established; tests watch it to see a reconnect.
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def name(self) -> str:
        """The connection's CLIENT SETNAME, to find it in CLIENT LIST."""
        return self._name

    async def start(self) -> None:
        """Start the connection loop and wait for its first attempt; never fail: a Redis
        that is down at start is retried in the background like a lost connection."""
        self._task = asyncio.create_task(self._run(), name=f"livehub-redis-pubsub-{self._name}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._reply_timeout):
                await self._tried.wait()
        if not self._up.is_set():
            log.warning("redis pub/sub %s: not connected yet, retrying in the background", self._name)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def subscribe(self, key: bytes) -> None:
        """Subscribe and wait for Redis to confirm, so publications sent after we return
        reach us. The key stays wanted even if this fails: the next connection takes it."""
        self._wanted.add(key)
        conn = self._conn
        if conn is None:
            raise EngineUnavailable(f"redis pub/sub {self._name} is not connected")
        confirmed = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(confirmed)
        try:
            async with asyncio.timeout(self._reply_timeout):
                async with self._lock:
                    await conn.send_command(self._subscribe_cmd, key)
                await confirmed
        except (RedisError, OSError, TimeoutError) as exc:
            raise EngineUnavailable(f"redis pub/sub {self._name}: subscribe failed: {exc!r}") from exc
        finally:
            waiting = self._waiting.get(key)
            if waiting is not None and confirmed in waiting:
                waiting.remove(confirmed)

    async def unsubscribe(self, key: bytes) -> None:
        self._wanted.discard(key)
        conn = self._conn
        if conn is None:
            return  # the next connection will not subscribe it
        try:
            async with asyncio.timeout(self._reply_timeout), self._lock:
                await conn.send_command(self._unsubscribe_cmd, key)
                self._unsubscribing[key] = self._unsubscribing.get(key, 0) + 1
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("redis pub/sub %s: unsubscribe failed: %r", self._name, exc)

    def wants(self, key: bytes) -> bool:
        return key in self._wanted

    # -- the connection loop

    def _connection(self) -> AbstractConnection:
        kwargs = dict(self._pool.connection_kwargs)
        kwargs["client_name"] = self._name
        conn: AbstractConnection = self._pool.connection_class(**kwargs)
        return conn

    async def _run(self) -> None:
        backoff = Backoff()
        while not self._closed:
            conn = self._connection()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                async with self._lock:
                    self._conn = conn
                    wanted = list(self._wanted)
                    for i in range(0, len(wanted), BATCH):
                        await conn.send_command(self._subscribe_cmd, *wanted[i : i + BATCH])
                self.connects += 1
                self._up.set()
                self._tried.set()
                backoff.reset()
                if self.connects > 1:
                    log.info("redis pub/sub %s: reconnected, %d channels", self._name, len(wanted))
                await self._read(conn)
            except (RedisError, OSError, TimeoutError) as exc:
                if not self._closed:
                    log.warning("redis pub/sub %s: connection lost: %r", self._name, exc)
            finally:
                self._tried.set()
                self._conn = None
                self._unsubscribing.clear()
                self._up.clear()
                self._fail_waiting()
                await conn.disconnect()
            if not self._closed:
                await asyncio.sleep(backoff.next())

    async def _read(self, conn: AbstractConnection) -> None:
        pinged = False
        while True:
            reply: Any = await conn.read_response(timeout=self._ping_interval)
            if reply is None:  # quiet for a while: is the server still there?
                if pinged:
                    raise TimeoutError("no reply to PING")
                async with self._lock:
                    await conn.send_command("PING")
                pinged = True
                continue
            pinged = False
            if not isinstance(reply, list) or len(reply) < 3:
                continue  # PONG outside subscribed mode
            kind = reply[0]
            if kind in (b"message", b"smessage"):
                if reply[1] in self._wanted:
                    self._on_message(reply[1], reply[2])
            elif kind in (b"subscribe", b"ssubscribe"):
                waiting = self._waiting.get(reply[1])
                if waiting:
                    future = waiting.popleft()
                    if not future.done():
                        future.set_result(None)
                if not waiting:
                    self._waiting.pop(reply[1], None)
            elif kind == b"sunsubscribe":
                pending = self._unsubscribing.pop(reply[1], 0)
                if pending > 1:
                    self._unsubscribing[reply[1]] = pending - 1
                if not pending and reply[1] in self._wanted:
                    # not our SUNSUBSCRIBE: Redis Cluster moved the channel's slot away
                    raise RedisError(f"sharded channel {reply[1]!r} moved to another node")

    def _fail_waiting(self) -> None:
        for waiting in self._waiting.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(EngineUnavailable(f"redis pub/sub {self._name}: connection lost"))
        self._waiting.clear()


class ClusterPubSub:
    """Sharded pub/sub on Redis Cluster (``cluster=1``): SSUBSCRIBE must reach the node
    that owns the channel's slot, so there is one PubSubConnection per such node, and a
    channel is routed to its node when it is subscribed.

    Not followed: a slot that moves while subscribed (resharding, failover). Redis then
    sends ``sunsubscribe``; the connection reconnects and keeps failing on that channel
    until the node unsubscribes and subscribes it again. Untested beyond a local cluster.
    """

    def __init__(
        self,
        cluster: RedisCluster,
        on_message: Callable[[bytes, bytes], None],
        *,
        name: str,
        ping_interval: float,
        reply_timeout: float,
    ) -> None:
        self._cluster = cluster
        self._on_message = on_message
        self._name = name
        self._ping_interval = ping_interval
        self._reply_timeout = reply_timeout
        self._nodes: dict[str, PubSubConnection] = {}
        self._home: dict[bytes, PubSubConnection] = {}

    async def start(self) -> None:
        try:
            async with asyncio.timeout(self._reply_timeout):
                await self._cluster.initialize()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("redis cluster %s: not reachable yet: %r", self._name, exc)

    async def close(self) -> None:
        await asyncio.gather(*(conn.close() for conn in self._nodes.values()))
        self._nodes.clear()
        self._home.clear()

    async def subscribe(self, key: bytes) -> None:
        try:
            async with asyncio.timeout(self._reply_timeout):
                await self._cluster.initialize()
            node = self._cluster.get_node_from_key(key.decode())
        except (RedisError, OSError, TimeoutError) as exc:
            raise EngineUnavailable(f"redis cluster {self._name}: {exc!r}") from exc
        if node is None:
            raise EngineUnavailable(f"redis cluster {self._name}: no node owns {key!r}")
        conn = self._nodes.get(node.name)
        if conn is None:
            conn = PubSubConnection(
                node,
                self._on_message,
                name=f"{self._name}-{node.port}",
                sharded=True,
                ping_interval=self._ping_interval,
                reply_timeout=self._reply_timeout,
            )
            self._nodes[node.name] = conn
            await conn.start()
        self._home[key] = conn
        await conn.subscribe(key)

    async def unsubscribe(self, key: bytes) -> None:
        conn = self._home.pop(key, None)
        if conn is not None:
            await conn.unsubscribe(key)
