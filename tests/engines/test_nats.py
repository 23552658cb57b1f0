"""NATS-only behaviour the contract cannot express: several nodes racing on one
channel, awkward channel names, a lost meta, an unreachable server. Real NATS only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest

from livehub.engines.base import EngineUnavailable, PublishOptions
from livehub.engines.nats import NatsBroker, NatsConfig, delete_streams, escape, from_url
from livehub.models import ClientInfo, StreamPosition

from .contract import ALL, HISTORY, NATS_URL, Recorder, channel_name, offsets, require_service, unique_prefix


class Node:
    def __init__(self, broker: NatsBroker) -> None:
        self.broker, self.handler = broker, Recorder()


@pytest.fixture
async def url() -> AsyncIterator[str]:
    require_service(NATS_URL, "NATS")
    url = f"{NATS_URL}?prefix={unique_prefix()}&storage=memory"
    yield url
    await delete_streams(url)


@pytest.fixture
async def nodes(url: str) -> AsyncIterator[list[Node]]:
    started = [Node(from_url(url)[0]) for _ in range(3)]
    for node in started:
        await node.broker.start(node.handler)
    yield started
    for node in started:
        await node.broker.close()


async def test_racing_nodes_get_strictly_consecutive_offsets_in_order(nodes: list[Node]) -> None:
    ch = channel_name()
    for node in nodes:
        await node.broker.subscribe(ch)

    async def publish_from(node: Node, tag: str) -> list[StreamPosition]:
        return [(await node.broker.publish(ch, f'"{tag}{i}"'.encode(), HISTORY))[0] for i in range(15)]

    results = await asyncio.gather(*(publish_from(node, str(i)) for i, node in enumerate(nodes)))
    returned = sorted(sp.offset for sps in results for sp in sps)
    assert returned == list(range(1, 46))  # every publish got its own offset, none skipped
    for node in nodes:
        await node.handler.wait_count(ch, 45)
        assert offsets(node.handler.pubs(ch)) == list(range(1, 46))  # delivered in offset order
    assert [p.data for p in nodes[0].handler.pubs(ch)] == [p.data for p in nodes[2].handler.pubs(ch)]
    pubs, top = await nodes[1].broker.history(ch, ALL)
    assert offsets(pubs) == list(range(36, 46)) and top.offset == 45


async def test_channel_names_that_are_not_subject_tokens(nodes: list[Node]) -> None:
    a, b, _ = nodes
    names = ["a.b", "news:*", "x>", "with space", "ünïcode/€", "=41", "A"]
    assert len({escape(n) for n in names}) == len(names)
    for ch in names:
        await b.broker.subscribe(ch)
        await a.broker.publish(ch, ch.encode(), HISTORY)
        await a.broker.publish_join(ch, ClientInfo("u", "c"))
    for ch in names:
        await b.handler.wait_count(ch, 2)
        [pub] = b.handler.pubs(ch)
        assert pub.data == ch.encode() and pub.offset == 1
        pubs, _ = await a.broker.history(ch, ALL)
        assert [p.data for p in pubs] == [ch.encode()]


async def test_lost_meta_starts_a_new_epoch_and_drops_old_messages(nodes: list[Node], url: str) -> None:
    a = nodes[0]
    ch = channel_name()
    first, _ = await a.broker.publish(ch, b"1", HISTORY)
    await a.broker.publish(ch, b"2", HISTORY)
    config = NatsConfig.from_url(url)
    nc = await nats.connect(NATS_URL)
    try:
        kv = await nc.jetstream().key_value(config.meta_bucket)
        await kv.delete(escape(ch))
    finally:
        await nc.close()
    pubs, top = await a.broker.history(ch, ALL)
    assert pubs == [] and top.offset == 0 and top.epoch != first.epoch
    sp, _ = await a.broker.publish(ch, b"new", HISTORY)
    assert sp == StreamPosition(1, top.epoch)
    pubs, _ = await a.broker.history(ch, ALL)
    assert [(p.offset, p.data) for p in pubs] == [(1, b"new")]


async def test_idempotent_publish_across_nodes(nodes: list[Node]) -> None:
    a, b, _ = nodes
    ch = channel_name()
    opts = PublishOptions(history_size=10, history_ttl=60.0, idempotency_key="once")
    first, dup1 = await a.broker.publish(ch, b"1", opts)
    again, dup2 = await b.broker.publish(ch, b"1", opts)
    assert (dup1, dup2) == (False, True) and again == first


async def test_unreachable_nats_fails_fast() -> None:
    broker, presence = from_url("nats://127.0.0.1:1?prefix=unreachable")
    started = time.monotonic()
    await broker.start(Recorder())
    assert time.monotonic() - started < 2.0
    try:
        for call in (
            broker.publish("ch", b"1", HISTORY),
            broker.publish("ch", b"1", PublishOptions()),
            broker.history("ch", ALL),
            broker.subscribe("ch"),
            broker.publish_leave("ch", ClientInfo("u", "c")),
            broker.publish_control(b"x"),
            presence.add_presence("ch", "c1", ClientInfo("u", "c1")),
            presence.refresh_presence([("ch", "c1", ClientInfo("u", "c1"))]),
            presence.remove_presence("ch", "c1", "u"),
            presence.presence("ch"),
            presence.presence_stats("ch"),
        ):
            started = time.monotonic()
            with pytest.raises(EngineUnavailable):
                await call
            assert time.monotonic() - started < 2.0
    finally:
        await broker.close()


def test_config_from_url() -> None:
    config = NatsConfig.from_url("nats://h1:4222?prefix=app&history_size=50&history_ttl=1h,nats://h2:4222")
    assert config.servers == ("nats://h1:4222", "nats://h2:4222")
    assert (config.prefix, config.history_size, config.history_ttl) == ("app", 50, 3600.0)
    assert (config.stream, config.meta_bucket) == ("app_history", "app_meta")
    assert (config.presence_bucket, config.presence_ttl) == ("app_presence", 60.0)
    assert NatsConfig.from_url("nats://h?presence_ttl=15s").presence_ttl == 15.0
    with pytest.raises(ValueError, match="prefix"):
        NatsConfig.from_url("nats://h?prefix=a.b")
    with pytest.raises(ValueError, match="storage"):
        NatsConfig.from_url("nats://h?storage=disk")


# -- presence (the contract checks two nodes and expiry; these check what is NATS-specific)


async def test_presence_keeps_awkward_channel_and_client_names(url: str) -> None:
    """Channel and client ids are escaped into KV key tokens and read back unescaped:
    dots, wildcards, ``=`` and non-ASCII must neither collide nor leak across channels."""
    broker, presence = from_url(url)
    await broker.start(Recorder())
    try:
        names = ["a.b", "a", "*", ">", "a=2Eb", "é ü", ""]
        for ch in names:
            for client in names:
                await presence.add_presence(ch, client or "=", ClientInfo(ch, client or "="))
        for ch in names:
            got = await presence.presence(ch)
            assert got == {client or "=": ClientInfo(ch, client or "=") for client in names}
    finally:
        await broker.close()


async def test_presence_of_many_clients_in_one_channel(url: str) -> None:
    """More entries than one refresh batch and than the watcher's queue (256) hold."""
    broker, presence = from_url(url)
    await broker.start(Recorder())
    try:
        ch = channel_name()
        entries = [(ch, f"c{i}", ClientInfo(f"u{i % 100}", f"c{i}")) for i in range(1200)]
        started = time.monotonic()
        await presence.refresh_presence(entries)
        clients = await presence.presence(ch)
        assert clients == {client: info for _, client, info in entries}
        stats = await presence.presence_stats(ch)
        assert (stats.num_clients, stats.num_users) == (1200, 100)
        assert time.monotonic() - started < 10.0
    finally:
        await broker.close()


async def test_the_presence_bucket_ttl_is_the_last_started_nodes(url: str) -> None:
    """One bucket, one TTL: a node started with another presence_ttl sets it for all."""
    first, _ = from_url(f"{url}&presence_ttl=30s")
    await first.start(Recorder())
    second, _ = from_url(f"{url}&presence_ttl=2s")
    try:
        nc = await nats.connect(NATS_URL)
        try:
            js = nc.jetstream()
            name = f"KV_{first.config.presence_bucket}"
            assert (await js.stream_info(name)).config.max_age == 30.0
            await second.start(Recorder())
            assert (await js.stream_info(name)).config.max_age == 2.0
        finally:
            await nc.close()
    finally:
        await first.close()
        await second.close()


async def test_concurrent_presence_reads_miss_nothing(url: str) -> None:
    """A hundred reads at once, each on its own short-lived consumer: every read returns
    its own channel's entry, nothing from the others and nothing missing."""
    broker, presence = from_url(url)
    await broker.start(Recorder())
    try:
        channels = [channel_name() for _ in range(100)]
        await presence.refresh_presence([(ch, "c1", ClientInfo(ch, "c1")) for ch in channels])
        for _ in range(3):
            results = await asyncio.gather(*(presence.presence(ch) for ch in channels))
            assert results == [{"c1": ClientInfo(ch, "c1")} for ch in channels]
    finally:
        await broker.close()
