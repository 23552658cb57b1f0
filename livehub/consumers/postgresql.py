"""The PostgreSQL outbox-table consumer, for apps in any language (Centrifugo's ``postgresql``
consumer, same table and options): the app inserts ``(method, payload, partition)`` rows in
its own transactions; livehub runs each row as a server API command and deletes it.

The table (the app creates it; ``payload`` is the command's JSON request)::

    CREATE TABLE livehub_consumer_outbox (
        id bigserial PRIMARY KEY,
        method text NOT NULL,
        payload bytea NOT NULL,   -- or jsonb / text
        partition integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now()
    );

and, for ``partition_notification_channel``, a trigger that notifies the partition number::

    CREATE FUNCTION livehub_consumer_notify() RETURNS trigger AS $$
    BEGIN PERFORM pg_notify('livehub_consumer', NEW.partition::text); RETURN NEW; END $$
    LANGUAGE plpgsql;
    CREATE TRIGGER livehub_consumer_notify AFTER INSERT ON livehub_consumer_outbox
        FOR EACH ROW EXECUTE FUNCTION livehub_consumer_notify();

How rows are taken: each partition ``0 .. num_partitions - 1`` has a worker. A worker opens a
transaction, takes the partition's transaction-level advisory lock (so among all nodes one
worker at a time handles a partition, in id order), reads up to ``partition_select_limit``
rows of it ``ORDER BY id``, runs them, deletes those it ran and commits. A command that fails
with an internal error (the engine unavailable) stops the batch: it and the rows after it
stay and are tried again after a backoff, so the order within a partition holds. A command
refused (bad request, unknown channel) is logged and deleted. A node killed in the middle of
a batch leaves its transaction uncommitted: the rows stay and run again (set idempotency keys
in the payloads to make that harmless). Without notifications a partition is polled every
``partition_poll_interval``; it is read again at once while batches come back full.

Ordering caveat, as in Centrifugo: ids are assigned at insert, not at commit, so rows of
concurrent app transactions can become visible out of id order; a row that becomes visible
late is run late, never skipped (rows are deleted, there is no cursor). Apps that need strict
commit order per channel publish through ``livehub.transactional`` or one partition per
ordered stream with serialised writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import TYPE_CHECKING, Any

from livehub.consumers.dispatch import Retry, dispatch
from livehub.engines.backoff import Backoff
from livehub.engines.base import EngineUnavailable
from livehub.transactional import plain_dsn

if TYPE_CHECKING:
    import asyncpg

    from livehub.core.node import Node
    from livehub.settings import PostgresConsumerOptions

log = logging.getLogger("livehub.consumers.postgresql")

TABLE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresConsumer:
    def __init__(self, node: Node, name: str, options: PostgresConsumerOptions) -> None:
        if not options.dsn:
            raise ValueError(f"consumer {name!r}: postgresql.dsn is required")
        if not TABLE.match(options.outbox_table_name):
            raise ValueError(f"consumer {name!r}: postgresql.outbox_table_name must be a table name")
        self.node = node
        self.name = name
        self.options = options
        self.dsn = plain_dsn(options.dsn)
        self.lock_prefix = f"livehub_partition_lock_{name}_"
        #: Commands run (refused ones included) and batches stopped by an internal error.
        self.processed = 0
        self.retries = 0
        self._pool: asyncpg.Pool | None = None
        self._triggers = [asyncio.Event() for _ in range(max(1, options.num_partitions))]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._partition(i), name=f"livehub-consumer-{self.name}-{i}")
            for i in range(len(self._triggers))
        ]
        if self.options.partition_notification_channel:
            self._tasks.append(
                asyncio.create_task(self._listen(), name=f"livehub-consumer-{self.name}-listen")
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.terminate()

    async def _get_pool(self) -> asyncpg.Pool:
        import asyncpg

        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=len(self._triggers) + 1, timeout=5.0, command_timeout=30.0
            )
        return self._pool

    async def _partition(self, partition: int) -> None:
        import asyncpg

        backoff = Backoff(first=0.1, cap=10.0)
        trigger = self._triggers[partition]
        interval = self.options.partition_poll_interval
        while True:
            trigger.clear()
            try:
                count = await self._process_once(partition)
            except (
                Retry,
                OSError,
                TimeoutError,
                EngineUnavailable,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
            ) as exc:
                self.retries += 1
                log.warning("consumer %s, partition %d: %r; trying again", self.name, partition, exc)
                await asyncio.sleep(backoff.next())
                continue
            except Exception:  # a bug must not end the partition's worker for good
                self.retries += 1
                log.exception("consumer %s, partition %d failed; trying again", self.name, partition)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            if count is None or count < self.options.partition_select_limit:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await trigger.wait()

    async def _process_once(self, partition: int) -> int | None:
        """Rows run in one transaction; None when another node holds the partition (try lock)."""
        pool = await self._get_pool()
        table = self.options.outbox_table_name
        async with pool.acquire() as conn, conn.transaction():
            lock = self.lock_prefix + str(partition)
            if self.options.use_try_lock:
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", lock):
                    return None
            else:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock)
            rows = await conn.fetch(
                f"SELECT id, method, payload FROM {table} WHERE partition = $1 ORDER BY id LIMIT $2",
                partition,
                self.options.partition_select_limit,
            )
            done: list[int] = []
            failed: Retry | None = None
            for row in rows:
                try:
                    await dispatch(self.node, row["method"], _bytes(row["payload"]))
                except Retry as exc:
                    failed = exc
                    break
                done.append(row["id"])
                self.processed += 1
            if done:
                await conn.execute(f"DELETE FROM {table} WHERE id = ANY($1::bigint[])", done)
        if failed is not None:
            raise failed
        return len(rows)

    async def _listen(self) -> None:
        import asyncpg

        backoff = Backoff(first=0.1)
        dsn = (
            plain_dsn(self.options.partition_notification_dsn)
            if self.options.partition_notification_dsn
            else self.dsn
        )
        while True:
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(dsn, timeout=5.0)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(self.options.partition_notification_channel, self._on_notify)
                backoff.reset()
                await lost.wait()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("consumer %s: LISTEN failed: %r", self.name, exc)
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(backoff.next())

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        try:
            partition = int(str(payload))
        except ValueError:
            log.error("consumer %s: notification %r is not a partition number", self.name, payload)
            return
        if 0 <= partition < len(self._triggers):
            self._triggers[partition].set()
        else:
            log.error("consumer %s: partition %d is out of range", self.name, partition)


def _bytes(payload: Any) -> bytes:
    """``bytea`` arrives as bytes; ``jsonb`` and ``text`` as str."""
    return payload if isinstance(payload, bytes) else str(payload).encode()
