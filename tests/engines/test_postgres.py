"""What the PostgreSQL engine does beyond the contract (tests/engines/contract.py): messages
larger than a NOTIFY payload, a LISTEN connection that is cut, a database that is not there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from livehub.engines.base import EngineUnavailable, HistoryOptions, PublishOptions
from livehub.engines.postgres import PostgresBroker, drop_tables, from_url
from livehub.models import ClientInfo

from .contract import HISTORY, POSTGRES_URL, Recorder, channel_name, require_service, unique_prefix


@pytest.fixture
async def engine() -> AsyncIterator[tuple[PostgresBroker, Recorder, str]]:
    require_service(POSTGRES_URL, "PostgreSQL")
    url = f"{POSTGRES_URL}?prefix={unique_prefix()}&ping_interval=200ms"
    broker, presence = from_url(url)
    recorder = Recorder()
    await broker.start(recorder)
    try:
        yield broker, recorder, url
    finally:
        await broker.close()
        await presence.close()
        await drop_tables(url)


async def test_a_publication_larger_than_a_notify_payload_is_read_back_by_id(
    engine: tuple[PostgresBroker, Recorder, str],
) -> None:
    broker, recorder, _ = engine
    ch = channel_name()
    await broker.subscribe(ch)
    big = b'"' + b"x" * 100_000 + b'"'
    await broker.publish(ch, b"1", HISTORY)
    await broker.publish(ch, big, HISTORY)
    await broker.publish(ch, b"3", HISTORY)
    await recorder.wait_count(ch, 3)
    assert [(p.offset, p.data) for p in recorder.pubs(ch)] == [(1, b"1"), (2, big), (3, b"3")]  # in order
    pubs, _ = await broker.history(ch, HistoryOptions(limit=-1))
    assert pubs[1].data == big


async def test_the_listen_connection_comes_back_after_it_is_cut(
    engine: tuple[PostgresBroker, Recorder, str],
) -> None:
    broker, recorder, url = engine
    ch = channel_name()
    await broker.subscribe(ch)
    prefix = broker.config.prefix
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        cut = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
            f'LISTEN "{prefix}"',
        )
        assert cut == 1
        deadline = time.monotonic() + 10
        while broker.listener.connects < 2 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert broker.listener.connects == 2
    finally:
        await admin.close()
    await broker.publish(ch, b"after", HISTORY)
    await recorder.wait_count(ch, 1)
    assert recorder.pubs(ch)[0].data == b"after"


async def test_an_unreachable_database_is_engine_unavailable_quickly() -> None:
    broker, presence = from_url(
        "postgresql://postgres@127.0.0.1:1/test?connect_timeout=300ms&io_timeout=300ms"
    )
    started = time.monotonic()
    with pytest.raises(EngineUnavailable):
        await broker.start(Recorder())
    with pytest.raises(EngineUnavailable):
        await presence.presence("x")
    assert time.monotonic() - started < 3
    await broker.close()
    await presence.close()


async def test_what_expired_is_deleted_at_the_presence_refresh(
    engine: tuple[PostgresBroker, Recorder, str],
) -> None:
    """Redis lets keys expire; here rows are deleted: stale history, idempotency results,
    streams and presence do not pile up in the tables."""
    broker, _, url = engine
    _, presence = from_url(url.replace("ping_interval", "presence_ttl=1s&ping_interval"))
    ch, p = channel_name(), broker.config.prefix
    opts = PublishOptions(
        history_size=10, history_ttl=1.0, history_meta_ttl=1.0, idempotency_key="k", idempotent_result_ttl=1.0
    )
    await broker.publish(ch, b"1", opts)
    await presence.add_presence(ch, "c1", ClientInfo("u", "c1"))
    await asyncio.sleep(1.3)
    await presence.refresh_presence([(ch, "c2", ClientInfo("u", "c2"))])
    db = await asyncpg.connect(POSTGRES_URL)
    try:
        for table in ("pub", "result", "stream"):
            assert await db.fetchval(f"SELECT count(*) FROM {p}_{table} WHERE channel = $1", ch) == 0, table
        clients = await db.fetch(f"SELECT client FROM {p}_presence WHERE channel = $1", ch)
        assert [r["client"] for r in clients] == ["c2"]
    finally:
        await db.close()
        await presence.close()
