"""The PostgreSQL outbox-table consumer (livehub.consumers.postgresql) on the real server: a
table of Centrifugo's shape that an app in any language writes server API commands to, with
a notifying trigger; a Hub built from Centrifugo-style ``consumers`` settings runs them."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from livehub import Hub
from livehub.consumers.dispatch import Retry, dispatch
from livehub.consumers.postgresql import PostgresConsumer
from livehub.core.node import Node
from livehub.settings import Settings, load_settings
from tests.engines.contract import POSTGRES_URL, require_service

NAMESPACES = [{"name": "orders", "history_size": 100, "history_ttl": "300s"}]


def consumer_settings(table: str, **options: Any) -> dict[str, Any]:
    return {
        "name": "app",
        "enabled": True,
        "type": "postgresql",
        "postgresql": {"dsn": POSTGRES_URL, "outbox_table_name": table, **options},
    }


@pytest.fixture
async def table() -> AsyncIterator[str]:
    """An outbox table of Centrifugo's shape, with a trigger notifying the partition."""
    require_service(POSTGRES_URL, "PostgreSQL")
    name = f"lhtest_consumer_{secrets.token_hex(4)}"
    db = await asyncpg.connect(POSTGRES_URL)
    await db.execute(
        f"""CREATE TABLE {name} (
            id bigserial PRIMARY KEY, method text NOT NULL, payload bytea NOT NULL,
            partition integer NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now());
        CREATE FUNCTION {name}_notify() RETURNS trigger AS $$
        BEGIN PERFORM pg_notify('{name}', NEW.partition::text); RETURN NEW; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER {name}_notify AFTER INSERT ON {name} FOR EACH ROW EXECUTE FUNCTION {name}_notify();"""
    )
    try:
        yield name
    finally:
        await db.execute(f"DROP TABLE {name}; DROP FUNCTION {name}_notify")
        await db.close()


async def started(settings: Settings) -> Hub:
    hub = Hub(settings)
    await hub.node.start()
    for service in hub.services:
        await service.start()
    return hub


async def stopped(hub: Hub) -> None:
    for service in hub.services:
        await service.stop()
    await hub.node.stop()


async def insert(db: asyncpg.Connection, table: str, method: str, payload: Any, partition: int = 0) -> None:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    await db.execute(
        f"INSERT INTO {table} (method, payload, partition) VALUES ($1, $2, $3)", method, body, partition
    )


async def history(hub: Hub, channel: str, count: int) -> list[Any]:
    for _ in range(300):
        pubs, _ = await hub.history(channel, limit=-1)
        if len(pubs) >= count:
            return [orjson.loads(p.data) for p in pubs]
        await asyncio.sleep(0.02)
    raise AssertionError(f"{channel}: fewer than {count} publications")


async def test_rows_become_commands_once_committed(table: str) -> None:
    hub = await started(
        Settings(
            channel={"namespaces": NAMESPACES},
            consumers=[
                consumer_settings(table, partition_notification_channel=table, partition_poll_interval="5s")
            ],
        )
    )
    db = await asyncpg.connect(POSTGRES_URL)
    try:
        ch = "orders:" + secrets.token_hex(3)
        async with db.transaction():
            await insert(db, table, "publish", {"channel": ch, "data": {"n": 1}})
        tx = db.transaction()
        await tx.start()
        await insert(db, table, "publish", {"channel": ch, "data": {"n": "rolled back"}})
        await tx.rollback()
        # refused commands are skipped, not retried forever; the rows after them run
        await insert(db, table, "no_such_method", {})
        await insert(db, table, "publish", b"not json")
        await insert(db, table, "publish", {"channel": "unknown:x", "data": 1})
        await insert(db, table, "broadcast", {"channels": [ch, ch + "b"], "data": {"n": 2}})
        await insert(db, table, "batch", {"commands": [{"publish": {"channel": ch, "data": {"n": 3}}}]})
        # a 5 s poll interval: the trigger's notification is what wakes the consumer
        assert await asyncio.wait_for(history(hub, ch, 3), 3) == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert await history(hub, ch + "b", 1) == [{"n": 2}]
        for _ in range(100):
            if not await db.fetchval(f"SELECT count(*) FROM {table}"):
                break
            await asyncio.sleep(0.02)
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0
    finally:
        await db.close()
        await stopped(hub)


async def test_partitions_keep_their_order_and_run_apart(table: str) -> None:
    hub = await started(
        Settings(
            channel={"namespaces": NAMESPACES},
            consumers=[consumer_settings(table, num_partitions=2, partition_poll_interval="50ms")],
        )
    )
    db = await asyncpg.connect(POSTGRES_URL)
    try:
        a, b = "orders:a" + secrets.token_hex(3), "orders:b" + secrets.token_hex(3)
        async with db.transaction():
            for n in range(1, 51):
                await insert(db, table, "publish", {"channel": a, "data": n}, partition=0)
                await insert(db, table, "publish", {"channel": b, "data": n}, partition=1)
        assert await history(hub, a, 50) == list(range(1, 51))
        assert await history(hub, b, 50) == list(range(1, 51))
    finally:
        await db.close()
        await stopped(hub)


async def test_an_unreachable_engine_is_a_retry_not_a_skip() -> None:
    """The engine down is an internal error: the consumer keeps the row and tries again."""
    node = Node(
        Settings(
            channel={"namespaces": NAMESPACES}, engine={"url": "redis://127.0.0.1:1?connect_timeout=200ms"}
        )
    )
    with pytest.raises(Retry):
        await dispatch(node, "publish", orjson.dumps({"channel": "orders:x", "data": 1}))
    await dispatch(node, "publish", orjson.dumps({"channel": "unknown:x", "data": 1}))  # refused: skipped


def test_centrifugo_consumers_and_postgres_broker_settings(tmp_path: Any) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        orjson.dumps(
            {
                "broker": {
                    "enabled": True,
                    "type": "postgres",
                    "postgres": {"dsn": "postgresql://u@db:5432/app", "table_prefix": "rt", "pool_size": 4},
                },
                "consumers": [
                    consumer_settings(
                        "outbox", num_partitions=4, partition_poll_interval="300ms", use_try_lock=True
                    ),
                    {"name": "kafka", "enabled": False, "type": "kafka"},
                ],
            }
        ).decode()
    )
    settings = load_settings(config)
    assert settings.engine.url == "postgresql://u@db:5432/app?prefix=rt&pool_size=4"
    pg = settings.consumers[0].postgresql
    assert (pg.num_partitions, pg.partition_poll_interval, pg.use_try_lock) == (4, 0.3, True)
    hub = Hub(settings)
    assert [type(s) for s in hub.services] == [PostgresConsumer]
    with pytest.raises(ValueError, match="not supported"):
        Settings(consumers=[{"name": "k", "enabled": True, "type": "kafka"}])
