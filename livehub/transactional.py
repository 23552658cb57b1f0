"""A transactional outbox on PostgreSQL: publish inside the app's own SQL transaction.

``await outbox.publish(conn, "orders", {"id": 7})`` inserts a row into the outbox table with
the app's connection — a SQLAlchemy ``AsyncSession`` or ``AsyncConnection``, or an asyncpg
``Connection`` — so the publication is part of the app's transaction: if it rolls back,
nothing was ever published; if it commits, the *relay* delivers it through the engine, with
an offset in the channel's stream like any other publication (clients recover it, the
HTTP API's history shows it).

Guarantees, and how they are kept:

* **If and only if the transaction commits.** The row is the message; a rolled-back row
  never existed. The NOTIFY that wakes the relay is sent at commit too (PostgreSQL holds
  notifications until then), and the relay also polls, so a lost wake-up only delays.
* **Once.** The relay publishes a row, then deletes it. A node killed between the two
  publishes the row again when a relay runs next — with the same idempotency key
  (``outbox:<table>:<id>``, or the one given to ``publish``), which the engine remembers for
  ``idempotent_result_ttl`` (24 h here): the second publish is recognised and not
  delivered. The engine must outlive the node for that (Redis, NATS, PostgreSQL; the
  memory engine dies with it and starts a new epoch anyway).
* **In commit order.** PostgreSQL assigns a ``bigserial`` id at insert time, not at commit,
  and has no commit sequence without ``track_commit_timestamp``; two transactions may commit
  in the opposite order of their ids. With ``ordered=True`` (the default) ``publish`` first
  takes a transaction-level advisory lock of the table, held until its transaction ends, so
  publishing transactions are serialised from their first ``publish`` to their commit: ids
  are then handed out in commit order and the relay, reading ``ORDER BY id``, delivers in
  commit order. The cost is that publishing transactions do not overlap after they publish:
  publish last in a transaction. ``ordered=False`` drops the lock; the relay then still
  loses nothing (it deletes what it delivered instead of keeping a cursor, so a row that
  becomes visible late is delivered late, not skipped) and still respects every order that
  was observable — a transaction that began after another committed is delivered after it —
  but two transactions that were both in flight may be delivered in id order.
* **One relay at a time.** Every node runs a relay; only the one holding the table's
  session-level advisory lock works, the others try again every ``poll_interval``. When that
  node dies its database session ends, the lock is released and another node takes over.

A publication the node refuses (no such namespace, data that does not fit the channel's
model) is logged and dropped, so it cannot block the rows after it; while the engine is
unreachable the relay waits and tries the same row again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import TYPE_CHECKING, Any

import orjson

from livehub.client import to_json
from livehub.engines.backoff import Backoff
from livehub.engines.base import EngineUnavailable
from livehub.protocol.codes import Error

if TYPE_CHECKING:
    import asyncpg

    from livehub.core.node import Node

log = logging.getLogger("livehub.transactional")

#: ``table`` or ``schema.table``.
TABLE = re.compile(r"^(?:[a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$")


def table_ddl(table: str) -> str:
    """The outbox table (for a migration tool; the relay also creates it when missing)."""
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    data bytea NOT NULL,
    tags jsonb,
    idempotency_key text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
)"""


def plain_dsn(dsn: str) -> str:
    """``postgresql+asyncpg://…`` (SQLAlchemy's spelling) -> ``postgresql://…`` (asyncpg's)."""
    scheme, sep, rest = dsn.partition("://")
    return scheme.split("+")[0] + sep + rest


class TransactionalOutbox:
    def __init__(
        self,
        node: Node,
        dsn: str,
        *,
        table: str = "livehub_outbox",
        ordered: bool = True,
        poll_interval: float = 1.0,
        batch: int = 100,
        idempotent_result_ttl: float = 24 * 3600.0,
    ) -> None:
        if not TABLE.match(table):
            raise ValueError(f"outbox table {table!r}: expected a lowercase name, or schema.name")
        self.node = node
        self.dsn = plain_dsn(dsn)
        self.table = table
        self.ordered = ordered
        self.poll_interval = poll_interval
        self.batch = batch
        self.idempotent_result_ttl = idempotent_result_ttl
        #: The NOTIFY channel that wakes the relay at commit.
        self.wake_channel = table.replace(".", "_")
        #: True while this node's relay holds the table's lock and delivers.
        self.relaying = False
        #: Rows delivered by this node's relay (and rows dropped as refused).
        self.delivered = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        head = (
            f"WITH ordered AS (SELECT pg_advisory_xact_lock(hashtext('{table}'))), " if ordered else "WITH "
        )
        #: One statement (one round trip): the lock, the row, and the wake-up sent at commit.
        self._insert = (
            f"{head}ins AS (INSERT INTO {table} (channel, data, tags, idempotency_key) "
            "SELECT CAST(%(channel)s AS text), CAST(%(data)s AS bytea), CAST(%(tags)s AS jsonb), "
            f"CAST(%(key)s AS text){' FROM ordered' if ordered else ''} RETURNING id) "
            f"SELECT id, pg_notify('{self.wake_channel}', '') FROM ins"
        )

    # -- the app's side

    async def publish(
        self,
        conn: Any,
        channel: str,
        data: Any,
        *,
        tags: dict[str, str] | None = None,
        idempotency_key: str = "",
    ) -> int:
        """Add a publication to ``conn``'s transaction; returns the outbox row id.

        ``conn``: a SQLAlchemy ``AsyncSession`` / ``AsyncConnection`` or an asyncpg
        ``Connection`` in a transaction. ``data`` is JSON-encoded like ``Hub.publish``.
        """
        params = {
            "channel": channel,
            "data": to_json(data),
            "tags": orjson.dumps(tags).decode() if tags else None,
            "key": idempotency_key,
        }
        module = type(conn).__module__
        if module.startswith("sqlalchemy"):
            from sqlalchemy import text

            sql = re.sub(r"%\((\w+)\)s", r":\1", self._insert)
            result = await conn.execute(text(sql), params)
            row_id: int = result.scalar_one()
            return row_id
        if module.startswith("asyncpg"):
            names = list(params)
            sql = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", self._insert)
            value: int = await conn.fetchval(sql, *params.values())
            return value
        raise TypeError(
            f"outbox.publish needs a SQLAlchemy async session/connection or asyncpg, not {module}"
        )

    # -- the relay

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"livehub-outbox-{self.table}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        import asyncpg

        backoff = Backoff(first=0.1)
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5.0)
                await self._create_table(conn)
                key = f"{self.table}:relay"
                # another node relays while it holds the lock; nothing notifies its release
                while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key):  # noqa: ASYNC110
                    await asyncio.sleep(self.poll_interval)
                self.relaying = True
                log.info("outbox %s: this node relays", self.table)
                await conn.add_listener(self.wake_channel, self._on_notify)
                backoff.reset()
                while True:
                    self._wake.clear()
                    if await self._relay_batch(conn) < self.batch:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(self.poll_interval):
                                await self._wake.wait()
            except (
                OSError,
                TimeoutError,
                EngineUnavailable,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
            ) as exc:
                log.warning("outbox %s: relay interrupted: %r", self.table, exc)
            except Exception:  # a bug must not end the relay for good: log it, start over
                log.exception("outbox %s: relay failed", self.table)
            finally:
                self.relaying = False
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(backoff.next())

    async def _create_table(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{self.table}:ddl")
            await conn.execute(table_ddl(self.table))

    async def _relay_batch(self, conn: asyncpg.Connection) -> int:
        """Deliver up to ``batch`` rows in id order, then delete them; the number read.
        EngineUnavailable stops at the row that failed (the delivered ones are deleted)."""
        rows = await conn.fetch(
            f"SELECT id, channel, data, tags, idempotency_key FROM {self.table} ORDER BY id LIMIT $1",
            self.batch,
        )
        done: list[int] = []
        try:
            for row in rows:
                tags = orjson.loads(row["tags"]) if row["tags"] else None
                key = row["idempotency_key"] or f"outbox:{self.table}:{row['id']}"
                try:
                    await self.node.publish(
                        row["channel"],
                        bytes(row["data"]),
                        tags=tags,
                        idempotency_key=key,
                        idempotent_result_ttl=self.idempotent_result_ttl,
                    )
                    self.delivered += 1
                except Error as exc:
                    self.dropped += 1
                    log.error(
                        "outbox %s: row %d to %r refused, dropped: %s",
                        self.table,
                        row["id"],
                        row["channel"],
                        exc,
                    )
                done.append(row["id"])
        finally:
            if done:
                await conn.execute(f"DELETE FROM {self.table} WHERE id = ANY($1::bigint[])", done)
        return len(rows)
