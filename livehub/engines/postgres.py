"""The PostgreSQL engine: history, fan-out between nodes and presence in PostgreSQL (>= 13).

``engine_from_url("postgresql://user@127.0.0.1:5432/app?prefix=livehub")`` builds a
``PostgresBroker`` and a ``PostgresPresenceManager``: a small cluster needs nothing but the
database it already has. Options in the query string (removed before the URL reaches
asyncpg): ``prefix`` (``livehub``: the tables' name prefix and the NOTIFY channel),
``presence_ttl`` (60s), ``connect_timeout`` (2s), ``io_timeout`` (4s), ``pool_size`` (8),
``ping_interval`` (5s).

Tables, created at start when missing (``{p}`` = prefix)::

    {p}_stream    channel -> epoch, top offset, meta expiry     (one row per stream)
    {p}_pub       (channel, offset) -> publication blob, expiry  (the history)
    {p}_result    (channel, idempotency key) -> offset, epoch, expiry
    {p}_presence  (channel, client id) -> user, info blob, expiry
    {p}_event     id -> a message too large for NOTIFY, read back by id (kept 60 s)

What expired is deleted by ``{p}_cleanup()``: at every presence refresh of a node, and once
in about 500 publishes.

Publishing is one call of the ``{p}_publish`` function, in one transaction: it takes the
channel's advisory lock (so concurrent publishers of a channel are serialised and the
idempotency check cannot race), advances the top, inserts the publication, trims the
history and sends the message to the nodes with ``pg_notify``. PostgreSQL delivers the
notifications of committed transactions in commit order, so every node sees a channel's
publications in offset order. All TTLs are measured with the server's clock.

Fan-out: every node LISTENs on one channel (the prefix) and keeps only the messages of the
channels it is subscribed to. A NOTIFY payload is at most 8000 bytes: a message larger than
that is stored in ``{p}_event`` and the notification carries its id; the receiving node reads
the row (in order: a node handles messages one at a time, in the order they arrived).
Delivery is at most once, as on Redis pub/sub: a node whose LISTEN connection broke
reconnects and misses what was sent meanwhile; clients recover it from history.

Message (text, as NOTIFY payloads are)::

    P<len>:<channel>:<offset>:<epoch>:<use_delta 0|1>:<prev offset>:<prev blob b64>:<blob b64>
    J<len>:<channel>:<info b64>   L<len>:<channel>:<info b64>   C<control b64>
    R<event id>                   (the message is in {p}_event)

Presence: entries expire ``presence_ttl`` after they were last added or refreshed, so the
clients of a node that died leave; ``refresh_presence`` re-adds many entries in one statement.

Every call fails with ``EngineUnavailable`` (within ``connect_timeout`` + ``io_timeout``)
when PostgreSQL cannot be reached. Every node receives every node's traffic and filters it:
this engine is meant for small clusters that want no other service than their database.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

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

log = logging.getLogger("livehub.engines.postgres")

OPTIONS = ("prefix", "presence_ttl", "connect_timeout", "io_timeout", "pool_size", "ping_interval")
SCHEMES = ("postgresql", "postgres")
#: Messages received and not yet handled, at most (beyond: dropped, clients recover).
QUEUE_LIMIT = 100_000
#: Table names and the NOTIFY channel are built from the prefix: a plain identifier.
PREFIX = r"^[a-z_][a-z0-9_]{0,39}$"

#: Errors that mean "the database cannot be reached or did not answer".
UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
)

#: What ends a LISTEN connection (which is then made again).
LISTEN_ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE, asyncpg.PostgresError, ConnectionError)


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    dsn: str
    prefix: str = "livehub"
    presence_ttl: float = 60.0
    connect_timeout: float = 2.0
    io_timeout: float = 4.0
    pool_size: int = 8
    ping_interval: float = 5.0

    @classmethod
    def from_url(cls, url: str | Sequence[str]) -> PostgresConfig:
        urls = options.split_urls(url)
        if len(urls) != 1:
            raise ValueError("the PostgreSQL engine takes one URL")
        if urlsplit(urls[0]).scheme not in SCHEMES:
            raise ValueError(f"not a PostgreSQL URL: {urls[0]!r}")
        dsn, opts = options.pop_options(urls[0], OPTIONS)
        return cls(
            dsn=dsn.rstrip("?"),
            prefix=options.text(opts, "prefix", "livehub", PREFIX),
            presence_ttl=options.duration(opts, "presence_ttl", 60.0),
            connect_timeout=options.duration(opts, "connect_timeout", 2.0),
            io_timeout=options.duration(opts, "io_timeout", 4.0),
            pool_size=max(1, options.integer(opts, "pool_size", 8)),
            ping_interval=options.duration(opts, "ping_interval", 5.0),
        )


def schema(p: str) -> str:
    """The tables and functions of prefix ``p`` (idempotent: run at every start)."""
    return f"""
CREATE TABLE IF NOT EXISTS {p}_stream (
    channel text PRIMARY KEY, epoch text NOT NULL, top bigint NOT NULL, meta_expires timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS {p}_pub (
    channel text NOT NULL, "offset" bigint NOT NULL, blob bytea NOT NULL, expires timestamptz NOT NULL,
    PRIMARY KEY (channel, "offset"));
CREATE TABLE IF NOT EXISTS {p}_result (
    channel text NOT NULL, key text NOT NULL, "offset" bigint NOT NULL, epoch text NOT NULL,
    expires timestamptz NOT NULL, PRIMARY KEY (channel, key));
CREATE TABLE IF NOT EXISTS {p}_presence (
    channel text NOT NULL, client text NOT NULL, "user" text NOT NULL, info bytea NOT NULL,
    expires timestamptz NOT NULL, PRIMARY KEY (channel, client));
CREATE INDEX IF NOT EXISTS {p}_presence_expires ON {p}_presence (expires);
CREATE INDEX IF NOT EXISTS {p}_pub_expires ON {p}_pub (expires);
CREATE INDEX IF NOT EXISTS {p}_result_expires ON {p}_result (expires);
CREATE INDEX IF NOT EXISTS {p}_stream_expires ON {p}_stream (meta_expires);
CREATE TABLE IF NOT EXISTS {p}_event (
    id bigserial PRIMARY KEY, message text NOT NULL, created timestamptz NOT NULL DEFAULT now());

CREATE OR REPLACE FUNCTION {p}_send(message text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE v_id bigint;
BEGIN
    IF octet_length(message) <= 7900 THEN
        PERFORM pg_notify('{p}', message);
    ELSE
        INSERT INTO {p}_event (message) VALUES (message) RETURNING id INTO v_id;
        PERFORM pg_notify('{p}', 'R' || v_id);
        IF v_id % 100 = 0 THEN
            DELETE FROM {p}_event WHERE created < now() - interval '60 seconds';
        END IF;
    END IF;
END $$;

-- what expired and is read by nobody any more: publications past their TTL, idempotency
-- results, streams whose metadata expired (the next touch would start them anew anyway)
CREATE OR REPLACE FUNCTION {p}_cleanup() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {p}_pub WHERE expires <= clock_timestamp();
    DELETE FROM {p}_result WHERE expires <= clock_timestamp();
    DELETE FROM {p}_stream s WHERE s.meta_expires <= clock_timestamp()
        AND NOT EXISTS (SELECT 1 FROM {p}_pub p WHERE p.channel = s.channel);
    DELETE FROM {p}_presence WHERE expires <= clock_timestamp();
    DELETE FROM {p}_event WHERE created < now() - interval '60 seconds';
END $$;

CREATE OR REPLACE FUNCTION {p}_touch(p_channel text, p_meta_ttl_ms bigint, p_epoch text)
RETURNS TABLE (r_top bigint, r_epoch text) LANGUAGE plpgsql AS $$
DECLARE v_now timestamptz := clock_timestamp();
BEGIN
    INSERT INTO {p}_stream AS s (channel, epoch, top, meta_expires)
    VALUES (p_channel, p_epoch, 0, v_now + p_meta_ttl_ms * interval '1 millisecond')
    ON CONFLICT (channel) DO UPDATE SET
        epoch = CASE WHEN s.meta_expires <= v_now THEN excluded.epoch ELSE s.epoch END,
        top = CASE WHEN s.meta_expires <= v_now THEN 0 ELSE s.top END,
        meta_expires = excluded.meta_expires
    RETURNING s.top, s.epoch INTO r_top, r_epoch;
    IF r_top = 0 THEN
        DELETE FROM {p}_pub WHERE channel = p_channel;
    END IF;
    RETURN NEXT;
END $$;

CREATE OR REPLACE FUNCTION {p}_publish(
    p_channel text, p_blob bytea, p_size int, p_ttl_ms bigint, p_meta_ttl_ms bigint, p_epoch text,
    p_key text, p_key_ttl_ms bigint, p_delta boolean)
RETURNS TABLE (r_offset bigint, r_epoch text, r_duplicate boolean) LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz;
    v_prev bytea := '';
    v_prev_offset bigint := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('{p}'), hashtext(p_channel));
    v_now := clock_timestamp();
    IF p_key <> '' THEN
        SELECT "offset", epoch INTO r_offset, r_epoch
        FROM {p}_result WHERE channel = p_channel AND key = p_key AND expires > v_now;
        IF FOUND THEN
            r_duplicate := true;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    r_duplicate := false;
    IF p_size > 0 AND p_ttl_ms > 0 THEN
        SELECT t.r_top, t.r_epoch INTO r_offset, r_epoch FROM {p}_touch(p_channel, p_meta_ttl_ms, p_epoch) t;
        r_offset := r_offset + 1;
        UPDATE {p}_stream SET top = r_offset WHERE channel = p_channel;
        IF p_delta THEN
            SELECT blob, "offset" INTO v_prev, v_prev_offset FROM {p}_pub
            WHERE channel = p_channel AND "offset" = r_offset - 1 AND expires > v_now;
            IF NOT FOUND THEN
                v_prev := '';
                v_prev_offset := 0;
            END IF;
        END IF;
        INSERT INTO {p}_pub (channel, "offset", blob, expires)
        VALUES (p_channel, r_offset, p_blob, v_now + p_ttl_ms * interval '1 millisecond');
        DELETE FROM {p}_pub WHERE channel = p_channel AND ("offset" <= r_offset - p_size OR expires <= v_now);
    ELSE
        r_offset := 0;
        r_epoch := '';
    END IF;
    IF p_key <> '' THEN
        INSERT INTO {p}_result AS r (channel, key, "offset", epoch, expires)
        VALUES (p_channel, p_key, r_offset, r_epoch, v_now + p_key_ttl_ms * interval '1 millisecond')
        ON CONFLICT (channel, key) DO UPDATE
        SET "offset" = excluded."offset", epoch = excluded.epoch, expires = excluded.expires;
    END IF;
    IF random() < 0.002 THEN
        PERFORM {p}_cleanup();
    END IF;
    PERFORM {p}_send(
        'P' || char_length(p_channel) || ':' || p_channel || ':' || r_offset || ':' || r_epoch || ':'
        || (CASE WHEN p_delta THEN '1' ELSE '0' END) || ':' || v_prev_offset || ':'
        || translate(encode(v_prev, 'base64'), E'\\n', '') || ':'
        || translate(encode(p_blob, 'base64'), E'\\n', ''));
    RETURN NEXT;
END $$;
"""


def ms(seconds: float) -> int:
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def new_epoch() -> str:
    return secrets.token_urlsafe(6)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def addressed(kind: str, channel: str, rest: str) -> str:
    """A message about ``channel``: its name is length-prefixed (names may hold ``:``)."""
    return f"{kind}{len(channel)}:{channel}:{rest}"


class Database:
    """A connection pool that fails fast: every error reaching the server becomes
    ``EngineUnavailable``; the schema is created on first connect."""

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._deadline = config.connect_timeout + config.io_timeout

    async def pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                self._pool = await self._connect()
        return self._pool

    async def _connect(self) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            self.config.dsn,
            min_size=1,
            max_size=self.config.pool_size,
            timeout=self.config.connect_timeout,
            command_timeout=self.config.io_timeout,
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                # one node at a time: concurrent CREATE ... IF NOT EXISTS can still collide
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"{self.config.prefix}:schema"
                )
                await conn.execute(schema(self.config.prefix))
        except BaseException:
            await pool.close()
            raise
        return pool

    @contextlib.asynccontextmanager
    async def guard(self) -> Any:
        """Maps unreachability and timeouts to EngineUnavailable."""
        try:
            async with asyncio.timeout(self._deadline):
                yield
        except UNAVAILABLE as exc:
            raise EngineUnavailable(f"postgresql {self.config.prefix}: {exc!r}") from exc

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.guard():
            pool = await self.pool()
            rows: list[asyncpg.Record] = await pool.fetch(query, *args)
            return rows

    async def execute(self, query: str, *args: Any) -> None:
        async with self.guard():
            pool = await self.pool()
            await pool.execute(query, *args)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._deadline):
                    await pool.close()
            pool.terminate()


class Listener:
    """The LISTEN connection: reconnects with backoff, pings while quiet, hands every
    notification to ``deliver`` in arrival order from one task."""

    def __init__(self, config: PostgresConfig, db: Database, deliver: Any) -> None:
        self.config = config
        self._db = db
        self._deliver = deliver
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()
        self._up = asyncio.Event()
        self._tried = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Times a LISTEN connection was established; tests watch it to see a reconnect.
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"livehub-pg-listen-{self.config.prefix}"),
            asyncio.create_task(self._drain(), name=f"livehub-pg-deliver-{self.config.prefix}"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.connect_timeout + self.config.io_timeout):
                await self._tried.wait()
        if not self._up.is_set():
            log.warning(
                "postgresql %s: LISTEN not connected yet, retrying in the background", self.config.prefix
            )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        if len(self._queue) >= QUEUE_LIMIT:
            log.warning("postgresql %s: %d messages not handled yet, dropping", channel, len(self._queue))
            return
        self._queue.append(str(payload))
        self._ready.set()

    async def _run(self) -> None:
        backoff = Backoff(first=0.1)
        channel = self.config.prefix
        while True:
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.config.dsn, timeout=self.config.connect_timeout)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(channel, self._on_notify)
                self.connects += 1
                self._up.set()
                self._tried.set()
                backoff.reset()
                if self.connects > 1:
                    log.info("postgresql %s: LISTEN reconnected", channel)
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.config.ping_interval):
                            await lost.wait()
                    if not lost.is_set():
                        async with asyncio.timeout(self.config.io_timeout):
                            await conn.execute("SELECT 1")
                raise ConnectionError("LISTEN connection closed")
            except LISTEN_ERRORS as exc:
                log.warning("postgresql %s: LISTEN connection lost: %r", channel, exc)
            except Exception:  # a bug must not end the LISTEN connection for good
                log.exception("postgresql %s: LISTEN connection failed", channel)
            finally:
                self._up.clear()
                self._tried.set()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(backoff.next())

    async def _drain(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                message = self._queue.popleft()
                if message.startswith("R"):
                    try:
                        rows = await self._db.fetch(
                            f"SELECT message FROM {self.config.prefix}_event WHERE id = $1", int(message[1:])
                        )
                    except (EngineUnavailable, ValueError) as exc:
                        log.warning("postgresql: could not read a large message: %s", exc)
                        continue
                    if not rows:
                        continue
                    message = rows[0]["message"]
                try:
                    self._deliver(message)
                except Exception:  # a handler's bug must not stop delivery to every other channel
                    log.exception("postgresql: handling a message failed")


class PostgresBroker(NoMaps):
    engine_name = "the PostgreSQL engine"

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self._p = config.prefix
        self._db = Database(config)
        self._handler: BrokerEventHandler | None = None
        self._subscribed: set[str] = set()
        self._bases = DeltaBases()
        self.listener = Listener(config, self._db, self._on_message)

    async def start(self, handler: BrokerEventHandler) -> None:
        self._handler = handler
        async with self._db.guard():
            await self._db.pool()
        await self.listener.start()

    async def close(self) -> None:
        self._handler = None
        await self.listener.close()
        await self._db.close()
        self._bases.clear()

    async def subscribe(self, channel: str) -> None:
        """Every node receives every message of the engine: subscribing is choosing. It
        fails while the LISTEN connection is down, as publications would not reach us."""
        self._subscribed.add(channel)
        if not self.listener.connected:
            raise EngineUnavailable(f"postgresql {self._p}: LISTEN connection is down")

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)
        self._bases.forget(channel)

    async def publish(self, channel: str, data: bytes, opts: PublishOptions) -> tuple[StreamPosition, bool]:
        history = opts.history_size > 0 and opts.history_ttl > 0
        blob = encode_publication(
            Publication(data, 0, opts.info, opts.tags, int(time.time() * 1000), opts.key)
        )
        rows = await self._db.fetch(
            f"SELECT * FROM {self._p}_publish($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            channel,
            blob,
            opts.history_size if history else 0,
            ms(opts.history_ttl) if history else 0,
            ms(opts.history_meta_ttl),
            new_epoch(),
            opts.idempotency_key,
            ms(opts.idempotent_result_ttl),
            opts.use_delta,
        )
        row = rows[0]
        return StreamPosition(row["r_offset"], row["r_epoch"]), bool(row["r_duplicate"])

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self._send(addressed("J", channel, b64(encode_info(info))))

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self._send(addressed("L", channel, b64(encode_info(info))))

    async def publish_control(self, data: bytes) -> None:
        await self._send("C" + b64(data))

    async def _send(self, message: str) -> None:
        await self._db.execute(f"SELECT {self._p}_send($1)", message)

    async def history(self, channel: str, opts: HistoryOptions) -> tuple[list[Publication], StreamPosition]:
        async with self._db.guard():
            pool = await self._db.pool()
            async with pool.acquire() as conn, conn.transaction():
                head = await conn.fetchrow(
                    f"SELECT * FROM {self._p}_touch($1, $2, $3)",
                    channel,
                    ms(opts.history_meta_ttl),
                    new_epoch(),
                )
                assert head is not None  # the function returns one row
                top = StreamPosition(head["r_top"], head["r_epoch"])
                if opts.limit == 0:
                    return [], top
                where, args = (
                    ["channel = $1", '"offset" <= $2', "expires > clock_timestamp()"],
                    [channel, top.offset],
                )
                if opts.since is not None:
                    where.append('"offset" < $3' if opts.reverse else '"offset" > $3')
                    args.append(opts.since.offset)
                order = "DESC" if opts.reverse else "ASC"
                limit = f"LIMIT {int(opts.limit)}" if opts.limit > 0 else ""
                rows = await conn.fetch(
                    f'SELECT "offset", blob FROM {self._p}_pub WHERE {" AND ".join(where)} '
                    f'ORDER BY "offset" {order} {limit}',
                    *args,
                )
        return [decode_publication(row["blob"], row["offset"]) for row in rows], top

    async def remove_history(self, channel: str) -> None:
        await self._db.execute(f"DELETE FROM {self._p}_pub WHERE channel = $1", channel)

    # -- messages from LISTEN, in arrival order; must not block

    def _on_message(self, message: str) -> None:
        handler = self._handler
        if handler is None:
            return
        kind = message[:1]
        if kind == "C":
            handler.handle_control(base64.b64decode(message[1:]))
            return
        length, _, rest = message[1:].partition(":")
        n = int(length)
        channel, body = rest[:n], rest[n + 1 :]
        if channel not in self._subscribed:
            return
        try:
            if kind == "P":
                self._on_publication(handler, channel, body)
            elif kind == "J":
                handler.handle_join(channel, decode_info(base64.b64decode(body)))
            elif kind == "L":
                handler.handle_leave(channel, decode_info(base64.b64decode(body)))
            else:
                raise ValueError(f"unknown message kind {kind!r}")
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            log.warning("postgresql broker: dropped a malformed message on %r: %s", channel, exc)

    def _on_publication(self, handler: BrokerEventHandler, channel: str, body: str) -> None:
        offset, epoch, delta, prev_offset, prev_blob, blob = body.split(":")
        pub = decode_publication(base64.b64decode(blob), int(offset))
        use_delta = delta == "1"
        prev: Publication | None
        if pub.offset:
            prev = (
                decode_publication(base64.b64decode(prev_blob), int(prev_offset))
                if use_delta and prev_blob
                else None
            )
        else:
            prev = self._bases.advance(channel, pub, use_delta)
        handler.handle_publication(channel, pub, StreamPosition(pub.offset, epoch), prev)


class PostgresPresenceManager:
    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self._p = config.prefix
        self._db = Database(config)
        self._ttl = ms(config.presence_ttl)

    async def add_presence(self, channel: str, client_id: str, info: ClientInfo) -> None:
        await self._upsert([(channel, client_id, info)])

    async def refresh_presence(self, entries: Sequence[PresenceEntry]) -> None:
        """One statement per 1000 entries; then what expired, in every table, is deleted
        (``{p}_cleanup``: each live node runs it every ``presence_update_interval``)."""
        await self._upsert(entries)
        await self._db.execute(f"SELECT {self._p}_cleanup()")

    async def _upsert(self, entries: Sequence[PresenceEntry]) -> None:
        for i in range(0, len(entries), 1000):
            chunk = entries[i : i + 1000]
            await self._db.execute(
                f"""INSERT INTO {self._p}_presence AS p (channel, client, "user", info, expires)
                SELECT c, k, u, i, clock_timestamp() + $5 * interval '1 millisecond'
                FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS e(c, k, u, i)
                ON CONFLICT (channel, client) DO UPDATE
                SET "user" = excluded."user", info = excluded.info, expires = excluded.expires""",
                [e[0] for e in chunk],
                [e[1] for e in chunk],
                [e[2].user for e in chunk],
                [encode_info(e[2]) for e in chunk],
                self._ttl,
            )

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        await self._db.execute(
            f"DELETE FROM {self._p}_presence WHERE channel = $1 AND client = $2", channel, client_id
        )

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        rows = await self._db.fetch(
            f"SELECT client, info FROM {self._p}_presence WHERE channel = $1 AND expires > clock_timestamp()",
            channel,
        )
        return {row["client"]: decode_info(row["info"]) for row in rows}

    async def presence_stats(self, channel: str) -> PresenceStats:
        rows = await self._db.fetch(
            f'SELECT count(*) AS clients, count(DISTINCT "user") AS users FROM {self._p}_presence '
            "WHERE channel = $1 AND expires > clock_timestamp()",
            channel,
        )
        return PresenceStats(rows[0]["clients"], rows[0]["users"])

    async def close(self) -> None:
        await self._db.close()


async def drop_tables(url: str) -> None:
    """Remove every table and function of the URL's prefix (tests clean up with it)."""
    config = PostgresConfig.from_url(url)
    if not re.match(PREFIX, config.prefix):
        raise ValueError(config.prefix)
    p = config.prefix
    conn = await asyncpg.connect(config.dsn, timeout=config.connect_timeout)
    try:
        await conn.execute(
            f"DROP TABLE IF EXISTS {p}_stream, {p}_pub, {p}_result, {p}_presence, {p}_event;"
            f"DROP FUNCTION IF EXISTS {p}_publish, {p}_touch, {p}_send, {p}_cleanup;"
        )
    finally:
        await conn.close()


def from_url(url: str | Sequence[str]) -> tuple[PostgresBroker, PostgresPresenceManager]:
    config = PostgresConfig.from_url(url)
    return PostgresBroker(config), PostgresPresenceManager(config)
