"""The map part of the engine contract (``livehub.engines.base``, its module docstring).

Run against every engine in :data:`MAP_ENGINES`; the others must refuse every map method
with ``MapUnsupported`` (:func:`check_unsupported`).
"""

from __future__ import annotations

import pytest

from livehub.engines.base import MapKeyLimit, MapOptions, MapPublish, MapUnsupported
from livehub.models import ClientInfo, StreamPosition

from .contract import Engine, channel_name

MAP_ENGINES = ["memory", "redis", "redis-shards", "redis-cluster"]

STREAM = MapOptions(stream_size=100, stream_ttl=300.0)
EPHEMERAL = MapOptions(key_ttl=60.0)


def value(n: int) -> MapPublish:
    return MapPublish(data=f'{{"v":{n}}}'.encode())


async def check_unsupported(engine: Engine) -> None:
    ch = channel_name()
    with pytest.raises(MapUnsupported):
        await engine.broker.map_publish(ch, "k", STREAM, value(1))
    with pytest.raises(MapUnsupported):
        await engine.broker.map_remove(ch, "k", STREAM)
    with pytest.raises(MapUnsupported):
        await engine.broker.map_state(ch, STREAM)
    with pytest.raises(MapUnsupported):
        await engine.broker.map_stream(ch, STREAM, None, -1)


class MapContract:
    async def test_publish_sets_state_and_appends_to_stream(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        first = await b.map_publish(ch, "a", STREAM, value(1))
        second = await b.map_publish(ch, "b", STREAM, value(2))
        third = await b.map_publish(ch, "a", STREAM, value(3))
        assert [first.position.offset, second.position.offset, third.position.offset] == [1, 2, 3]
        assert first.position.epoch == third.position.epoch != ""
        page = await b.map_state(ch, STREAM)
        assert [(p.key, p.data, p.offset) for p in page.entries] == [
            ("a", b'{"v":3}', 3),
            ("b", b'{"v":2}', 2),
        ]
        assert page.position == third.position and page.cursor == ""
        pubs, top = await b.map_stream(ch, STREAM, None, -1)
        assert [(p.key, p.offset, p.removed) for p in pubs] == [
            ("a", 1, False),
            ("b", 2, False),
            ("a", 3, False),
        ]
        assert top == third.position
        assert await b.map_stats(ch, STREAM) == 2

    async def test_changes_are_delivered_in_offset_order(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        await b.subscribe(ch)
        await b.map_publish(ch, "x", STREAM, MapPublish(b'"1"', ClientInfo("u", "c"), {"t": "1"}))
        await b.map_publish(ch, "y", STREAM, value(2))
        await b.map_remove(ch, "x", STREAM)
        await engine.handler.wait_for(lambda: len(engine.handler.pubs(ch)) == 3)
        got = engine.handler.pubs(ch)
        assert [(p.key, p.offset, p.removed) for p in got] == [
            ("x", 1, False),
            ("y", 2, False),
            ("x", 3, True),
        ]
        assert got[0].info == ClientInfo("u", "c") and got[0].tags == {"t": "1"}
        assert got[2].data == b"" and got[2].tags == {"t": "1"}  # a removal carries the key's tags
        positions = engine.handler.positions[-3:]
        assert [sp.offset for sp in positions] == [1, 2, 3]

    async def test_remove_of_a_missing_key_changes_nothing(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        await b.map_publish(ch, "a", STREAM, value(1))
        update = await b.map_remove(ch, "nope", STREAM)
        assert update.suppressed == "key_not_found" and update.position.offset == 1
        removed = await b.map_remove(ch, "a", STREAM)
        assert removed.suppressed == "" and removed.position.offset == 2
        assert (await b.map_state(ch, STREAM)).entries == []

    async def test_key_modes(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        assert (await b.map_publish(ch, "a", STREAM, MapPublish(b"1", key_mode="if_exists"))).suppressed == (
            "key_not_found"
        )
        assert (await b.map_publish(ch, "a", STREAM, MapPublish(b"1", key_mode="if_new"))).suppressed == ""
        again = await b.map_publish(ch, "a", STREAM, MapPublish(b"2", key_mode="if_new"))
        assert again.suppressed == "key_exists" and again.position.offset == 1
        assert (await b.map_publish(ch, "a", STREAM, MapPublish(b"3", key_mode="if_exists"))).suppressed == ""
        page = await b.map_state(ch, STREAM)
        assert [(p.key, p.data) for p in page.entries] == [("a", b"3")]

    async def test_state_pages_in_key_order(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        for key in ["e", "a", "d", "b", "c"]:
            await b.map_publish(ch, key, STREAM, value(1))
        keys: list[str] = []
        cursor, pages = "", 0
        while True:
            page = await b.map_state(ch, STREAM, cursor=cursor, limit=2)
            keys += [p.key for p in page.entries]
            pages += 1
            cursor = page.cursor
            if not cursor:
                break
            assert pages < 10
        assert keys == ["a", "b", "c", "d", "e"]
        one = await b.map_state(ch, STREAM, key="d")
        assert [p.key for p in one.entries] == ["d"]
        assert (await b.map_state(ch, STREAM, key="zz")).entries == []

    async def test_stream_reads_since_a_position(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        for n in range(5):
            await b.map_publish(ch, f"k{n}", STREAM, value(n))
        pubs, top = await b.map_stream(ch, STREAM, StreamPosition(2, ""), -1)
        assert [p.offset for p in pubs] == [3, 4, 5] and top.offset == 5
        pubs, _ = await b.map_stream(ch, STREAM, StreamPosition(2, ""), 2)
        assert [p.offset for p in pubs] == [3, 4]
        pubs, top = await b.map_stream(ch, STREAM, None, 0)
        assert pubs == [] and top.offset == 5

    async def test_stream_is_bounded_by_its_size(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        small = MapOptions(stream_size=2, stream_ttl=300.0)
        for n in range(5):
            await b.map_publish(ch, f"k{n}", small, value(n))
        pubs, top = await b.map_stream(ch, small, None, -1)
        assert [p.offset for p in pubs] == [4, 5] and top.offset == 5
        assert len((await b.map_state(ch, small)).entries) == 5  # the state keeps every key

    async def test_a_map_without_stream_keeps_offsets_at_zero(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        await b.subscribe(ch)
        first = await b.map_publish(ch, "a", EPHEMERAL, value(1))
        await b.map_publish(ch, "b", EPHEMERAL, value(2))
        assert first.position.offset == 0 and first.position.epoch
        pubs, top = await b.map_stream(ch, EPHEMERAL, None, -1)
        assert pubs == [] and top.offset == 0
        assert [p.key for p in (await b.map_state(ch, EPHEMERAL)).entries] == ["a", "b"]
        await engine.handler.wait_for(lambda: len(engine.handler.pubs(ch)) == 2)
        assert [p.offset for p in engine.handler.pubs(ch)] == [0, 0]

    async def test_expired_keys_are_removed_with_a_removal_change(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        opts = MapOptions(key_ttl=2.0, stream_size=10, stream_ttl=300.0, meta_ttl=600.0)
        await b.subscribe(ch)
        await b.map_publish(ch, "short", opts, value(1))
        await b.map_publish(ch, "kept", opts, value(2))
        await engine.advance(1.0)
        await b.map_publish(
            ch, "kept", opts, MapPublish(b"3", key_mode="if_new", refresh_ttl_on_suppress=True)
        )
        await engine.advance(1.3)  # "short" expired 0.3 s ago; "kept" expires 0.7 s from now
        assert [p.key for p in (await b.map_state(ch, opts)).entries] == ["kept"]  # reads hide it at once
        await engine.handler.wait_for(lambda: any(p.removed for p in engine.handler.pubs(ch)))
        removal = [p for p in engine.handler.pubs(ch) if p.removed]
        assert [(p.key, p.offset) for p in removal] == [("short", 3)]
        pubs, _ = await b.map_stream(ch, opts, StreamPosition(2, ""), -1)
        assert [(p.key, p.removed) for p in pubs] == [("short", True)]
        assert await b.map_stats(ch, opts) == 1

    async def test_publish_hands_over_the_previous_value_for_deltas(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        await b.subscribe(ch)
        await b.map_publish(ch, "a", STREAM, MapPublish(b'"one"', use_delta=True))
        await b.map_publish(ch, "b", STREAM, MapPublish(b'"other"', use_delta=True))
        await b.map_publish(ch, "a", STREAM, MapPublish(b'"two"', use_delta=True))
        await engine.handler.wait_for(lambda: len(engine.handler.pubs(ch)) == 3)
        prevs = engine.handler.prevs[-3:]
        assert prevs[0] is None and prevs[1] is None
        assert prevs[2] is not None and prevs[2].data == b'"one"' and prevs[2].key == "a"

    async def test_max_keys_refuses_a_new_key(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        opts = MapOptions(stream_size=10, stream_ttl=300.0, max_keys=2)
        await b.map_publish(ch, "a", opts, value(1))
        await b.map_publish(ch, "b", opts, value(2))
        with pytest.raises(MapKeyLimit):
            await b.map_publish(ch, "c", opts, value(3))
        await b.map_publish(ch, "a", opts, value(4))  # an existing key may change
        assert await b.map_stats(ch, opts) == 2
        assert (await b.map_stream(ch, opts, None, 0))[1].offset == 3

    async def test_clear_starts_a_new_epoch(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        before = await b.map_publish(ch, "a", STREAM, value(1))
        await b.map_clear(ch)
        page = await b.map_state(ch, STREAM)
        assert page.entries == [] and page.position.offset == 0
        assert page.position.epoch != before.position.epoch
        after = await b.map_publish(ch, "a", STREAM, value(2))
        assert after.position == StreamPosition(1, page.position.epoch)

    async def test_maps_and_streams_of_one_channel_are_apart(self, engine: Engine) -> None:
        from .contract import HISTORY

        b, ch = engine.broker, channel_name()
        await b.publish(ch, b'"stream"', HISTORY)
        await b.map_publish(ch, "a", STREAM, value(1))
        pubs, sp = await b.map_stream(ch, STREAM, None, -1)
        assert [p.key for p in pubs] == ["a"] and sp.offset == 1

    async def test_a_read_map_keeps_its_epoch_when_first_written(self, engine: Engine) -> None:
        b, ch = engine.broker, channel_name()
        read = await b.map_state(ch, STREAM)
        _, top = await b.map_stream(ch, STREAM, None, 0)
        assert read.position == top and read.position.offset == 0
        assert (await b.map_remove(ch, "nothing", STREAM)).suppressed == "key_not_found"
        written = await b.map_publish(ch, "a", STREAM, value(1))
        assert written.position == StreamPosition(1, read.position.epoch)

    async def test_another_node_sees_the_same_map(self, engine: Engine) -> None:
        peer = await engine.peer()
        if peer is None:
            assert engine.name == "memory"  # one process, one node
            return
        try:
            ch = channel_name()
            await peer.broker.subscribe(ch)
            await engine.broker.map_publish(ch, "a", STREAM, value(1))
            page = await peer.broker.map_state(ch, STREAM)
            assert [p.key for p in page.entries] == ["a"]
            await peer.handler.wait_for(lambda: len(peer.handler.pubs(ch)) == 1)
            assert peer.handler.pubs(ch)[0].key == "a"
        finally:
            await peer.close()
