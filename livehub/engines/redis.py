"""The Redis engine: history, pub/sub between nodes and presence in Redis (>= 5; 7 with cluster).

``engine_from_url("redis://127.0.0.1:6379/0?prefix=app")`` builds a ``RedisBroker``
and a ``RedisPresenceManager``. ``rediss://`` uses TLS. Several URLs (comma-separated,
or a sequence) are independent *shards*: each channel lives on exactly one of them,
picked by a jump consistent hash of its name, so adding a shard moves only ~1/N of the
channels. Options in the query string (read from the first URL, removed before the URL
reaches redis-py): ``prefix`` (``livehub``), ``presence_ttl`` (60s), ``connect_timeout``
(1s), ``io_timeout`` (2s), ``ping_interval`` (5s), ``cluster`` (0).

``cluster=1`` (one URL: any node of a Redis Cluster) sends commands through redis-py's
cluster client (each script's keys share the channel's slot) and uses sharded pub/sub
(SPUBLISH, SSUBSCRIBE on the node owning the channel's slot, see ``ClusterPubSub``); a
slot that moves while subscribed is not followed. Tested on a local 3-node cluster.

Keys, per channel ``ch``; the ``{ch}`` hash tag keeps all of them in one Redis Cluster slot::

    {prefix}:meta:{ch}          HASH    e = epoch, s = top offset       (PEXPIRE meta TTL)
    {prefix}:stream:{ch}        STREAM  id = offset, x = expiry ms, d = publication blob
    {prefix}:result:{ch}:{key}  STRING  "offset:epoch" of an idempotent publish (PEXPIRE)
    {prefix}:presence:{ch}      HASH    client id -> info blob
    {prefix}:presence-exp:{ch}  ZSET    client id -> expiry ms
    {prefix}:pub:{ch}           the pub/sub channel (SPUBLISH with ``cluster=1``)
    {prefix}:map-meta:{ch}      HASH    a map channel's epoch, top offset, stream options
    {prefix}:map-state:{ch}     HASH    key -> "offset:blob" of its last change
    {prefix}:map-keys:{ch}      ZSET    the keys, score 0 (ZRANGEBYLEX pages them in key order)
    {prefix}:map-exp:{ch}       ZSET    key -> expiry ms (keys with a TTL)
    {prefix}:map-stream:{ch}    STREAM  id = offset, k = key, r = removed, x = expiry ms, d = blob

and one pub/sub channel for the whole engine, ``{prefix}:control`` (on the first shard),
which carries ``publish_control`` messages to every node.

Maps: ``lua/map_publish.lua`` and ``lua/map_remove.lua`` change the state, append to the
map stream and PUBLISH the change (``M...`` on the channel's pub/sub channel) in one script.
Expiring keys are found through ``{prefix}:map-expiring`` (ZSET channel -> earliest key
expiry, one per shard): every node sweeps it twice a second and removes what is due with
``map_remove.lua`` (idempotent, so nodes sweeping at once remove each key once).

Offsets and epochs: ``lua/publish.lua`` runs HINCRBY of the top, XADD and PUBLISH in one
script, so offsets grow by exactly one and nodes receive publications in offset order.
The epoch is created (random, by the caller) the first time a stream is touched; when
the meta HASH is lost — expired after ``history_meta_ttl`` without use, deleted, or the
server restarted without persistence — the next touch creates a new epoch and starts
over at 0, and clients recovering from the old epoch are told they cannot. TTLs are
measured with the Redis server's clock (``TIME``), so nodes' clocks do not matter.

Wire envelope on the pub/sub channel (the blob layout is in ``livehub.engines.wire``)::

    P<offset>:<epoch>:<use_delta 0|1>:<prev offset>:<prev blob length>:<prev blob><blob>
    J<info blob>      L<info blob>

Offset 0 and an empty epoch mean a publication without history. For ``use_delta`` with
history the script sends the previous publication; without history the receiving node
uses the last publication it received on the channel (``wire.DeltaBases``).

Presence: entries expire ``presence_ttl`` after they were last added, so the presence of
clients of a node that died disappears. The node must refresh its present clients well
within ``presence_ttl``: ``refresh_presence`` re-adds many entries in one pipelined round
trip per shard (the node does it every ``client.presence_update_interval``).

Every call fails with ``EngineUnavailable`` within about ``connect_timeout`` +
``io_timeout`` when Redis cannot be reached, instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from livehub.engines import options
from livehub.engines.backoff import Backoff
from livehub.engines.base import (
    BrokerEventHandler,
    EngineUnavailable,
    HistoryOptions,
    MapKeyLimit,
    MapOptions,
    MapPublish,
    MapStatePage,
    MapUpdate,
    PresenceEntry,
    PublishOptions,
)
from livehub.engines.redis_pubsub import ClusterPubSub, PubSub, PubSubConnection
from livehub.engines.wire import DeltaBases, decode_info, decode_publication, encode_info, encode_publication
from livehub.models import ClientInfo, PresenceStats, Publication, StreamPosition

if TYPE_CHECKING:
    from livehub.core.limits import Bucket

log = logging.getLogger("livehub.engines.redis")

OPTIONS = ("prefix", "presence_ttl", "connect_timeout", "io_timeout", "ping_interval", "cluster")
#: Connections to one Redis for commands (pub/sub has its own): commands beyond wait their turn.
POOL_SIZE = 100


@dataclass(frozen=True, slots=True)
class RedisConfig:
    urls: tuple[str, ...]
    prefix: str = "livehub"
    presence_ttl: float = 60.0
    connect_timeout: float = 1.0
    io_timeout: float = 2.0
    ping_interval: float = 5.0
    cluster: bool = False

    @classmethod
    def from_url(cls, url: str | Sequence[str]) -> RedisConfig:
        urls: list[str] = []
        opts: dict[str, str] = {}
        for i, raw in enumerate(options.split_urls(url)):
            if urlsplit(raw).scheme not in ("redis", "rediss"):
                raise ValueError(f"not a Redis URL: {raw!r}")
            rest, ours = options.pop_options(raw, OPTIONS)
            urls.append(rest)
            if i == 0:
                opts = ours
        config = cls(
            urls=tuple(urls),
            prefix=options.text(opts, "prefix", "livehub"),
            presence_ttl=options.duration(opts, "presence_ttl", 60.0),
            connect_timeout=options.duration(opts, "connect_timeout", 1.0),
            io_timeout=options.duration(opts, "io_timeout", 2.0),
            ping_interval=options.duration(opts, "ping_interval", 5.0),
            cluster=options.boolean(opts, "cluster", False),
        )
        if config.cluster and len(urls) > 1:
            raise ValueError("cluster=1 takes one URL (any node of the cluster), not shards")
        return config


def new_epoch() -> str:
    return secrets.token_urlsafe(6)


def ms(seconds: float) -> int:
    """Milliseconds for PEXPIRE/PX; a positive duration never rounds down to 0 (= forever)."""
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def shard_index(channel: str, shards: int) -> int:
    """Jump consistent hash (Lamping & Veach) of the FNV-1a 64 hash of the channel name."""
    if shards <= 1:
        return 0
    key = 0xCBF29CE484222325
    for byte in channel.encode():
        key = ((key ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    b, j = -1, 0
    while j < shards:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


class _Script:
    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("livehub.engines").joinpath(f"lua/{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


PUBLISH = _Script("publish")
HISTORY = _Script("history")
PRESENCE_ADD = _Script("presence_add")
PRESENCE_GET = _Script("presence_get")
PRESENCE_REMOVE = _Script("presence_remove")
MAP_PUBLISH = _Script("map_publish")
MAP_REMOVE = _Script("map_remove")
MAP_STATE = _Script("map_state")
MAP_STREAM = _Script("map_stream")
MAP_INDEX = _Script("map_index")
TAKE_TOKENS = _Script("take_tokens")

#: How often each node looks for map keys past their TTL (seconds), and how many maps at a time.
MAP_SWEEP_INTERVAL = 0.5
MAP_SWEEP_BATCH = 100


class _Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._pub = f"{prefix}:pub:{{".encode()

    def meta(self, ch: str) -> str:
        return f"{self.prefix}:meta:{{{ch}}}"

    def stream(self, ch: str) -> str:
        return f"{self.prefix}:stream:{{{ch}}}"

    def result(self, ch: str, key: str) -> str:
        return f"{self.prefix}:result:{{{ch}}}:{key}"

    def presence(self, ch: str) -> str:
        return f"{self.prefix}:presence:{{{ch}}}"

    def map(self, ch: str) -> tuple[str, str, str, str, str]:
        """meta, state, keys, expiry, stream of the map channel ``ch`` (map_*.lua)."""
        p = self.prefix
        return (
            f"{p}:map-meta:{{{ch}}}",
            f"{p}:map-state:{{{ch}}}",
            f"{p}:map-keys:{{{ch}}}",
            f"{p}:map-exp:{{{ch}}}",
            f"{p}:map-stream:{{{ch}}}",
        )

    @property
    def map_expiring(self) -> str:
        """ZSET map channel -> earliest key expiry (ms), one per shard: what the sweep visits."""
        return f"{self.prefix}:map-expiring"

    def tokens(self, user: str, bucket: str) -> str:
        """A user's command bucket (``{user}``: all of a user's buckets in one cluster slot)."""
        return f"{self.prefix}:tokens:{{{user}}}:{bucket}"

    def presence_exp(self, ch: str) -> str:
        return f"{self.prefix}:presence-exp:{{{ch}}}"

    @property
    def control(self) -> bytes:
        return f"{self.prefix}:control".encode()

    def pub(self, ch: str) -> bytes:
        return self._pub + ch.encode() + b"}"

    def channel_of(self, pub_key: bytes) -> str:
        return pub_key[len(self._pub) : -1].decode()


class RedisShard:
    """Commands to one Redis (or one cluster): fail fast, EVALSHA with EVAL fallback."""

    def __init__(self, url: str, config: RedisConfig) -> None:
        common: dict[str, Any] = {
            "socket_connect_timeout": config.connect_timeout,
            "socket_timeout": config.io_timeout,
            "retry": Retry(NoBackoff(), 0),
            # RESP2 everywhere: pub/sub messages are then plain replies on our connection
            # (redis-py >= 8 defaults to RESP3, where they go to a push handler instead)
            "protocol": 2,
        }
        parts = urlsplit(url)
        self.address = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
        self._deadline = config.connect_timeout + config.io_timeout
        # A command waits for a free connection (within its deadline) when all POOL_SIZE are
        # busy: a burst of subscribes (a reconnect storm) is queued, not failed with error 100.
        # (A cluster client keeps a pool per node of its own: no shared pool then.)
        self.pool: BlockingConnectionPool | None = None
        self.client: Redis | RedisCluster
        if config.cluster:
            self.client = RedisCluster.from_url(url, **common)
        else:
            self.pool = BlockingConnectionPool.from_url(
                url, max_connections=POOL_SIZE, timeout=self._deadline, **common
            )
            self.client = Redis(connection_pool=self.pool)
        self._io_timeout = config.io_timeout

    async def call(self, *args: Any) -> Any:
        try:
            async with asyncio.timeout(self._deadline):
                return await self.client.execute_command(*args)
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            raise EngineUnavailable(f"redis {self.address}: {exc!r}") from exc

    async def script(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.call("EVAL", script.source, len(keys), *keys, *args)

    async def script_many(
        self, script: _Script, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> None:
        """Run ``script`` once per ``(keys, args)``: pipelined (one round trip) on a single
        server, one call at a time on a cluster. Replies are not returned; errors raise."""
        if isinstance(self.client, RedisCluster):
            for keys, args in calls:
                await self.script(script, keys, args)
            return
        for attempt in range(2):
            try:
                async with asyncio.timeout(self._deadline + self._io_timeout):
                    pipe = self.client.pipeline(transaction=False)
                    for keys, args in calls:
                        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                    replies = await pipe.execute(raise_on_error=False)
                    if attempt == 0 and any(isinstance(r, NoScriptError) for r in replies):
                        await self.call("SCRIPT", "LOAD", script.source)
                        continue
            except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
                raise EngineUnavailable(f"redis {self.address}: {exc!r}") from exc
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return

    async def close(self) -> None:
        await self.client.aclose()
        if self.pool is not None:
            await self.pool.disconnect()


class RedisBroker:
    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self._keys = _Keys(config.prefix)
        self._shards = [RedisShard(url, config) for url in config.urls]
        node = secrets.token_hex(4)
        reply_timeout = config.connect_timeout + config.io_timeout
        self.pubsubs: list[PubSub] = []
        for i, shard in enumerate(self._shards):
            name = f"livehub-pubsub-{config.prefix}-{i}-{node}"
            if isinstance(shard.client, RedisCluster):
                self.pubsubs.append(
                    ClusterPubSub(
                        shard.client,
                        self._on_message,
                        name=name,
                        ping_interval=config.ping_interval,
                        reply_timeout=reply_timeout,
                    )
                )
            else:
                assert shard.pool is not None  # a single server's shard has its pool
                self.pubsubs.append(
                    PubSubConnection(
                        shard.pool,
                        self._on_message,
                        name=name,
                        ping_interval=config.ping_interval,
                        reply_timeout=reply_timeout,
                    )
                )
        self._publish_cmd = "spublish" if config.cluster else "publish"
        self._handler: BrokerEventHandler | None = None
        self._bases = DeltaBases()
        self._control_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def _shard(self, channel: str) -> int:
        return shard_index(channel, len(self._shards))

    async def start(self, handler: BrokerEventHandler) -> None:
        self._handler = handler
        await asyncio.gather(*(p.start() for p in self.pubsubs))
        try:
            await self.pubsubs[0].subscribe(self._keys.control)
        except EngineUnavailable:
            self._control_task = asyncio.create_task(self._subscribe_control(), name="livehub-redis-control")
        self._sweeper = asyncio.create_task(self._sweep_maps(), name="livehub-redis-map-expiry")

    async def _subscribe_control(self) -> None:
        """Keep trying until the control channel is subscribed (a plain connection also
        keeps it among the channels it subscribes again after every reconnect)."""
        backoff = Backoff(first=0.1)
        while True:
            await asyncio.sleep(backoff.next())
            try:
                await self.pubsubs[0].subscribe(self._keys.control)
                return
            except EngineUnavailable as exc:
                log.debug("redis: control channel not subscribed yet: %s", exc)

    async def close(self) -> None:
        self._handler = None
        if self._sweeper is not None:
            # redis-py's cluster client may swallow a cancellation that lands inside one of
            # its commands (it retries): the sweep also stops at its next turn, and close
            # does not wait for it longer than one command may take
            self._sweeper.cancel()
            await asyncio.wait({self._sweeper}, timeout=self.config.connect_timeout + self.config.io_timeout)
            self._sweeper = None
        if self._control_task is not None:
            self._control_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._control_task
            self._control_task = None
        await asyncio.gather(*(p.close() for p in self.pubsubs))
        await asyncio.gather(*(s.close() for s in self._shards))
        self._bases.clear()

    async def subscribe(self, channel: str) -> None:
        await self.pubsubs[self._shard(channel)].subscribe(self._keys.pub(channel))

    async def unsubscribe(self, channel: str) -> None:
        self._bases.forget(channel)
        await self.pubsubs[self._shard(channel)].unsubscribe(self._keys.pub(channel))

    async def publish(self, channel: str, data: bytes, opts: PublishOptions) -> tuple[StreamPosition, bool]:
        history = opts.history_size > 0 and opts.history_ttl > 0
        blob = encode_publication(
            Publication(data, 0, opts.info, opts.tags, int(time.time() * 1000), opts.key)
        )
        meta = self._keys.meta(channel)
        result = self._keys.result(channel, opts.idempotency_key) if opts.idempotency_key else meta
        reply = await self._shards[self._shard(channel)].script(
            PUBLISH,
            (meta, self._keys.stream(channel), result),
            (
                blob,
                opts.history_size if history else 0,
                ms(opts.history_ttl) if history else 0,
                ms(opts.history_meta_ttl),
                new_epoch(),
                self._keys.pub(channel),
                self._publish_cmd,
                ms(opts.idempotent_result_ttl) if opts.idempotency_key else 0,
                "1" if opts.use_delta else "0",
            ),
        )
        offset, epoch, duplicate = reply
        return StreamPosition(int(offset), _text(epoch)), bool(duplicate)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self._send(channel, b"J" + encode_info(info))

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self._send(channel, b"L" + encode_info(info))

    async def publish_control(self, data: bytes) -> None:
        await self._shards[0].call(self._publish_cmd, self._keys.control, data)

    async def _send(self, channel: str, message: bytes) -> None:
        await self._shards[self._shard(channel)].call(self._publish_cmd, self._keys.pub(channel), message)

    async def take_tokens(self, user: str, keys: Sequence[str], buckets: Sequence[Bucket]) -> bool:
        """``client.rate_limit.user_command`` across the cluster: one atomic script takes a
        token from each of the user's buckets, or none (``livehub.core.limits.TokenStore``)."""
        args: list[Any] = []
        for bucket in buckets:
            args += [bucket.rate, max(1, round(bucket.interval * 1000))]
        reply = await self._shards[self._shard(user)].script(
            TAKE_TOKENS, [self._keys.tokens(user, key) for key in keys], args
        )
        return bool(int(reply))

    async def history(self, channel: str, opts: HistoryOptions) -> tuple[list[Publication], StreamPosition]:
        reply = await self._shards[self._shard(channel)].script(
            HISTORY,
            (self._keys.meta(channel), self._keys.stream(channel)),
            (
                opts.limit,
                "" if opts.since is None else opts.since.offset,
                "1" if opts.reverse else "0",
                ms(opts.history_meta_ttl),
                new_epoch(),
            ),
        )
        top = StreamPosition(int(reply[0]), _text(reply[1]))
        pubs = [decode_publication(reply[i + 1], int(reply[i])) for i in range(2, len(reply), 2)]
        return pubs, top

    async def remove_history(self, channel: str) -> None:
        await self._shards[self._shard(channel)].call("DEL", self._keys.stream(channel))

    # -- maps: state, stream and pub/sub in one script per change (lua/map_*.lua)

    def _map_call(self, channel: str, script: _Script, args: Sequence[Any]) -> Any:
        return self._shards[self._shard(channel)].script(script, self._keys.map(channel), args)

    async def _index(self, channel: str, expiry: int) -> None:
        if expiry:
            await self._shards[self._shard(channel)].call("ZADD", self._keys.map_expiring, expiry, channel)

    async def map_publish(self, channel: str, key: str, opts: MapOptions, pub: MapPublish) -> MapUpdate:
        blob = encode_publication(Publication(pub.data, 0, pub.info, pub.tags, int(time.time() * 1000)))
        offset, epoch, suppressed, expiry = await self._map_call(
            channel,
            MAP_PUBLISH,
            (
                key,
                blob,
                pub.key_mode,
                "1" if pub.refresh_ttl_on_suppress else "0",
                ms(opts.key_ttl),
                opts.stream_size,
                ms(opts.stream_ttl),
                ms(opts.meta_ttl),
                new_epoch(),
                self._keys.pub(channel),
                self._publish_cmd,
                "1" if pub.use_delta else "0",
                opts.max_keys,
            ),
        )
        reason = _text(suppressed)
        if reason == "max_keys":
            raise MapKeyLimit(f"map {channel!r} holds {opts.max_keys} keys")
        await self._index(channel, int(expiry))
        return MapUpdate(StreamPosition(int(offset), _text(epoch)), reason)

    async def map_remove(self, channel: str, key: str, opts: MapOptions) -> MapUpdate:
        offset, epoch, suppressed, _ = await self._map_call(
            channel, MAP_REMOVE, ("key", key, new_epoch(), self._keys.pub(channel), self._publish_cmd)
        )
        return MapUpdate(StreamPosition(int(offset), _text(epoch)), _text(suppressed))

    async def map_state(
        self, channel: str, opts: MapOptions, cursor: str = "", limit: int = 0, key: str = ""
    ) -> MapStatePage:
        reply = await self._map_call(channel, MAP_STATE, (cursor, limit, key, new_epoch(), _read_ttl(opts)))
        entries = []
        for i in range(3, len(reply), 2):
            offset, blob = reply[i + 1].split(b":", 1)
            pub = decode_publication(blob, int(offset))
            entries.append(_keyed(pub, _text(reply[i])))
        return MapStatePage(entries, StreamPosition(int(reply[0]), _text(reply[1])), _text(reply[2]))

    async def map_stream(
        self, channel: str, opts: MapOptions, since: StreamPosition | None = None, limit: int = 0
    ) -> tuple[list[Publication], StreamPosition]:
        after = since.offset if since is not None else 0
        reply = await self._map_call(channel, MAP_STREAM, (limit, after, new_epoch(), _read_ttl(opts)))
        pubs = []
        for i in range(2, len(reply), 4):
            pub = decode_publication(reply[i + 3], int(reply[i]))
            pubs.append(_keyed(pub, _text(reply[i + 1]), reply[i + 2] == b"1"))
        return pubs, StreamPosition(int(reply[0]), _text(reply[1]))

    async def map_stats(self, channel: str, opts: MapOptions) -> int:
        page = await self.map_state(channel, opts)
        return len(page.entries)

    async def map_clear(self, channel: str) -> None:
        await self._shards[self._shard(channel)].call("DEL", *self._keys.map(channel))

    async def map_expire(self) -> int:
        """Remove the keys past their TTL in every map the index lists as due; how many."""
        removed = 0
        for shard in self._shards:
            seconds, micros = await shard.call("TIME")
            now = int(seconds) * 1000 + int(micros) // 1000
            due = await shard.call(
                "ZRANGEBYSCORE",
                self._keys.map_expiring,
                "-inf",
                now,
                "WITHSCORES",
                "LIMIT",
                0,
                MAP_SWEEP_BATCH,
            )
            for i in range(0, len(due), 2):
                channel, score = _text(due[i]), int(float(due[i + 1]))
                reply = await shard.script(
                    MAP_REMOVE,
                    self._keys.map(channel),
                    ("expired", "", new_epoch(), self._keys.pub(channel), self._publish_cmd),
                )
                removed += int(reply[2])
                await shard.script(MAP_INDEX, (self._keys.map_expiring,), (channel, score, int(reply[3])))
        return removed

    async def _sweep_maps(self) -> None:
        while self._handler is not None:
            await asyncio.sleep(MAP_SWEEP_INTERVAL)
            try:
                await self.map_expire()
            except EngineUnavailable as exc:
                log.debug("redis: map expiry sweep failed: %s", exc)
            except Exception:
                log.exception("redis: map expiry sweep failed")

    # -- messages from pub/sub; runs in the connection's reader task, must not block

    def _on_message(self, key: bytes, payload: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        if key == self._keys.control:
            handler.handle_control(payload)
            return
        channel = self._keys.channel_of(key)
        try:
            kind = payload[:1]
            if kind == b"P":
                self._on_publication(handler, channel, payload)
            elif kind == b"M":
                self._on_map_change(handler, channel, payload)
            elif kind == b"J":
                handler.handle_join(channel, decode_info(payload[1:]))
            elif kind == b"L":
                handler.handle_leave(channel, decode_info(payload[1:]))
            else:
                raise ValueError(f"unknown message kind {kind!r}")
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            log.warning("redis broker: dropped a malformed message on %r: %s", channel, exc)

    def _on_publication(self, handler: BrokerEventHandler, channel: str, payload: bytes) -> None:
        offset, epoch, delta, prev_offset, prev_len, rest = payload[1:].split(b":", 5)
        n = int(prev_len)
        pub = decode_publication(rest[n:], int(offset))
        use_delta = delta == b"1"
        prev: Publication | None
        if pub.offset:
            prev = decode_publication(rest[:n], int(prev_offset)) if use_delta and n else None
        else:
            prev = self._bases.advance(channel, pub, use_delta)
        handler.handle_publication(channel, pub, StreamPosition(pub.offset, epoch.decode()), prev)

    def _on_map_change(self, handler: BrokerEventHandler, channel: str, payload: bytes) -> None:
        offset, epoch, removed, key_len, prev_len, prev_offset, rest = payload[1:].split(b":", 6)
        k, n = int(key_len), int(prev_len)
        key = rest[:k].decode()
        body = decode_publication(rest[k + n :], int(offset))
        pub = _keyed(body, key, removed == b"1")
        prev = _keyed(decode_publication(rest[k : k + n], int(prev_offset)), key) if n else None
        handler.handle_publication(channel, pub, StreamPosition(pub.offset, epoch.decode()), prev)


#: How long the metadata (the epoch) of a map that was only read is kept, when its options
#: keep metadata forever: a client can name any channel, Redis keeps only what is written.
MAP_READ_META_TTL = 24 * 3600.0


def _read_ttl(opts: MapOptions) -> int:
    return ms(opts.meta_ttl or MAP_READ_META_TTL)


def _keyed(pub: Publication, key: str, removed: bool = False) -> Publication:
    """A map entry or change from its stored blob; a removal keeps only the tags."""
    if removed:
        return Publication(b"", pub.offset, None, pub.tags, pub.time, key, True)
    return Publication(pub.data, pub.offset, pub.info, pub.tags, pub.time, key)


class RedisPresenceManager:
    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self._keys = _Keys(config.prefix)
        self._shards = [RedisShard(url, config) for url in config.urls]

    def _run(self, channel: str, script: _Script, args: Sequence[Any]) -> Any:
        shard = self._shards[shard_index(channel, len(self._shards))]
        return shard.script(script, (self._keys.presence(channel), self._keys.presence_exp(channel)), args)

    async def add_presence(self, channel: str, client_id: str, info: ClientInfo) -> None:
        await self._run(channel, PRESENCE_ADD, (client_id, encode_info(info), ms(self.config.presence_ttl)))

    async def refresh_presence(self, entries: Sequence[PresenceEntry]) -> None:
        """One pipeline per shard (in chunks of 1000), all shards at once."""
        ttl = ms(self.config.presence_ttl)
        per_shard: list[list[tuple[Sequence[str], Sequence[Any]]]] = [[] for _ in self._shards]
        for channel, client_id, info in entries:
            keys = (self._keys.presence(channel), self._keys.presence_exp(channel))
            per_shard[shard_index(channel, len(self._shards))].append(
                (keys, (client_id, encode_info(info), ttl))
            )

        async def run(shard: RedisShard, calls: list[tuple[Sequence[str], Sequence[Any]]]) -> None:
            for i in range(0, len(calls), 1000):
                await shard.script_many(PRESENCE_ADD, calls[i : i + 1000])

        pairs = zip(self._shards, per_shard, strict=True)
        await asyncio.gather(*(run(shard, calls) for shard, calls in pairs if calls))

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        await self._run(channel, PRESENCE_REMOVE, (client_id,))

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        flat = await self._run(channel, PRESENCE_GET, ())
        return {_text(flat[i]): decode_info(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def presence_stats(self, channel: str) -> PresenceStats:
        clients = await self.presence(channel)
        return PresenceStats(len(clients), len({info.user for info in clients.values()}))

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self._shards))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def from_url(url: str | Sequence[str]) -> tuple[RedisBroker, RedisPresenceManager]:
    config = RedisConfig.from_url(url)
    return RedisBroker(config), RedisPresenceManager(config)
