"""The memory engine's maps: what clients can make it hold (reads of maps never written:
nothing), and epochs that never come back after a map is cleared."""

from __future__ import annotations

from livehub.engines.base import MapOptions, MapPublish
from livehub.engines.memory import MemoryBroker

STREAM = MapOptions(stream_size=10, stream_ttl=300.0)


async def test_reading_maps_never_written_stores_nothing() -> None:
    broker = MemoryBroker()
    for i in range(2000):
        await broker.map_state(f"m:{i}", STREAM)
        await broker.map_stream(f"m:{i}", STREAM, None, -1)
        await broker.map_remove(f"m:{i}", "k", STREAM)
    assert broker._maps._maps == {}


async def test_a_cleared_map_comes_back_with_a_new_epoch() -> None:
    broker = MemoryBroker()
    first = await broker.map_publish("m:x", "k", STREAM, MapPublish(b"1"))
    await broker.map_clear("m:x")
    read = await broker.map_state("m:x", STREAM)
    again = await broker.map_publish("m:x", "k", STREAM, MapPublish(b"2"))
    assert read.position.epoch == again.position.epoch != first.position.epoch


async def test_an_emptied_map_without_stream_is_forgotten() -> None:
    broker = MemoryBroker()
    ephemeral = MapOptions(key_ttl=60.0)
    await broker.map_publish("m:e", "k", ephemeral, MapPublish(b"1"))
    await broker.map_remove("m:e", "k", ephemeral)
    assert broker._maps._maps == {}
