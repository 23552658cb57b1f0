"""Redis-only behaviour the contract cannot express: several nodes, connection loss,
lost history, an unreachable server, shards and presence expiry. Real Redis only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from livehub.engines.base import EngineUnavailable, HistoryOptions, PublishOptions
from livehub.engines.redis import (
    POOL_SIZE,
    RedisBroker,
    RedisConfig,
    RedisPresenceManager,
    from_url,
    shard_index,
)
from livehub.engines.redis_pubsub import PubSubConnection
from livehub.models import ClientInfo, StreamPosition

from .contract import (
    ALL,
    HISTORY,
    REDIS_URL,
    Recorder,
    channel_name,
    delete_redis_keys,
    offsets,
    require_service,
    unique_prefix,
)

ALICE = ClientInfo("alice", "c1", b'{"name":"A"}')


class Node:
    """One livehub node's engine side: a broker with its own recorder."""

    def __init__(self, broker: RedisBroker, presence: RedisPresenceManager) -> None:
        self.broker, self.presence, self.handler = broker, presence, Recorder()

    async def close(self) -> None:
        await self.broker.close()
        await self.presence.close()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_service(REDIS_URL, "Redis")
    prefix = unique_prefix()
    yield prefix
    await delete_redis_keys([f"{REDIS_URL}/0", f"{REDIS_URL}/1", f"{REDIS_URL}/2"], prefix)


@pytest.fixture
async def nodes(prefix: str) -> AsyncIterator[list[Node]]:
    """Two nodes on the same Redis, as two livehub processes would be."""
    started = [Node(*from_url(f"{REDIS_URL}/0?prefix={prefix}")) for _ in range(2)]
    for node in started:
        await node.broker.start(node.handler)
    yield started
    for node in started:
        await node.close()


@pytest.fixture
async def admin() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(f"{REDIS_URL}/0")
    yield client
    await client.aclose()


async def test_two_nodes_see_each_others_publications_in_offset_order(nodes: list[Node]) -> None:
    a, b = nodes
    ch = channel_name()
    await a.broker.subscribe(ch)
    await b.broker.subscribe(ch)

    async def publish_from(node: Node, tag: str) -> None:
        for i in range(25):
            await node.broker.publish(ch, f'"{tag}{i}"'.encode(), HISTORY)

    await asyncio.gather(publish_from(a, "a"), publish_from(b, "b"))
    for node in nodes:
        await node.handler.wait_count(ch, 50)
        assert offsets(node.handler.pubs(ch)) == list(range(1, 51))
        assert [sp.offset for sp in node.handler.positions] == list(range(1, 51))
    assert [p.data for p in a.handler.pubs(ch)] == [p.data for p in b.handler.pubs(ch)]
    for tag in ("a", "b"):  # each publisher's own order is kept
        mine = [p.data for p in a.handler.pubs(ch) if p.data.startswith(f'"{tag}'.encode())]
        assert mine == [f'"{tag}{i}"'.encode() for i in range(25)]
    pubs, top = await a.broker.history(ch, HistoryOptions(limit=-1))
    assert offsets(pubs) == list(range(41, 51))  # history_size 10
    assert top.offset == 50


async def test_a_burst_of_commands_past_the_pool_waits_its_turn_instead_of_failing(nodes: list[Node]) -> None:
    """A reconnect storm subscribes thousands of clients at once: commands beyond the pool's
    connections queue for one (within their deadline) instead of failing with error 100."""
    a = nodes[0]
    channels = [channel_name() for _ in range(3 * POOL_SIZE)]
    results = await asyncio.gather(
        *(a.broker.history(ch, HistoryOptions(limit=0)) for ch in channels), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []


async def test_join_leave_and_deltas_cross_nodes(nodes: list[Node]) -> None:
    a, b = nodes
    ch = channel_name()
    await b.broker.subscribe(ch)
    await a.broker.publish_join(ch, ALICE)
    await a.broker.publish_leave(ch, ALICE)
    opts = PublishOptions(history_size=10, history_ttl=60.0, use_delta=True)
    await a.broker.publish(ch, b'{"v":1}', opts)
    await a.broker.publish(ch, b'{"v":2}', opts)
    await b.handler.wait_count(ch, 4)
    assert [e[0] for e in b.handler.of(ch)] == ["join", "leave", "pub", "pub"]
    prev = b.handler.prevs[1]
    assert prev is not None and (prev.offset, prev.data) == (1, b'{"v":1}')


async def test_pubsub_resubscribes_after_the_connection_is_killed(
    nodes: list[Node], admin: aioredis.Redis
) -> None:
    a, b = nodes
    ch = channel_name()
    await b.broker.subscribe(ch)
    await a.broker.publish(ch, b"1", HISTORY)
    await b.handler.wait_count(ch, 1)

    pubsub = b.broker.pubsubs[0]
    assert isinstance(pubsub, PubSubConnection)
    clients = await admin.client_list()
    [victim] = [c for c in clients if c["name"] == pubsub.name]
    await admin.client_kill_filter(_id=victim["id"])

    key = f"{a.broker.config.prefix}:pub:{{{ch}}}"
    async with asyncio.timeout(5):  # reconnected with backoff and subscribed again by itself
        while pubsub.connects < 2 or (await admin.pubsub_numsub(key))[0][1] < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    sp, _ = await a.broker.publish(ch, b"2", HISTORY)
    await b.handler.wait_count(ch, 2)
    assert b.handler.pubs(ch)[-1].data == b"2"
    assert b.handler.positions[-1] == sp


async def test_lost_history_starts_a_new_epoch(nodes: list[Node], prefix: str, admin: aioredis.Redis) -> None:
    a, _ = nodes
    ch = channel_name()
    sp, _ = await a.broker.publish(ch, b"1", HISTORY)
    await a.broker.publish(ch, b"2", HISTORY)
    await delete_redis_keys([f"{REDIS_URL}/0"], prefix)  # like FLUSHDB, for this test's keys only
    pubs, top = await a.broker.history(ch, ALL)
    assert pubs == [] and top.offset == 0 and top.epoch != sp.epoch
    again, _ = await a.broker.publish(ch, b"3", HISTORY)
    assert again == StreamPosition(1, top.epoch)


async def test_lost_meta_drops_the_old_streams_entries(
    nodes: list[Node], prefix: str, admin: aioredis.Redis
) -> None:
    a, _ = nodes
    ch = channel_name()
    first, _ = await a.broker.publish(ch, b"1", HISTORY)
    await a.broker.publish(ch, b"2", HISTORY)
    await admin.delete(f"{prefix}:meta:{{{ch}}}")
    sp, _ = await a.broker.publish(ch, b"new", HISTORY)
    assert sp.offset == 1 and sp.epoch != first.epoch
    pubs, _ = await a.broker.history(ch, ALL)
    assert [(p.offset, p.data) for p in pubs] == [(1, b"new")]


async def test_unreachable_redis_fails_fast() -> None:
    broker, presence = from_url("redis://127.0.0.1:1/0?prefix=unreachable")
    handler = Recorder()
    started = time.monotonic()
    await broker.start(handler)  # does not fail: it keeps retrying in the background
    assert time.monotonic() - started < 2.0
    try:
        calls = [
            broker.publish("ch", b"1", HISTORY),
            broker.publish("ch", b"1", PublishOptions()),
            broker.history("ch", ALL),
            broker.publish_join("ch", ALICE),
            broker.subscribe("ch"),
            broker.publish_control(b"x"),
            presence.add_presence("ch", "c1", ALICE),
            presence.refresh_presence([("ch", "c1", ALICE)]),
            presence.presence("ch"),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(EngineUnavailable):
                await call
            assert time.monotonic() - started < 2.0
    finally:
        await broker.close()
        await presence.close()


async def test_silent_server_times_out(prefix: str) -> None:
    """A server that accepts connections but never answers: io_timeout, not a hang."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 20)
        await asyncio.sleep(10)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    broker, presence = from_url(f"redis://127.0.0.1:{port}/0?prefix={prefix}&io_timeout=300ms")
    try:
        started = time.monotonic()
        with pytest.raises(EngineUnavailable):
            await broker.publish("ch", b"1", HISTORY)
        assert time.monotonic() - started < 2.0
    finally:
        await broker.close()
        await presence.close()
        server.close()


def test_shard_index_is_pinned() -> None:
    """Jump consistent hash of FNV-1a 64: changing it would move channels' history to
    other shards on upgrade, so these values are fixed."""
    names = ("news", "chat:1", "#42", "a", "b", "c")
    assert [shard_index(c, 2) for c in names] == [1, 0, 1, 1, 0, 0]
    assert [shard_index(c, 4) for c in names] == [3, 0, 1, 2, 3, 0]
    assert [shard_index(c, 16) for c in names] == [3, 15, 11, 12, 3, 15]
    assert shard_index("news", 1) == 0


def test_shard_index_spreads_and_is_consistent() -> None:
    channels = [f"channel-{i}" for i in range(2000)]
    two = [shard_index(c, 2) for c in channels]
    assert 0.4 < sum(two) / len(two) < 0.6
    three = [shard_index(c, 3) for c in channels]
    moved = [(x, y) for x, y in zip(two, three, strict=True) if x != y]
    assert all(y == 2 for _, y in moved)  # growing 2 -> 3 only moves channels to the new shard
    assert 0.25 < len(moved) / len(channels) < 0.42


async def test_channels_live_on_their_shard(prefix: str) -> None:
    urls = f"{REDIS_URL}/1?prefix={prefix},{REDIS_URL}/2"
    broker, presence = from_url(urls)
    assert len(broker.pubsubs) == 2
    await broker.start(Recorder())
    dbs = [aioredis.Redis.from_url(f"{REDIS_URL}/{db}") for db in (1, 2)]
    try:
        channels = [channel_name() for _ in range(16)]
        for ch in channels:
            await broker.publish(ch, b"1", HISTORY)
        for ch in channels:
            home = shard_index(ch, 2)
            meta = f"{prefix}:meta:{{{ch}}}"
            assert [await db.exists(meta) for db in dbs] == [home == 0, home == 1]
        assert {shard_index(ch, 2) for ch in channels} == {0, 1}
    finally:
        await broker.close()
        await presence.close()
        for db in dbs:
            await db.aclose()


async def test_presence_of_a_dead_node_expires(prefix: str) -> None:
    broker, presence = from_url(f"{REDIS_URL}/0?prefix={prefix}&presence_ttl=1s")
    try:
        ch = channel_name()
        await presence.add_presence(ch, "c1", ALICE)
        await presence.add_presence(ch, "c2", ClientInfo("bob", "c2"))
        await asyncio.sleep(0.6)
        await presence.add_presence(ch, "c2", ClientInfo("bob", "c2"))  # c2's node is alive
        await asyncio.sleep(0.6)
        assert set(await presence.presence(ch)) == {"c2"}
        assert (await presence.presence_stats(ch)).num_clients == 1
    finally:
        await broker.close()
        await presence.close()


async def test_refreshed_presence_outlives_the_ttl_and_comes_back_after_a_loss(
    prefix: str, admin: aioredis.Redis
) -> None:
    """What a live node does every presence_update_interval: its clients stay, even after
    the presence keys were lost; entries it stopped refreshing (a dead node's) expire."""
    _, presence = from_url(f"{REDIS_URL}/0?prefix={prefix}&presence_ttl=1s")
    try:
        ch = channel_name()
        await presence.add_presence(ch, "c1", ALICE)
        await presence.add_presence(ch, "dead", ClientInfo("bob", "dead"))
        for _ in range(4):
            await asyncio.sleep(0.4)
            await presence.refresh_presence([(ch, "c1", ALICE)])
        assert set(await presence.presence(ch)) == {"c1"}
        await admin.delete(f"{prefix}:presence:{{{ch}}}", f"{prefix}:presence-exp:{{{ch}}}")
        await admin.script_flush()  # the pipeline must load its script again
        await presence.refresh_presence([(ch, "c1", ALICE)])
        assert await presence.presence(ch) == {"c1": ALICE}
    finally:
        await presence.close()


def test_config_from_url() -> None:
    config = RedisConfig.from_url(
        "rediss://:secret@h1:6380/3?prefix=app&presence_ttl=30s&io_timeout=500ms&ssl_cert_reqs=none,redis://h2"
    )
    assert config.prefix == "app" and config.presence_ttl == 30.0 and config.io_timeout == 0.5
    assert config.urls == ("rediss://:secret@h1:6380/3?ssl_cert_reqs=none", "redis://h2")
    with pytest.raises(ValueError, match="presence_ttl"):
        RedisConfig.from_url("redis://h?presence_ttl=soon")
    with pytest.raises(ValueError, match="cluster=1 takes one URL"):
        RedisConfig.from_url("redis://h1?cluster=1,redis://h2")
