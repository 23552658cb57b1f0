"""The NATS broker: pub/sub between nodes over NATS, history and recovery over JetStream.

``engine_from_url("nats://127.0.0.1:4222?prefix=app")`` builds a ``NatsBroker`` and a
``NatsPresenceManager`` (cluster-wide presence, below) sharing one connection. Several
URLs are servers of one NATS cluster. Options: ``prefix`` (``livehub``; letters, digits,
``-``, ``_``), ``connect_timeout`` (1s), ``io_timeout`` (2s), ``storage`` (``file`` or
``memory``), ``history_size`` (1000: the most publications JetStream keeps per channel),
``history_ttl`` (24h: the longest it keeps them), ``meta_ttl`` (30d) and
``idempotency_ttl`` (1h): bounds of the stores below; each publication's own
``history_size``/``history_ttl`` are applied within them; ``presence_ttl`` (60s).

Subjects: a channel name is escaped into one subject token (bytes outside
``[A-Za-z0-9_-]`` become ``=XX``, the empty name ``=``), so ``.``, ``*``, ``>`` and
spaces in channel names are safe. Per channel ``ch``::

    {prefix}.h.{ch}     history subject, captured by stream {prefix}_history
    {prefix}.p.{ch}     what nodes subscribe to
    {prefix}.control    control messages (``publish_control``), to every node

Offsets and epochs. JetStream's sequence is global to a stream, so it is not the
offset. The offset of a publication is in its ``Lh-Off`` header, and each channel's
stream top lives in the KV bucket ``{prefix}_meta`` (key = escaped channel, value
``{"e": epoch, "t": top offset, "s": JetStream sequence of the last message, "f":
lowest offset still in history, "x": meta expiry}``). Publishing offset ``t+1`` sends
the message with ``Nats-Expected-Last-Subject-Sequence: s``: JetStream stores it only if
no other publication of the channel got in since the meta was read, so two nodes can
never both store the same offset, and the channel's messages are stored in offset
order. The loser re-reads (repairing the meta from the stream's last message if the
winner has not updated it yet) and tries again with the next offset. Nodes do not
subscribe to the history subject — rejected attempts are seen there too — but to
``{prefix}.p.*``, where the stream *republishes* what it stored, in stored order: so
every node receives a channel's publications in offset order. Publications without
history and join/leave go to ``{prefix}.p.{ch}`` directly.

The epoch is random, made when a channel's meta is created; when the meta is lost
(expired after ``history_meta_ttl`` without use, the bucket or the server's storage
lost) the next touch makes a new epoch starting at 0, and messages left from the old
epoch are dropped. History TTLs compare a publication's expiry (publisher's clock) with
the reader's clock. Idempotent publishes are checked in KV bucket ``{prefix}_idem``
before publishing and recorded after, so two *concurrent* publishes with the same key
can both go through (the Redis engine is atomic there).

``use_delta``: the receiving node uses the last publication it received on the channel
as the delta base (``wire.DeltaBases``); JetStream's ordered republish makes that the
previous offset unless a message was lost.

Presence lives in the KV bucket ``{prefix}_presence``: key ``{ch}.{client}`` (both
escaped) -> info blob. The bucket keeps one revision per key and its ``max_age`` is
``presence_ttl``, so each entry expires ``presence_ttl`` after it was last written: that
is a per-key TTL on servers older than 2.11 (which has no per-message TTL), measured
with the NATS server's clock. A live node re-puts its clients' entries every
``client.presence_update_interval`` (``refresh_presence``); a dead node's entries expire.
The bucket has one TTL for every node: a node started with another ``presence_ttl``
changes it for all (the last one started wins). ``presence`` reads the channel's keys
with a short-lived pull consumer (last value per key; the server drops it about
``io_timeout`` after the read): a few round trips whatever the count.

Every call fails with ``EngineUnavailable`` at once while NATS is disconnected, and
within ``io_timeout`` if it does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RePublish,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from livehub.engines import options
from livehub.engines.backoff import Backoff
from livehub.engines.base import (
    BrokerEventHandler,
    EngineUnavailable,
    HistoryOptions,
    NoMaps,
    PresenceEntry,
    PublishOptions,
)
from livehub.engines.wire import DeltaBases, decode_info, decode_publication, encode_info, encode_publication
from livehub.models import ClientInfo, PresenceStats, Publication, StreamPosition

log = logging.getLogger("livehub.engines.nats")

OPTIONS = (
    "prefix",
    "connect_timeout",
    "io_timeout",
    "storage",
    "history_size",
    "history_ttl",
    "meta_ttl",
    "idempotency_ttl",
    "presence_ttl",
)
H_OFFSET, H_EPOCH, H_EXPIRES, H_SIZE, H_DELTA, H_KIND = (
    "Lh-Off",
    "Lh-Ep",
    "Lh-Exp",
    "Lh-Size",
    "Lh-Delta",
    "Lh-Kind",
)
#: The header of a KV delete or purge marker.
KV_OPERATION = "KV-Operation"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = 10071
#: Publish attempts of one channel before giving up under contention.
ATTEMPTS = 50
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def escape(channel: str) -> str:
    """A channel name as one subject token and KV key; injective."""
    if not channel:
        return "="
    return "".join(chr(b) if b in _SAFE else f"={b:02X}" for b in channel.encode())


def unescape(token: str) -> str:
    """The inverse of ``escape``."""
    if token == "=":
        return ""
    out, i, raw = bytearray(), 0, token.encode()
    while i < len(raw):
        if raw[i] == ord("="):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode()


def new_epoch() -> str:
    return secrets.token_urlsafe(6)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class NatsConfig:
    servers: tuple[str, ...]
    prefix: str = "livehub"
    connect_timeout: float = 1.0
    io_timeout: float = 2.0
    storage: str = "file"
    history_size: int = 1000
    history_ttl: float = 86400.0
    meta_ttl: float = 30 * 86400.0
    idempotency_ttl: float = 3600.0
    presence_ttl: float = 60.0

    @classmethod
    def from_url(cls, url: str | Sequence[str]) -> NatsConfig:
        servers: list[str] = []
        opts: dict[str, str] = {}
        for i, raw in enumerate(options.split_urls(url)):
            rest, ours = options.pop_options(raw, OPTIONS)
            servers.append(rest.rstrip("?"))
            if i == 0:
                opts = ours
        storage = opts.get("storage", "file")
        if storage not in ("file", "memory"):
            raise ValueError(f"engine option storage={storage!r}: expected file or memory")
        return cls(
            servers=tuple(servers),
            prefix=options.text(opts, "prefix", "livehub", r"^[A-Za-z0-9_-]+$"),
            connect_timeout=options.duration(opts, "connect_timeout", 1.0),
            io_timeout=options.duration(opts, "io_timeout", 2.0),
            storage=storage,
            history_size=options.integer(opts, "history_size", 1000),
            history_ttl=options.duration(opts, "history_ttl", 86400.0),
            meta_ttl=options.duration(opts, "meta_ttl", 30 * 86400.0),
            idempotency_ttl=options.duration(opts, "idempotency_ttl", 3600.0),
            presence_ttl=options.duration(opts, "presence_ttl", 60.0),
        )

    @property
    def stream(self) -> str:
        return f"{self.prefix}_history"

    @property
    def meta_bucket(self) -> str:
        return f"{self.prefix}_meta"

    @property
    def idem_bucket(self) -> str:
        return f"{self.prefix}_idem"

    @property
    def presence_bucket(self) -> str:
        return f"{self.prefix}_presence"


@dataclass(frozen=True, slots=True)
class Meta:
    """A channel's stream top, as kept in the meta bucket."""

    epoch: str
    top: int = 0
    seq: int = 0  # JetStream sequence of the channel's last stored message, 0 if none
    floor: int = 1  # lowest offset the history still holds (history_size trimming)
    expires: int = 0  # unix ms; 0 = never

    def encode(self) -> bytes:
        return json.dumps(
            {"e": self.epoch, "t": self.top, "s": self.seq, "f": self.floor, "x": self.expires}
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Meta:
        d = json.loads(raw)
        return cls(str(d["e"]), int(d["t"]), int(d["s"]), int(d["f"]), int(d["x"]))


def _expiry(ttl: float) -> int:
    return now_ms() + round(ttl * 1000) if ttl > 0 else 0


class NatsBroker(NoMaps):
    engine_name = "the NATS engine"

    def __init__(self, config: NatsConfig) -> None:
        self.config = config
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._meta: KeyValue | None = None
        self._idem: KeyValue | None = None
        #: The presence bucket, read by ``NatsPresenceManager`` over this connection.
        self.presence_kv: KeyValue | None = None
        self._handler: BrokerEventHandler | None = None
        self._wanted: set[str] = set()
        self._subs: dict[str, Subscription] = {}
        self._lock = asyncio.Lock()
        self._bases = DeltaBases()
        self._ready = asyncio.Event()
        self._tried = asyncio.Event()  # connected and set up, or the first attempt failed
        self._task: asyncio.Task[None] | None = None
        self._flush_timeout = max(1, math.ceil(config.io_timeout))  # nats-py wants whole seconds

    # -- lifecycle

    async def start(self, handler: BrokerEventHandler) -> None:
        """Connect in the background (retrying with backoff); wait briefly for the first
        connection. Calls made while NATS is unreachable raise EngineUnavailable."""
        self._handler = handler
        self._task = asyncio.create_task(self._connect_loop(), name="livehub-nats-connect")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.connect_timeout + self.config.io_timeout):
                await self._tried.wait()
        if not self._ready.is_set():
            log.warning("nats %s: not connected yet, retrying in the background", self.config.servers)

    async def _connect_loop(self) -> None:
        backoff = Backoff(first=0.1)
        while True:
            try:
                nc = await nats.connect(
                    servers=list(self.config.servers),
                    name=f"livehub-{self.config.prefix}",
                    connect_timeout=self.config.connect_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                try:
                    await self._setup(nc)
                except BaseException:
                    await nc.close()
                    raise
                return
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                self._tried.set()
                log.warning("nats %s: cannot connect: %r", self.config.servers, exc)
                await asyncio.sleep(backoff.next())

    async def _setup(self, nc: Client) -> None:
        """Make sure the stream and buckets exist, then subscribe to the wanted channels."""
        cfg = self.config
        js = nc.jetstream(timeout=cfg.io_timeout)
        storage = StorageType.MEMORY if cfg.storage == "memory" else StorageType.FILE
        try:
            await js.stream_info(cfg.stream)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=cfg.stream,
                    subjects=[f"{cfg.prefix}.h.>"],
                    storage=storage,
                    max_msgs_per_subject=cfg.history_size,
                    max_age=cfg.history_ttl,
                    allow_direct=True,
                    republish=RePublish(src=f"{cfg.prefix}.h.>", dest=f"{cfg.prefix}.p.>"),
                )
            )
        self._meta = await _bucket(js, cfg.meta_bucket, cfg.meta_ttl, storage)
        self._idem = await _bucket(js, cfg.idem_bucket, cfg.idempotency_ttl, storage)
        self.presence_kv = await _presence_bucket(js, cfg.presence_bucket, cfg.presence_ttl, storage)
        await nc.subscribe(self._control_subject, cb=self._on_control)  # nats-py keeps it over reconnects
        self._nc, self._js = nc, js
        async with self._lock:
            for channel in self._wanted:
                await self._subscribe(nc, channel)
        await nc.flush(timeout=self._flush_timeout)
        self._ready.set()
        self._tried.set()

    async def close(self) -> None:
        self._handler = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None:
            await self._nc.close()
        self._nc = self._js = self._meta = self._idem = self.presence_kv = None
        self._subs.clear()
        self._bases.clear()

    async def _on_error(self, exc: Exception) -> None:
        self._tried.set()
        log.warning("nats: %r", exc)

    async def _on_disconnected(self) -> None:
        log.warning("nats: disconnected, reconnecting")

    async def _on_reconnected(self) -> None:
        # nats-py resubscribes by itself; publications sent meanwhile are lost for this
        # node and are recovered from history by clients
        log.info("nats: reconnected")

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[tuple[Client, JetStreamContext]]:
        """Fail fast while disconnected; turn client errors into EngineUnavailable."""
        nc, js = self._nc, self._js
        if nc is None or js is None or not nc.is_connected:
            raise EngineUnavailable(f"nats {','.join(self.config.servers)}: not connected")
        try:
            async with asyncio.timeout(self.config.io_timeout * 2):
                yield nc, js
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise EngineUnavailable(f"nats {','.join(self.config.servers)}: {exc!r}") from exc

    # -- subscriptions

    def _subject(self, kind: str, channel: str) -> str:
        return f"{self.config.prefix}.{kind}.{escape(channel)}"

    @property
    def _control_subject(self) -> str:
        return f"{self.config.prefix}.control"

    async def _on_control(self, msg: Msg) -> None:
        handler = self._handler
        if handler is not None:
            handler.handle_control(msg.data)

    async def publish_control(self, data: bytes) -> None:
        async with self.guard() as (nc, _):
            await nc.publish(self._control_subject, data)

    async def _subscribe(self, nc: Client, channel: str) -> None:
        if channel in self._subs:
            return

        async def deliver(msg: Msg) -> None:
            if channel in self._wanted:
                self._on_message(channel, msg)

        self._subs[channel] = await nc.subscribe(self._subject("p", channel), cb=deliver)

    async def subscribe(self, channel: str) -> None:
        self._wanted.add(channel)
        async with self.guard() as (nc, _), self._lock:
            await self._subscribe(nc, channel)
            await nc.flush(timeout=self._flush_timeout)  # the server has our SUB now

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._bases.forget(channel)
        async with self._lock:
            sub = self._subs.pop(channel, None)
            if sub is not None:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()

    def _on_message(self, channel: str, msg: Msg) -> None:
        handler = self._handler
        if handler is None:
            return
        headers = msg.headers or {}
        try:
            kind = headers.get(H_KIND, "p")
            if kind == "j":
                handler.handle_join(channel, decode_info(msg.data))
            elif kind == "l":
                handler.handle_leave(channel, decode_info(msg.data))
            else:
                pub = decode_publication(msg.data, int(headers.get(H_OFFSET, "0")))
                prev = self._bases.advance(channel, pub, headers.get(H_DELTA) == "1")
                sp = StreamPosition(pub.offset, headers.get(H_EPOCH, ""))
                handler.handle_publication(channel, pub, sp, prev)
        except (ValueError, KeyError) as exc:
            log.warning("nats broker: dropped a malformed message on %r: %s", channel, exc)

    # -- publishing

    async def publish(self, channel: str, data: bytes, opts: PublishOptions) -> tuple[StreamPosition, bool]:
        async with self.guard() as (nc, js):
            idem_key = f"{escape(channel)}.{escape(opts.idempotency_key)}" if opts.idempotency_key else ""
            if idem_key:
                cached = await self._idempotent_result(idem_key)
                if cached is not None:
                    return cached, True
            blob = encode_publication(Publication(data, 0, opts.info, opts.tags, now_ms(), opts.key))
            delta = "1" if opts.use_delta else "0"
            if opts.history_size > 0 and opts.history_ttl > 0:
                sp = await self._append(js, channel, blob, delta, opts)
            else:
                await nc.publish(self._subject("p", channel), blob, headers={H_DELTA: delta})
                sp = StreamPosition(0, "")
            if idem_key:
                assert self._idem is not None
                expires = _expiry(opts.idempotent_result_ttl)
                await self._idem.put(
                    idem_key, json.dumps({"o": sp.offset, "e": sp.epoch, "x": expires}).encode()
                )
            return sp, False

    async def _idempotent_result(self, key: str) -> StreamPosition | None:
        assert self._idem is not None
        try:
            entry = await self._idem.get(key)
        except NotFoundError:
            return None
        if entry.value is None:
            return None
        d = json.loads(entry.value)
        if d["x"] and d["x"] <= now_ms():
            return None
        return StreamPosition(int(d["o"]), str(d["e"]))

    async def _append(
        self, js: JetStreamContext, channel: str, blob: bytes, delta: str, opts: PublishOptions
    ) -> StreamPosition:
        key, subject = escape(channel), self._subject("h", channel)
        for _ in range(ATTEMPTS):
            meta, revision = await self._load_meta(key, opts.history_meta_ttl)
            offset = meta.top + 1
            headers = {
                H_OFFSET: str(offset),
                H_EPOCH: meta.epoch,
                H_EXPIRES: str(_expiry(opts.history_ttl)),
                H_SIZE: str(opts.history_size),
                H_DELTA: delta,
                EXPECTED_LAST_SUBJECT_SEQ: str(meta.seq),
            }
            try:
                ack = await js.publish(subject, blob, headers=headers)
            except APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                await self._repair(js, key, subject, meta, revision)
                continue
            stored = Meta(
                meta.epoch,
                offset,
                ack.seq,
                max(meta.floor, offset - opts.history_size + 1),
                _expiry(opts.history_meta_ttl),
            )
            await self._cas(key, stored, revision)
            return StreamPosition(offset, meta.epoch)
        raise EngineUnavailable(
            f"nats: gave up publishing to {channel!r} after {ATTEMPTS} conflicting attempts"
        )

    async def _repair(self, js: JetStreamContext, key: str, subject: str, meta: Meta, revision: int) -> None:
        """Another publish got in first (or the stream lost messages): bring the meta in
        line with the channel's last stored message, so the next attempt can win."""
        try:
            last = await js.get_last_msg(self.config.stream, subject, direct=True)
        except NotFoundError:  # every message expired or was purged; the top stays
            await self._cas(key, replace(meta, seq=0), revision)
            return
        headers = last.headers or {}
        if headers.get(H_EPOCH) != meta.epoch:  # left from a lost epoch: drop them
            await js.purge_stream(self.config.stream, seq=(last.seq or 0) + 1, subject=subject)
            await self._cas(key, replace(meta, seq=0), revision)
            return
        offset = int(headers.get(H_OFFSET, "0"))
        size = int(headers.get(H_SIZE, "0")) or self.config.history_size
        top = max(meta.top, offset)
        await self._cas(
            key, replace(meta, top=top, seq=last.seq or 0, floor=max(meta.floor, top - size + 1)), revision
        )

    async def _cas(self, key: str, meta: Meta, revision: int) -> None:
        """Write the meta unless someone else wrote it since we read it (they knew more)."""
        assert self._meta is not None
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self._meta.update(key, meta.encode(), last=revision)

    async def _load_meta(self, key: str, meta_ttl: float) -> tuple[Meta, int]:
        """The channel's meta and its KV revision; a missing or expired one becomes a new epoch."""
        assert self._meta is not None
        while True:
            try:
                entry = await self._meta.get(key)
            except NotFoundError:
                entry = None
            now = now_ms()
            if entry is not None and entry.value:
                meta = Meta.decode(entry.value)
                if not meta.expires or meta.expires > now:
                    return meta, entry.revision or 0
            fresh = Meta(new_epoch(), expires=_expiry(meta_ttl))
            try:
                if entry is None or entry.revision is None:
                    revision = await self._meta.create(key, fresh.encode())
                else:
                    revision = await self._meta.update(key, fresh.encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # another node made the new epoch first: use theirs
            return fresh, revision

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        async with self.guard() as (nc, _):
            await nc.publish(self._subject("p", channel), encode_info(info), headers={H_KIND: "j"})

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        async with self.guard() as (nc, _):
            await nc.publish(self._subject("p", channel), encode_info(info), headers={H_KIND: "l"})

    # -- history

    async def history(self, channel: str, opts: HistoryOptions) -> tuple[list[Publication], StreamPosition]:
        async with self.guard() as (_, js):
            key = escape(channel)
            meta, revision = await self._load_meta(key, opts.history_meta_ttl)
            if meta.expires and opts.history_meta_ttl > 0:
                ttl_ms = round(opts.history_meta_ttl * 1000)
                if meta.expires - now_ms() < ttl_ms // 2:  # refresh lazily, at most every TTL/2
                    await self._cas(key, replace(meta, expires=_expiry(opts.history_meta_ttl)), revision)
            top = StreamPosition(meta.top, meta.epoch)
            if opts.limit == 0:
                return [], top
            pubs = await self._read(js, self._subject("h", channel), meta)
            if pubs and pubs[-1].offset > top.offset:  # a publish whose meta write is in flight
                top = StreamPosition(pubs[-1].offset, meta.epoch)
        if opts.since is not None:
            since = opts.since.offset
            pubs = (
                [p for p in reversed(pubs) if p.offset < since]
                if opts.reverse
                else [p for p in pubs if p.offset > since]
            )
        elif opts.reverse:
            pubs.reverse()
        if opts.limit > 0:
            pubs = pubs[: opts.limit]
        return pubs, top

    async def _read(self, js: JetStreamContext, subject: str, meta: Meta) -> list[Publication]:
        """The channel's live publications of this epoch, oldest first (one direct get each)."""
        pubs: list[Publication] = []
        seq, now = 1, now_ms()
        while True:
            try:
                msg = await js.get_msg(self.config.stream, seq=seq, subject=subject, next=True, direct=True)
            except NotFoundError:
                return pubs
            seq = (msg.seq or seq) + 1
            headers: dict[str, Any] = msg.headers or {}
            offset = int(headers.get(H_OFFSET, "0"))
            expires = int(headers.get(H_EXPIRES, "0"))
            if headers.get(H_EPOCH) != meta.epoch or offset < meta.floor or (expires and expires <= now):
                continue
            pubs.append(decode_publication(msg.data or b"", offset))

    async def remove_history(self, channel: str) -> None:
        async with self.guard() as (_, js):
            await js.purge_stream(self.config.stream, subject=self._subject("h", channel))


async def _bucket(js: JetStreamContext, name: str, ttl: float, storage: StorageType) -> KeyValue:
    try:
        return await js.key_value(name)
    except NotFoundError:
        return await js.create_key_value(KeyValueConfig(bucket=name, history=1, ttl=ttl, storage=storage))


async def _presence_bucket(js: JetStreamContext, name: str, ttl: float, storage: StorageType) -> KeyValue:
    """The presence bucket, its max age set to this node's ``presence_ttl`` (the bucket
    has one TTL: a node with another one changes it for every node)."""
    kv = await _bucket(js, name, ttl, storage)
    info = await js.stream_info(f"KV_{name}")
    config = info.config
    if config.max_age is None or not math.isclose(config.max_age, ttl):
        window = min(config.duplicate_window or ttl, ttl)
        log.info("nats: presence TTL of bucket %s set to %ss (was %ss)", name, ttl, config.max_age)
        await js.update_stream(replace(config, max_age=ttl, duplicate_window=window))
    return kv


async def delete_streams(url: str | Sequence[str]) -> None:
    """Delete the stream and buckets of the URL's prefix (tests, and decommissioning)."""
    config = NatsConfig.from_url(url)
    nc = await nats.connect(servers=list(config.servers), connect_timeout=config.connect_timeout)
    try:
        js = nc.jetstream(timeout=config.io_timeout)
        buckets = (config.meta_bucket, config.idem_bucket, config.presence_bucket)
        for stream in (config.stream, *(f"KV_{bucket}" for bucket in buckets)):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
    finally:
        await nc.close()


class NatsPresenceManager:
    """Cluster-wide presence in the broker's ``{prefix}_presence`` bucket (module doc)."""

    #: Entries written at once by ``refresh_presence`` (each waits for its ack).
    BATCH = 500

    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker

    @contextlib.asynccontextmanager
    async def _bucket(self) -> AsyncIterator[tuple[KeyValue, JetStreamContext]]:
        async with self._broker.guard() as (_, js):
            kv = self._broker.presence_kv
            if kv is None:
                raise EngineUnavailable("nats: presence bucket not set up yet")
            yield kv, js

    async def add_presence(self, channel: str, client_id: str, info: ClientInfo) -> None:
        async with self._bucket() as (kv, _):
            await kv.put(_presence_key(channel, client_id), encode_info(info))

    async def refresh_presence(self, entries: Sequence[PresenceEntry]) -> None:
        """Re-put every entry (restarting its TTL), BATCH acks awaited at once."""
        async with self._bucket() as (kv, _):
            for i in range(0, len(entries), self.BATCH):
                await asyncio.gather(
                    *(
                        kv.put(_presence_key(channel, client_id), encode_info(info))
                        for channel, client_id, info in entries[i : i + self.BATCH]
                    )
                )

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        async with self._bucket() as (kv, _):
            await kv.delete(_presence_key(channel, client_id))

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        """Read the channel's keys through an ephemeral pull consumer (last message per
        key): its pending count, fixed when it is made, says how many to wait for, so no
        entry written before the call is missed however messages and replies interleave."""
        clients: dict[str, ClientInfo] = {}
        cfg = self._broker.config
        prefix = escape(channel) + "."
        async with self._bucket() as (_, js):
            sub = await js.pull_subscribe(
                f"$KV.{cfg.presence_bucket}.{prefix}*",
                stream=f"KV_{cfg.presence_bucket}",
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=cfg.io_timeout,  # the server drops it after
                ),
            )
            try:
                remaining = (await sub.consumer_info()).num_pending or 0
                while remaining > 0:
                    try:
                        msgs = await sub.fetch(batch=min(remaining, self.BATCH), timeout=cfg.io_timeout)
                    except nats.errors.TimeoutError:
                        if not (await sub.consumer_info()).num_pending:
                            break  # the rest expired (max age) since the consumer was made
                        raise
                    for msg in msgs:
                        remaining = min(remaining - 1, msg.metadata.num_pending or 0)
                        client = unescape(msg.subject.rsplit(".", 1)[1])
                        if (msg.headers or {}).get(KV_OPERATION) or not msg.data:  # deleted
                            clients.pop(client, None)
                        else:
                            clients[client] = decode_info(msg.data)
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        return clients

    async def presence_stats(self, channel: str) -> PresenceStats:
        clients = await self.presence(channel)
        return PresenceStats(len(clients), len({info.user for info in clients.values()}))

    async def close(self) -> None:
        """The connection is the broker's: it closes it."""


def _presence_key(channel: str, client_id: str) -> str:
    return f"{escape(channel)}.{escape(client_id)}"


def from_url(url: str | Sequence[str]) -> tuple[NatsBroker, NatsPresenceManager]:
    broker = NatsBroker(NatsConfig.from_url(url))
    return broker, NatsPresenceManager(broker)
