"""The transactional outbox (livehub.transactional) on the real PostgreSQL server, in one
process: a Hub on the PostgreSQL engine, the app's transactions through asyncpg and
SQLAlchemy. What reaches the channel is read from its history (offsets, once each); the
end-to-end test with a client and a killed node is tests/test_transactional_app.py."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from livehub import Hub, Settings
from livehub.engines.postgres import drop_tables
from livehub.transactional import TransactionalOutbox
from tests.engines.contract import POSTGRES_URL, require_service

ORDERS = {"name": "orders", "history_size": 100, "history_ttl": "300s"}


def unique(name: str) -> str:
    return f"lhtest_{name}_{secrets.token_hex(4)}"


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    """A started Hub on the PostgreSQL engine (tables of its own prefix, dropped after)."""
    require_service(POSTGRES_URL, "PostgreSQL")
    engine = f"{POSTGRES_URL}?prefix={unique('engine')}"
    hub = Hub(Settings(channel={"namespaces": [ORDERS]}), engine=engine)
    await hub.node.start()
    try:
        yield hub
    finally:
        for service in hub.services:
            await service.stop()
        await hub.node.stop()
        await drop_tables(engine)


TABLES: list[str] = []


@pytest.fixture
async def db() -> AsyncIterator[asyncpg.Connection]:
    """The app's connection; the outbox tables the test made are dropped after it."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        yield conn
    finally:
        while TABLES:
            await conn.execute(f"DROP TABLE IF EXISTS {TABLES.pop()}")
        await conn.close()


async def outbox_of(hub: Hub, db: asyncpg.Connection, **options: object) -> TransactionalOutbox:
    """An outbox on a table of its own, its relay started and relaying."""
    table = unique("outbox")
    TABLES.append(table)
    outbox = hub.transactional_outbox(POSTGRES_URL, table=table, poll_interval=0.2, **options)
    await outbox.start()
    await until(lambda: outbox.relaying, "the relay holds the table's lock")
    return outbox


async def until(check: object, what: str, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # type: ignore[operator]  # noqa: ASYNC110 -- state without an event
            await asyncio.sleep(0.02)


async def channel_data(hub: Hub, channel: str) -> list[tuple[int, object]]:
    pubs, _ = await hub.history(channel, limit=-1)
    import orjson

    return [(p.offset, orjson.loads(p.data)) for p in pubs]


async def settled(outbox: TransactionalOutbox, db: asyncpg.Connection) -> None:
    """The relay has delivered every committed row (the table is empty)."""
    for _ in range(500):
        if await db.fetchval(f"SELECT count(*) FROM {outbox.table}") == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("outbox rows left undelivered")


async def test_delivered_if_and_only_if_the_transaction_commits(hub: Hub, db: asyncpg.Connection) -> None:
    outbox = await outbox_of(hub, db)
    ch = "orders:" + secrets.token_hex(3)
    async with db.transaction():
        await outbox.publish(db, ch, {"n": 1})
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await outbox.publish(db, ch, {"n": "rolled back"})
            raise RuntimeError("the app fails: rollback")
    async with db.transaction():
        await outbox.publish(db, ch, {"n": 2})
    await settled(outbox, db)
    assert await channel_data(hub, ch) == [(1, {"n": 1}), (2, {"n": 2})]
    assert outbox.delivered == 2


async def test_sqlalchemy_session_and_connection(hub: Hub, db: asyncpg.Connection) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    outbox = await outbox_of(hub, db)
    ch = "orders:" + secrets.token_hex(3)
    engine = create_async_engine(POSTGRES_URL.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        async with AsyncSession(engine) as session:
            await outbox.publish(session, ch, {"via": "session"}, tags={"k": "v"})
            await session.commit()
        async with AsyncSession(engine) as session:
            await outbox.publish(session, ch, {"via": "rolled back"})
            await session.rollback()
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
            await outbox.publish(conn, ch, {"via": "connection"})
    finally:
        await engine.dispose()
    await settled(outbox, db)
    pubs, _ = await hub.history(ch, limit=-1)
    assert [(p.offset, p.data, p.tags) for p in pubs] == [
        (1, b'{"via":"session"}', {"k": "v"}),
        (2, b'{"via":"connection"}', {}),
    ]


async def test_ordered_publishing_transactions_are_delivered_in_commit_order(
    hub: Hub, db: asyncpg.Connection
) -> None:
    """T1 publishes first and commits last: T2's publish waits for T1's commit (the table's
    transaction lock), so ids, and the relay's order, are the commit order."""
    outbox = await outbox_of(hub, db)
    ch = "orders:" + secrets.token_hex(3)
    other = await asyncpg.connect(POSTGRES_URL)
    try:
        t1 = db.transaction()
        await t1.start()
        await outbox.publish(db, ch, "t1")

        async def t2() -> None:
            async with other.transaction():
                await outbox.publish(other, ch, "t2")

        second = asyncio.create_task(t2())
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting for T1's commit
        await t1.commit()
        await second
    finally:
        await other.close()
    await settled(outbox, db)
    assert await channel_data(hub, ch) == [(1, "t1"), (2, "t2")]


async def test_unordered_outbox_loses_nothing_when_ids_and_commits_disagree(
    hub: Hub, db: asyncpg.Connection
) -> None:
    """Without the lock T1 takes the smaller id and commits after T2: T2 is delivered as
    soon as it commits, T1 when it does (no cursor skips a row that became visible late)."""
    outbox = await outbox_of(hub, db, ordered=False)
    ch = "orders:" + secrets.token_hex(3)
    other = await asyncpg.connect(POSTGRES_URL)
    try:
        t1 = db.transaction()
        await t1.start()
        first_id = await outbox.publish(db, ch, "t1")
        async with other.transaction():
            second_id = await outbox.publish(other, ch, "t2")
        assert first_id < second_id
        await until(lambda: outbox.delivered == 1, "T2 delivered while T1 is open")
        await t1.commit()
    finally:
        await other.close()
    await settled(outbox, db)
    assert await channel_data(hub, ch) == [(1, "t2"), (2, "t1")]


async def test_a_row_published_before_a_crash_is_not_delivered_twice(
    hub: Hub, db: asyncpg.Connection
) -> None:
    """The relay publishes, then deletes: a node that died in between leaves the row, and
    the next relay's publish of it is recognised by its idempotency key."""
    outbox = await outbox_of(hub, db)
    await outbox.stop()
    ch = "orders:" + secrets.token_hex(3)
    async with db.transaction():
        row_id = await outbox.publish(db, ch, {"n": 1})
    # what the dead node's relay did before dying: published the row, did not delete it
    await hub.node.publish(ch, b'{"n":1}', idempotency_key=f"outbox:{outbox.table}:{row_id}")
    await outbox.start()
    await settled(outbox, db)
    assert await channel_data(hub, ch) == [(1, {"n": 1})]


async def test_refused_rows_are_dropped_and_do_not_block_the_next(hub: Hub, db: asyncpg.Connection) -> None:
    outbox = await outbox_of(hub, db)
    ch = "orders:" + secrets.token_hex(3)
    async with db.transaction():
        await outbox.publish(db, "nosuchnamespace:x", 1)
        await outbox.publish(db, ch, 2)
    await settled(outbox, db)
    assert outbox.dropped == 1
    assert await channel_data(hub, ch) == [(1, 2)]


async def test_one_relay_per_table_and_another_takes_over(hub: Hub, db: asyncpg.Connection) -> None:
    first = await outbox_of(hub, db)
    second = TransactionalOutbox(hub.node, POSTGRES_URL, table=first.table, poll_interval=0.1)
    await second.start()
    try:
        await asyncio.sleep(0.5)
        assert first.relaying and not second.relaying
        await first.stop()  # its session ends: the lock is free
        await until(lambda: second.relaying, "the second relay took over")
        ch = "orders:" + secrets.token_hex(3)
        async with db.transaction():
            await second.publish(db, ch, "after")
        await settled(second, db)
        assert await channel_data(hub, ch) == [(1, "after")]
    finally:
        await second.stop()


def test_table_names_are_checked() -> None:
    with pytest.raises(ValueError):
        TransactionalOutbox(None, "postgresql://x", table="bad; drop")  # type: ignore[arg-type]
