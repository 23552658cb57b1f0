"""The one contract every engine (Broker + PresenceManager) must pass.

Engines are named in :data:`ENGINES` and built by :func:`make_engine`; a new engine
(Redis, NATS) joins by adding its name there and a branch in ``make_engine`` -- the
tests in :class:`BrokerContract` and :class:`PresenceContract` do not change.

Nothing here assumes delivery is synchronous: events are awaited with a bounded
timeout, and "nothing was delivered" is checked by publishing a marker on a channel
that *is* subscribed and waiting for it, so the assertion holds for networked engines.
Time is moved with :meth:`Engine.advance`: a fake clock for engines that accept one,
a real (short, bounded) sleep for those that do not.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from livehub.engines.base import Broker, HistoryOptions, PresenceManager, PublishOptions
from livehub.models import ClientInfo, PresenceStats, Publication, StreamPosition

ENGINES = ["memory", "redis", "redis-shards", "redis-cluster", "nats", "postgres"]

#: The real services the networked engines are tested against (``scripts/services.sh``).
REDIS_URL = os.environ.get("LIVEHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379")
NATS_URL = os.environ.get("LIVEHUB_TEST_NATS_URL", "nats://127.0.0.1:4222")
POSTGRES_URL = os.environ.get("LIVEHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

#: The presence TTL of the nodes that test presence expiry, seconds.
PRESENCE_TTL = 1.0

#: How long to wait for an event the engine must deliver.
DELIVERY_TIMEOUT = 2.0

HISTORY = PublishOptions(history_size=10, history_ttl=300.0)
NO_HISTORY = PublishOptions()
ALL = HistoryOptions(limit=-1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """A BrokerEventHandler that records every callback, in order."""

    events: list[tuple[str, str, object]] = field(default_factory=list)
    positions: list[StreamPosition] = field(default_factory=list)
    prevs: list[Publication | None] = field(default_factory=list)
    controls: list[bytes] = field(default_factory=list)

    def handle_publication(
        self, channel: str, pub: Publication, sp: StreamPosition, prev: Publication | None
    ) -> None:
        self.events.append(("pub", channel, pub))
        self.positions.append(sp)
        self.prevs.append(prev)

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        self.events.append(("join", channel, info))

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        self.events.append(("leave", channel, info))

    def handle_control(self, data: bytes) -> None:
        self.controls.append(data)

    def pubs(self, channel: str) -> list[Publication]:
        return [e[2] for e in self.events if e[0] == "pub" and e[1] == channel]  # type: ignore[misc]

    def of(self, channel: str) -> list[tuple[str, str, object]]:
        return [e for e in self.events if e[1] == channel]

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` is true, at most DELIVERY_TIMEOUT seconds."""
        try:
            async with asyncio.timeout(DELIVERY_TIMEOUT):
                while not condition():  # noqa: ASYNC110 -- polls state that has no event to wait on
                    await asyncio.sleep(0.001)
        except TimeoutError:
            raise AssertionError(f"timed out; events so far: {self.events!r}") from None

    async def wait_count(self, channel: str, n: int) -> None:
        await self.wait_for(lambda: len(self.of(channel)) >= n)


@dataclass
class Peer:
    """Another node on the same engine (same store and prefix), started."""

    broker: Broker
    presence: PresenceManager
    handler: Recorder

    async def close(self) -> None:
        """Leaves the store as it is, like a node that stops (or dies)."""
        await self.broker.close()
        await self.presence.close()


@dataclass
class Engine:
    name: str
    broker: Broker
    presence: PresenceManager
    handler: Recorder
    clock: FakeClock | None = None
    #: Removes what the engine left in a shared store (keys, streams) after the test.
    cleanup: Callable[[], Awaitable[None]] | None = None
    #: Builds another node's broker and presence manager on the same store, given extra
    #: URL options such as ``presence_ttl=1s`` (None: a single-process engine).
    make_peer: Callable[[str], tuple[Broker, PresenceManager]] | None = None

    async def peer(self, options: str = "") -> Peer | None:
        """Another node on the same engine, started; the caller closes it."""
        if self.make_peer is None:
            return None
        peer = Peer(*self.make_peer(options), Recorder())
        await peer.broker.start(peer.handler)
        return peer

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the engine's TTLs."""
        if self.clock is not None:
            self.clock.now += seconds
        else:
            await asyncio.sleep(seconds)

    async def close(self) -> None:
        try:
            await self.broker.close()
            await self.presence.close()
        finally:
            if self.cleanup is not None:
                await self.cleanup()


def require_service(url: str, what: str) -> None:
    """Fail (never skip) with a clear message when a service the tests need is down."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 0
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError as exc:
        raise AssertionError(
            f"{what} is not reachable at {host}:{port} ({exc}); start it with `bash scripts/services.sh`"
        ) from None


def unique_prefix() -> str:
    """A key / subject prefix of one test, so concurrent runs on one server never collide."""
    return "lhtest" + secrets.token_hex(5)


def redis_urls(name: str, prefix: str, options: str = "") -> list[str]:
    """``redis``: one URL (DB 0); ``redis-shards``: two shards, DBs 1 and 2 of the same server."""
    dbs = ["1", "2"] if name == "redis-shards" else ["0"]
    return [with_options(f"{REDIS_URL}/{db}?prefix={prefix}", options) for db in dbs]


def with_options(url: str, options: str) -> str:
    """``url`` (which has a query already) with the extra ``options`` query appended."""
    return f"{url}&{options}" if options else url


async def delete_redis_keys(urls: list[str], prefix: str) -> None:
    import redis.asyncio as aioredis

    for url in urls:
        client = aioredis.Redis.from_url(url.split("?")[0])
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


async def make_engine(name: str, cluster_url: str = "") -> Engine:
    """Build and start a fresh engine; every test gets its own. ``redis-cluster`` needs
    the URL of the cluster the ``redis_cluster`` fixture (conftest.py) started."""
    recorder = Recorder()
    if name == "memory":
        from livehub.engines.memory import MemoryBroker, MemoryPresenceManager

        clock = FakeClock()
        engine = Engine(name, MemoryBroker(clock=clock), MemoryPresenceManager(), recorder, clock)
    elif name in ("redis", "redis-shards"):
        from livehub.engines.redis import from_url as redis_engine

        require_service(REDIS_URL, "Redis")
        prefix = unique_prefix()
        urls = redis_urls(name, prefix)
        engine = Engine(
            name,
            *redis_engine(urls),
            recorder,
            cleanup=lambda: delete_redis_keys(urls, prefix),
            make_peer=lambda options: redis_engine(redis_urls(name, prefix, options)),
        )
    elif name == "redis-cluster":
        from livehub.engines.redis import from_url as redis_engine

        url = f"{cluster_url}?cluster=1&prefix={unique_prefix()}"
        engine = Engine(
            name,
            *redis_engine(url),
            recorder,
            make_peer=lambda options: redis_engine(with_options(url, options)),
        )
    elif name == "nats":
        from livehub.engines.nats import delete_streams
        from livehub.engines.nats import from_url as nats_engine

        require_service(NATS_URL, "NATS")
        prefix = unique_prefix()
        url = f"{NATS_URL}?prefix={prefix}&storage=memory"
        engine = Engine(
            name,
            *nats_engine(url),
            recorder,
            cleanup=lambda: delete_streams(url),
            make_peer=lambda options: nats_engine(with_options(url, options)),
        )
    elif name == "postgres":
        from livehub.engines.postgres import drop_tables
        from livehub.engines.postgres import from_url as postgres_engine

        require_service(POSTGRES_URL, "PostgreSQL")
        url = f"{POSTGRES_URL}?prefix={unique_prefix()}"
        engine = Engine(
            name,
            *postgres_engine(url),
            recorder,
            cleanup=lambda: drop_tables(url),
            make_peer=lambda options: postgres_engine(with_options(url, options)),
        )
    else:
        raise ValueError(f"unknown engine {name!r}")
    await engine.broker.start(recorder)
    return engine


def channel_name() -> str:
    """Unique per test, so engines with shared state (a Redis server) do not interfere."""
    return "contract-" + secrets.token_hex(6)


def offsets(pubs: list[Publication]) -> list[int]:
    return [p.offset for p in pubs]


async def publish_n(broker: Broker, channel: str, n: int, opts: PublishOptions = HISTORY) -> None:
    for i in range(1, n + 1):
        await broker.publish(channel, f'{{"n":{i}}}'.encode(), opts)


async def settle(engine: Engine, subscribed_channel: str) -> None:
    """Publish a marker to a subscribed channel and wait for it: whatever was sent before
    it and would have been delivered has been delivered by then."""
    before = len(engine.handler.pubs(subscribed_channel))
    await engine.broker.publish(subscribed_channel, b'"marker"', NO_HISTORY)
    # wait for the marker itself: with a networked engine, earlier publications may
    # still be arriving when the marker is sent
    await engine.handler.wait_for(
        lambda: b'"marker"' in [p.data for p in engine.handler.pubs(subscribed_channel)[before:]]
    )


class BrokerContract:
    # -- the stream: offsets and epoch

    async def test_offsets_start_at_one_and_grow_by_one(self, engine: Engine) -> None:
        ch = channel_name()
        positions = [(await engine.broker.publish(ch, b"1", HISTORY))[0] for _ in range(5)]
        assert [sp.offset for sp in positions] == [1, 2, 3, 4, 5]
        assert positions[0].epoch
        assert {sp.epoch for sp in positions} == {positions[0].epoch}
        pubs, top = await engine.broker.history(ch, ALL)
        assert offsets(pubs) == [1, 2, 3, 4, 5]
        assert top == positions[-1]

    async def test_streams_are_per_channel(self, engine: Engine) -> None:
        a, b = channel_name(), channel_name()
        await publish_n(engine.broker, a, 3)
        sp, _ = await engine.broker.publish(b, b"1", HISTORY)
        assert sp.offset == 1
        _, top_a = await engine.broker.history(a, HistoryOptions())
        assert top_a.offset == 3
        assert top_a.epoch != sp.epoch

    async def test_publication_fields_are_kept(self, engine: Engine) -> None:
        ch = channel_name()
        info = ClientInfo("42", "c1", b'{"name":"A"}', b'{"role":"x"}')
        opts = PublishOptions(history_size=10, history_ttl=300.0, info=info, tags={"k": "v"}, key="AAPL")
        await engine.broker.publish(ch, b'{"text":"hi"}', opts)
        [pub], _ = await engine.broker.history(ch, ALL)
        assert pub.data == b'{"text":"hi"}'
        assert pub.offset == 1
        assert pub.info == info
        assert pub.tags == {"k": "v"}
        assert pub.key == "AAPL"
        assert abs(pub.time - time.time() * 1000) < 60_000

    async def test_history_on_a_channel_without_stream_creates_one(self, engine: Engine) -> None:
        ch = channel_name()
        pubs, top = await engine.broker.history(ch, ALL)
        assert pubs == []
        assert top.offset == 0 and top.epoch
        _, again = await engine.broker.history(ch, HistoryOptions())
        assert again == top
        sp, _ = await engine.broker.publish(ch, b"1", HISTORY)
        assert sp == StreamPosition(1, top.epoch)

    # -- history reads (spec §3 "history")

    async def test_history_limit_zero_returns_only_the_top(self, engine: Engine) -> None:
        ch = channel_name()
        await publish_n(engine.broker, ch, 3)
        pubs, top = await engine.broker.history(ch, HistoryOptions(limit=0))
        assert pubs == []
        assert top.offset == 3

    async def test_history_limit_minus_one_returns_everything(self, engine: Engine) -> None:
        ch = channel_name()
        await publish_n(engine.broker, ch, 7)
        pubs, _ = await engine.broker.history(ch, HistoryOptions(limit=-1))
        assert offsets(pubs) == [1, 2, 3, 4, 5, 6, 7]
        assert [p.data for p in pubs] == [f'{{"n":{i}}}'.encode() for i in range(1, 8)]

    async def test_history_limit_n_returns_the_oldest_n(self, engine: Engine) -> None:
        ch = channel_name()
        await publish_n(engine.broker, ch, 5)
        pubs, top = await engine.broker.history(ch, HistoryOptions(limit=2))
        assert offsets(pubs) == [1, 2]
        assert top.offset == 5
        pubs, _ = await engine.broker.history(ch, HistoryOptions(limit=10))
        assert offsets(pubs) == [1, 2, 3, 4, 5]

    async def test_history_reverse_returns_newest_first(self, engine: Engine) -> None:
        ch = channel_name()
        await publish_n(engine.broker, ch, 5)
        pubs, _ = await engine.broker.history(ch, HistoryOptions(limit=-1, reverse=True))
        assert offsets(pubs) == [5, 4, 3, 2, 1]
        pubs, _ = await engine.broker.history(ch, HistoryOptions(limit=2, reverse=True))
        assert offsets(pubs) == [5, 4]

    async def test_history_since_forward(self, engine: Engine) -> None:
        ch = channel_name()
        await publish_n(engine.broker, ch, 9)
        _, top = await engine.broker.history(ch, HistoryOptions())
        since = StreamPosition(3, top.epoch)
        pubs, sp = await engine.broker.history(ch, HistoryOptions(limit=2, since=since))
        assert offsets(pubs) == [4, 5]
        assert sp == top
        pubs, _ = await engine.broker.history(ch, HistoryOptions(limit=-1, since=since))
        assert offsets(pubs) == [4, 5, 6, 7, 8, 9]
        pubs, _ = await engine.broker.history(ch, HistoryOptions(limit=-1, since=StreamPosition(9, "")))
        assert pubs == []
        pubs, _ = await engine.broker.history(ch, HistoryOptions(limit=-1, since=StreamPosition(0, "")))
        assert offsets(pubs) == list(range(1, 10))

    async def test_history_since_reverse(self, engine: Engine) -> None:
        ch = channel_name()
        await publish_n(engine.broker, ch, 9)
        since = StreamPosition(5, "")
        pubs, _ = await engine.broker.history(ch, HistoryOptions(limit=-1, since=since, reverse=True))
        assert offsets(pubs) == [4, 3, 2, 1]
        pubs, _ = await engine.broker.history(ch, HistoryOptions(limit=2, since=since, reverse=True))
        assert offsets(pubs) == [4, 3]
        pubs, _ = await engine.broker.history(
            ch, HistoryOptions(limit=-1, since=StreamPosition(1, ""), reverse=True)
        )
        assert pubs == []
        pubs, _ = await engine.broker.history(
            ch, HistoryOptions(limit=-1, since=StreamPosition(100, ""), reverse=True)
        )
        assert offsets(pubs) == [9, 8, 7, 6, 5, 4, 3, 2, 1]

    # -- retention

    async def test_history_keeps_only_the_last_history_size(self, engine: Engine) -> None:
        ch = channel_name()
        await publish_n(engine.broker, ch, 5, PublishOptions(history_size=3, history_ttl=300.0))
        pubs, top = await engine.broker.history(ch, ALL)
        assert offsets(pubs) == [3, 4, 5]
        assert top.offset == 5
        pubs, _ = await engine.broker.history(ch, HistoryOptions(limit=-1, since=StreamPosition(1, "")))
        assert offsets(pubs) == [3, 4, 5]

    async def test_history_expires_after_ttl_but_the_top_stays(self, engine: Engine) -> None:
        ch = channel_name()
        opts = PublishOptions(history_size=10, history_ttl=1.0)
        await publish_n(engine.broker, ch, 2, opts)
        _, before = await engine.broker.history(ch, HistoryOptions())
        await engine.advance(1.5)
        pubs, top = await engine.broker.history(ch, ALL)
        assert pubs == []
        assert top == before == StreamPosition(2, before.epoch)
        sp, _ = await engine.broker.publish(ch, b"3", opts)
        assert sp == StreamPosition(3, before.epoch)

    async def test_ttl_expires_older_publications_only(self, engine: Engine) -> None:
        ch = channel_name()
        opts = PublishOptions(history_size=10, history_ttl=2.0)
        await publish_n(engine.broker, ch, 2, opts)
        await engine.advance(1.2)
        await engine.broker.publish(ch, b"3", opts)
        await engine.advance(1.2)
        pubs, top = await engine.broker.history(ch, ALL)
        assert offsets(pubs) == [3]
        assert top.offset == 3

    async def test_stream_meta_expiry_starts_a_new_epoch(self, engine: Engine) -> None:
        ch = channel_name()
        opts = PublishOptions(history_size=10, history_ttl=1.0, history_meta_ttl=2.0)
        sp, _ = await engine.broker.publish(ch, b"1", opts)
        await engine.advance(3.0)
        pubs, top = await engine.broker.history(ch, HistoryOptions(limit=-1, history_meta_ttl=2.0))
        assert pubs == []
        assert top.offset == 0
        assert top.epoch and top.epoch != sp.epoch

    async def test_remove_history_keeps_top_and_epoch(self, engine: Engine) -> None:
        ch = channel_name()
        await publish_n(engine.broker, ch, 3)
        _, before = await engine.broker.history(ch, HistoryOptions())
        await engine.broker.remove_history(ch)
        pubs, after = await engine.broker.history(ch, ALL)
        assert pubs == []
        assert after == before
        sp, _ = await engine.broker.publish(ch, b"4", HISTORY)
        assert sp == StreamPosition(4, before.epoch)

    async def test_remove_history_of_unknown_channel_is_harmless(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.broker.remove_history(ch)
        sp, _ = await engine.broker.publish(ch, b"1", HISTORY)
        assert sp.offset == 1

    # -- publications without history

    async def test_publication_without_history_has_offset_zero_and_is_delivered(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.broker.subscribe(ch)
        sp, duplicate = await engine.broker.publish(ch, b'{"x":1}', NO_HISTORY)
        assert sp.offset == 0
        assert not duplicate
        await engine.handler.wait_count(ch, 1)
        [pub] = engine.handler.pubs(ch)
        assert pub.data == b'{"x":1}' and pub.offset == 0
        pubs, top = await engine.broker.history(ch, ALL)
        assert pubs == [] and top.offset == 0

    # -- delivery to the node

    async def test_delivery_in_order_with_positions(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.broker.subscribe(ch)
        positions = [(await engine.broker.publish(ch, str(i).encode(), HISTORY))[0] for i in range(1, 21)]
        await engine.handler.wait_count(ch, 20)
        pubs = engine.handler.pubs(ch)
        assert [p.data for p in pubs] == [str(i).encode() for i in range(1, 21)]
        assert offsets(pubs) == list(range(1, 21))
        assert engine.handler.positions == positions

    async def test_delivered_publication_carries_info_and_tags(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.broker.subscribe(ch)
        info = ClientInfo("7", "c7", b'{"a":1}')
        await engine.broker.publish(ch, b"1", PublishOptions(info=info, tags={"t": "1"}, key="k"))
        await engine.handler.wait_count(ch, 1)
        [pub] = engine.handler.pubs(ch)
        assert pub.info == info and pub.tags == {"t": "1"} and pub.key == "k"

    async def test_only_subscribed_channels_are_delivered(self, engine: Engine) -> None:
        watched, other = channel_name(), channel_name()
        await engine.broker.subscribe(watched)
        await engine.broker.publish(other, b"1", HISTORY)
        await engine.broker.publish(other, b"2", NO_HISTORY)
        await engine.broker.publish_join(other, ClientInfo("1", "c"))
        await engine.broker.publish_leave(other, ClientInfo("1", "c"))
        await settle(engine, watched)
        assert engine.handler.of(other) == []

    async def test_subscribe_is_idempotent(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.broker.subscribe(ch)
        await engine.broker.subscribe(ch)
        await engine.broker.publish(ch, b"1", HISTORY)
        await settle(engine, ch)
        assert [p.data for p in engine.handler.pubs(ch)] == [b"1", b'"marker"']

    async def test_nothing_after_unsubscribe(self, engine: Engine) -> None:
        ch, marker = channel_name(), channel_name()
        await engine.broker.subscribe(ch)
        await engine.broker.subscribe(marker)
        await engine.broker.publish(ch, b"1", HISTORY)
        await engine.handler.wait_count(ch, 1)
        await engine.broker.unsubscribe(ch)
        await engine.broker.publish(ch, b"2", HISTORY)
        await engine.broker.publish_join(ch, ClientInfo("1", "c"))
        await settle(engine, marker)
        assert [p.data for p in engine.handler.pubs(ch)] == [b"1"]
        assert len(engine.handler.of(ch)) == 1
        # the stream itself went on
        pubs, _ = await engine.broker.history(ch, ALL)
        assert offsets(pubs) == [1, 2]

    async def test_resubscribe_delivers_again(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.broker.subscribe(ch)
        await engine.broker.unsubscribe(ch)
        await engine.broker.subscribe(ch)
        await engine.broker.publish(ch, b"1", HISTORY)
        await engine.handler.wait_count(ch, 1)

    async def test_join_and_leave_are_delivered(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.broker.subscribe(ch)
        alice = ClientInfo("alice", "c1", b'{"name":"A"}', b'{"role":"r"}')
        bob = ClientInfo("bob", "c2")
        await engine.broker.publish_join(ch, alice)
        await engine.broker.publish_join(ch, bob)
        await engine.broker.publish_leave(ch, alice)
        await engine.handler.wait_count(ch, 3)
        assert engine.handler.of(ch) == [("join", ch, alice), ("join", ch, bob), ("leave", ch, alice)]
        _, top = await engine.broker.history(ch, HistoryOptions())
        assert top.offset == 0  # join/leave are not publications

    # -- control messages: to every node, whatever it is subscribed to

    async def test_control_reaches_the_sender_without_any_subscription(self, engine: Engine) -> None:
        await engine.broker.publish_control(b"\x00one")
        await engine.broker.publish_control(b"two")
        await engine.handler.wait_for(lambda: len(engine.handler.controls) >= 2)
        assert engine.handler.controls == [b"\x00one", b"two"]
        assert engine.handler.events == []  # not a channel event

    async def test_control_reaches_every_node_in_order(self, engine: Engine) -> None:
        """Each node gets every node's control messages, each sender's in its order. A
        single-process engine has no other node: its messages come back to itself only."""
        peer = await engine.peer()
        try:
            messages = [f"a{i}".encode() for i in range(20)]
            for message in messages:
                await engine.broker.publish_control(message)
            await engine.handler.wait_for(lambda: len(engine.handler.controls) >= 20)
            assert engine.handler.controls == messages
            if peer is None:
                return
            recorder = peer.handler
            await recorder.wait_for(lambda: len(recorder.controls) >= 20)
            assert recorder.controls == messages
            await peer.broker.publish_control(b"from-peer")
            await engine.handler.wait_for(lambda: b"from-peer" in engine.handler.controls)
            await recorder.wait_for(lambda: b"from-peer" in recorder.controls)
        finally:
            if peer is not None:
                await peer.close()

    # -- idempotency and deltas

    async def test_idempotent_publish_is_a_noop_the_second_time(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.broker.subscribe(ch)
        opts = PublishOptions(history_size=10, history_ttl=300.0, idempotency_key="k1")
        first, dup1 = await engine.broker.publish(ch, b"1", opts)
        second, dup2 = await engine.broker.publish(ch, b"1", opts)
        assert (dup1, dup2) == (False, True)
        assert second == first == StreamPosition(1, first.epoch)
        await settle(engine, ch)
        assert [p.data for p in engine.handler.pubs(ch)] == [b"1", b'"marker"']
        pubs, top = await engine.broker.history(ch, ALL)
        assert offsets(pubs) == [1] and top.offset == 1

    async def test_idempotency_keys_are_per_key_and_channel(self, engine: Engine) -> None:
        a, b = channel_name(), channel_name()
        k1 = PublishOptions(history_size=10, history_ttl=300.0, idempotency_key="k1")
        k2 = PublishOptions(history_size=10, history_ttl=300.0, idempotency_key="k2")
        sp, duplicate = await engine.broker.publish(a, b"1", k1)
        assert sp.offset == 1 and not duplicate
        sp, duplicate = await engine.broker.publish(a, b"2", k2)
        assert sp.offset == 2 and not duplicate
        sp, duplicate = await engine.broker.publish(b, b"1", k1)
        assert sp.offset == 1 and not duplicate
        pubs, _ = await engine.broker.history(a, ALL)
        assert [p.data for p in pubs] == [b"1", b"2"]

    async def test_idempotency_key_expires(self, engine: Engine) -> None:
        ch = channel_name()
        opts = PublishOptions(
            history_size=10, history_ttl=300.0, idempotency_key="k", idempotent_result_ttl=1.0
        )
        await engine.broker.publish(ch, b"1", opts)
        await engine.advance(1.5)
        sp, duplicate = await engine.broker.publish(ch, b"1", opts)
        assert sp.offset == 2 and not duplicate

    async def test_use_delta_gives_the_previous_publication(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.broker.subscribe(ch)
        opts = PublishOptions(history_size=10, history_ttl=300.0, use_delta=True)
        for data in (b'{"v":1}', b'{"v":2}', b'{"v":3}'):
            await engine.broker.publish(ch, data, opts)
        await engine.handler.wait_count(ch, 3)
        prevs = engine.handler.prevs
        assert prevs[0] is None
        assert prevs[1] is not None and (prevs[1].offset, prevs[1].data) == (1, b'{"v":1}')
        assert prevs[2] is not None and (prevs[2].offset, prevs[2].data) == (2, b'{"v":2}')

    async def test_use_delta_without_history(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.broker.subscribe(ch)
        opts = PublishOptions(use_delta=True)
        await engine.broker.publish(ch, b'{"v":1}', opts)
        await engine.broker.publish(ch, b'{"v":2}', opts)
        await engine.handler.wait_count(ch, 2)
        assert engine.handler.prevs[0] is None
        prev = engine.handler.prevs[1]
        assert prev is not None and (prev.offset, prev.data) == (0, b'{"v":1}')

    async def test_no_previous_publication_without_use_delta(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.broker.subscribe(ch)
        await publish_n(engine.broker, ch, 2)
        await engine.handler.wait_count(ch, 2)
        assert engine.handler.prevs == [None, None]


ALICE = ClientInfo("alice", "c1", b'{"name":"A"}')
ALICE_TAB = ClientInfo("alice", "c2")
BOB = ClientInfo("bob", "c3", None, b'{"role":"x"}')


class PresenceContract:
    async def test_empty_channel(self, engine: Engine) -> None:
        ch = channel_name()
        assert await engine.presence.presence(ch) == {}
        assert await engine.presence.presence_stats(ch) == PresenceStats(0, 0)

    async def test_add_and_get(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.presence.add_presence(ch, "c1", ALICE)
        await engine.presence.add_presence(ch, "c3", BOB)
        assert await engine.presence.presence(ch) == {"c1": ALICE, "c3": BOB}
        assert await engine.presence.presence(channel_name()) == {}

    async def test_num_users_counts_distinct_users(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.presence.add_presence(ch, "c1", ALICE)
        await engine.presence.add_presence(ch, "c2", ALICE_TAB)
        await engine.presence.add_presence(ch, "c3", BOB)
        assert await engine.presence.presence_stats(ch) == PresenceStats(num_clients=3, num_users=2)

    async def test_add_again_replaces(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.presence.add_presence(ch, "c1", ALICE)
        updated = ClientInfo("alice", "c1", b'{"name":"B"}')
        await engine.presence.add_presence(ch, "c1", updated)
        assert await engine.presence.presence(ch) == {"c1": updated}
        assert await engine.presence.presence_stats(ch) == PresenceStats(1, 1)

    async def test_remove(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.presence.add_presence(ch, "c1", ALICE)
        await engine.presence.add_presence(ch, "c2", ALICE_TAB)
        await engine.presence.add_presence(ch, "c3", BOB)
        await engine.presence.remove_presence(ch, "c1", "alice")
        assert await engine.presence.presence(ch) == {"c2": ALICE_TAB, "c3": BOB}
        assert await engine.presence.presence_stats(ch) == PresenceStats(2, 2)
        await engine.presence.remove_presence(ch, "c2", "alice")
        assert await engine.presence.presence_stats(ch) == PresenceStats(1, 1)
        await engine.presence.remove_presence(ch, "c3", "bob")
        assert await engine.presence.presence(ch) == {}
        assert await engine.presence.presence_stats(ch) == PresenceStats(0, 0)

    async def test_remove_unknown_is_harmless(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.presence.remove_presence(ch, "nobody", "")
        await engine.presence.add_presence(ch, "c1", ALICE)
        await engine.presence.remove_presence(ch, "nobody", "alice")
        assert await engine.presence.presence(ch) == {"c1": ALICE}

    async def test_channels_are_separate(self, engine: Engine) -> None:
        a, b = channel_name(), channel_name()
        await engine.presence.add_presence(a, "c1", ALICE)
        await engine.presence.add_presence(b, "c3", BOB)
        await engine.presence.remove_presence(a, "c1", "alice")
        assert await engine.presence.presence(b) == {"c3": BOB}

    async def test_anonymous_users_count_as_one(self, engine: Engine) -> None:
        ch = channel_name()
        await engine.presence.add_presence(ch, "a1", ClientInfo("", "a1"))
        await engine.presence.add_presence(ch, "a2", ClientInfo("", "a2"))
        assert await engine.presence.presence_stats(ch) == PresenceStats(2, 1)

    async def test_refresh_keeps_entries_as_they_are(self, engine: Engine) -> None:
        a, b = channel_name(), channel_name()
        await engine.presence.add_presence(a, "c1", ALICE)
        await engine.presence.add_presence(a, "c3", BOB)
        await engine.presence.add_presence(b, "c1", ALICE)
        await engine.presence.refresh_presence([(a, "c1", ALICE), (a, "c3", BOB), (b, "c1", ALICE)])
        await engine.presence.refresh_presence([])
        assert await engine.presence.presence(a) == {"c1": ALICE, "c3": BOB}
        assert await engine.presence.presence(b) == {"c1": ALICE}

    async def test_refresh_of_many_channels(self, engine: Engine) -> None:
        channels = [channel_name() for _ in range(50)]
        entries = [(ch, f"c{i}", ClientInfo(f"u{i}", f"c{i}")) for i, ch in enumerate(channels)]
        for entry in entries:
            await engine.presence.add_presence(*entry)
        await engine.presence.refresh_presence(entries)
        for ch, client, info in entries:
            assert await engine.presence.presence(ch) == {client: info}

    # -- several nodes: a networked engine's presence is the cluster's, not the node's

    async def test_presence_is_the_same_on_every_node(self, engine: Engine) -> None:
        """Clients added on one node are seen (and counted) on another, removals too. A
        single-process engine has no other node."""
        peer = await engine.peer()
        if peer is None:
            return
        ch = channel_name()
        try:
            await engine.presence.add_presence(ch, "c1", ALICE)
            await peer.presence.add_presence(ch, "c2", ALICE_TAB)
            await peer.presence.add_presence(ch, "c3", BOB)
            everyone = {"c1": ALICE, "c2": ALICE_TAB, "c3": BOB}
            for node in (engine.presence, peer.presence):
                assert await node.presence(ch) == everyone
                assert await node.presence_stats(ch) == PresenceStats(num_clients=3, num_users=2)
            await peer.presence.remove_presence(ch, "c3", "bob")
            await engine.presence.remove_presence(ch, "c1", "alice")
            for node in (engine.presence, peer.presence):
                assert await node.presence(ch) == {"c2": ALICE_TAB}
                assert await node.presence_stats(ch) == PresenceStats(1, 1)
        finally:
            await peer.close()

    async def test_a_dead_nodes_clients_leave_presence_after_the_ttl(self, engine: Engine) -> None:
        """Two nodes with a 1s presence TTL: the live one refreshes its client (what the
        cluster's presence refresh does), the other dies with its client still present.
        That client stays until the TTL, then leaves everyone's presence."""
        alive = await engine.peer(f"presence_ttl={PRESENCE_TTL:g}s")
        if alive is None:
            return
        dead = await engine.peer(f"presence_ttl={PRESENCE_TTL:g}s")
        assert dead is not None
        ch = channel_name()
        try:
            await alive.presence.add_presence(ch, "c1", ALICE)
            await dead.presence.add_presence(ch, "c3", BOB)
            await dead.close()  # killed: nothing removes c3
            assert set(await alive.presence.presence(ch)) == {"c1", "c3"}  # not gone before the TTL
            deadline = time.monotonic() + 2.5 * PRESENCE_TTL
            while time.monotonic() < deadline:
                await alive.presence.refresh_presence([(ch, "c1", ALICE)])
                await asyncio.sleep(PRESENCE_TTL / 5)
            assert await alive.presence.presence(ch) == {"c1": ALICE}
            assert await alive.presence.presence_stats(ch) == PresenceStats(1, 1)
        finally:
            await alive.close()


__all__ = ["ENGINES", "BrokerContract", "Engine", "PresenceContract", "make_engine"]
