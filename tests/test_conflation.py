"""Conflation (the ``conflate`` channel option): a subscriber whose socket pushes back gets
the latest publication of each key instead of a backlog, and is not disconnected as slow.

The outbox's policy is checked on a transport that pushes back on demand; the whole path
(protocol ``key``, fan-out, a real slow socket against ``livehub serve``) by
``test_a_slow_reader_converges_and_stays`` with ``bench/conflation.py``'s clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from centrifuge import (  # type: ignore[import-untyped]
    Client,
    PublicationContext,
    SubscribedContext,
    SubscribingContext,
    SubscriptionEventHandler,
)

from livehub.core.outbox import Flusher, Outbox
from livehub.engines.wire import decode_publication, encode_publication
from livehub.hub import Hub
from livehub.models import Publication
from livehub.protocol import protobuf
from livehub.protocol.codec import encode_publication as encode_json
from livehub.settings import Settings
from tests.servers import ROOT, free_port, running, serve
from tests.test_session import FakeTransport, eventually

_spec = importlib.util.spec_from_file_location("bench_conflation", ROOT / "bench" / "conflation.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@contextlib.contextmanager
def serve_bench(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """``livehub serve`` with the benchmark's config: (port, pid)."""
    config = tmp_path / "conflation.toml"
    config.write_text(bench.CONFIG)
    port = free_port()
    cmd = [sys.executable, "-m", "livehub", "serve", "--config", str(config), "--port", str(port)]
    with running([*cmd, "--log-level", "warning"], port) as proc:
        yield port, proc.pid


def outbox(transport: FakeTransport, max_size: int = 1 << 20, batch: int = 64) -> Outbox:
    return Outbox(transport, max_size, batch, Flusher())


async def test_while_the_socket_takes_writes_every_value_goes_in_order() -> None:
    transport = FakeTransport()
    box = outbox(transport)
    for value in ("a1", "b1", "a2", "a3"):
        box.put_latest("ch", value[0], value, 10)
    await eventually(lambda: transport.frames == ["a1\nb1\na2\na3"])
    assert box.conflated == 0


async def test_while_it_pushes_back_only_the_latest_of_each_key_waits() -> None:
    transport = FakeTransport()
    box = outbox(transport)
    transport.gate.clear()  # the socket pushes back after the next write
    box.put("reply")
    box.put_latest("ch", "a", "a1", 10)  # before the push back: queued in order
    await eventually(lambda: transport.blocked == 1)
    for value in ("b1", "a2", "c1", "b2", "a3"):
        box.put_latest("ch", value[0], value, 10)
    box.put("other")  # not conflated: queued, written before the slots
    assert box.conflated == 2
    assert box.size == len("other") + len("c1") + len("b2") + len("a3")
    transport.gate.set()
    await eventually(lambda: box.size == 0)
    # the slots oldest first, a replaced value moved to the end: offsets keep rising
    assert transport.frames == ["reply\na1", "other\nc1\nb2\na3"]


async def test_slots_are_written_in_batches_and_a_new_value_waits_behind_them() -> None:
    transport = FakeTransport()
    box = outbox(transport, batch=2)
    transport.gate.clear()
    box.put("x")
    await eventually(lambda: transport.blocked == 1)
    for key in "abcde":
        box.put_latest("ch", key, key + "1", 10)
    transport.gate.set()
    await eventually(lambda: box.size == 0)
    assert transport.frames == ["x", "a1\nb1", "c1\nd1", "e1"]


async def test_too_many_keys_waiting_is_slow() -> None:
    transport = FakeTransport()
    box = outbox(transport)
    transport.gate.clear()
    box.put("x")
    await eventually(lambda: transport.blocked == 1)
    for key in "abc":
        box.put_latest("ch", key, key, 3)
        box.put_latest("other", key, key, 3)  # counted per channel
    assert box.close_with is None
    box.put_latest("ch", "d", "d", 3)
    assert box.close_with is not None and box.close_with.code == 3008
    assert box.size == 0


async def test_the_byte_limit_holds_for_slots_too() -> None:
    transport = FakeTransport()
    box = outbox(transport, max_size=1024)
    transport.gate.clear()
    box.put("x")
    await eventually(lambda: transport.blocked == 1)
    for i in range(3):
        box.put_latest("ch", "a", "v" * 1000, 10)  # one key: replaced, never over the limit
        assert box.close_with is None, i
    box.put_latest("ch", "b", "v" * 100, 10)
    assert box.close_with is not None and box.close_with.code == 3008


def test_the_key_travels_in_the_protocol_and_between_nodes() -> None:
    pub = Publication(b'{"p":1}', 7, None, {"t": "1"}, 5, "AAPL")
    assert json.loads(encode_json("ticker", pub))["push"]["pub"]["key"] == "AAPL"
    assert b"\x5a\x04AAPL" in protobuf.encode_publication("ticker", pub)  # Publication.key = 11
    assert decode_publication(encode_publication(pub), 7) == pub
    plain = Publication(b"1", 3)
    assert decode_publication(encode_publication(plain), 3) == plain


def test_a_channel_declared_in_code_may_conflate() -> None:
    hub = Hub(Settings())
    hub.channel("prices:{market}", conflate=True, conflate_max_keys=50)
    opts = hub.channel_options("prices:nyse")
    assert opts.conflate and opts.conflate_max_keys == 50
    with pytest.raises(ValueError):
        hub.channel("other", conflate_max_keys=0)


async def test_conflated_delivery_with_keys_through_the_api(tmp_path: Path) -> None:
    """The HTTP API's ``key`` reaches subscribers and history; a delta request on a
    conflating channel is answered without deltas."""
    config = tmp_path / "c.toml"
    config.write_text(
        bench.CONFIG.replace("conflate = true", 'conflate = true\nallowed_delta_types = ["fossil"]')
    )
    with serve(config) as port:
        sub = bench.Subscriber("s", "ticks:x", 0)
        await sub.start(port)
        reader = asyncio.create_task(sub.read())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for seq in (1, 2):
                data: dict[str, Any] = {"k": "a", "seq": seq}
                reply = await http.post("/api/publish", json={"channel": "ticks:x", "data": data, "key": "a"})
                assert reply.json() == {"result": {"offset": seq, "epoch": reply.json()["result"]["epoch"]}}
            history = (await http.post("/api/history", json={"channel": "ticks:x", "limit": -1})).json()
        assert [p["key"] for p in history["result"]["publications"]] == ["a", "a"]
        await eventually(lambda: sub.received == 2)
        assert sub.latest == {"a": 2} and sub.offsets == [1, 2]
        assert sub.ws is not None
        await sub.ws.close()
        await reader


async def test_a_slow_reader_converges_and_stays(tmp_path: Path) -> None:
    """A publisher at 10x what the slow subscriber reads (its socket's window small, so the
    server's socket pushes back): the slow one ends with the latest value of every key, is
    not disconnected, and sees offsets rise; a fast one on the same channel gets every
    publication; a slow one on a channel without conflation is cut."""
    with serve_bench(tmp_path) as (port, pid):
        result = await bench.measure(port, pid, rate=500, keys=10, seconds=3.0, size=1000)
    fast, slow, plain = result["fast"], result["slow"], result["slow_without_conflation"]
    published = result["published_per_channel"]
    assert fast["received"] == published and fast["disconnected_with"] is None, result
    assert slow["disconnected_with"] is None, result
    assert slow["converged_after_s"] is not None and slow["converged_after_s"] < 10, result
    assert slow["received"] < published / 2, result  # it did not get a backlog
    assert slow["offsets_rising"] and fast["offsets_rising"], result
    assert plain["disconnected_with"] is not None, result
    assert result["server_conflated"] > 0, result


class SlowLink:
    """A TCP proxy on loopback passing the server's bytes on at ``rate`` bytes a second (the
    client's bytes at once), reading them no faster: a slow network between a client and
    ``livehub serve``, whatever the client does."""

    def __init__(self, upstream: int, rate: float) -> None:
        self.upstream = upstream
        self.rate = rate
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a small window upstream
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.upstream))
        up_reader, up_writer = await asyncio.open_connection(sock=sock, limit=4096)
        for source, sink, rate in ((reader, up_writer, 0.0), (up_reader, writer, self.rate)):
            task = asyncio.create_task(self._pump(source, sink, rate))
            self.tasks.add(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, rate: float) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(4096):
                sink.write(chunk)
                await sink.drain()
                if rate:
                    await asyncio.sleep(len(chunk) / rate)
        sink.close()


class Events(SubscriptionEventHandler):  # type: ignore[misc]
    """centrifuge-python's subscription events, recorded."""

    def __init__(self) -> None:
        self.latest: dict[str, int] = {}
        self.offsets: list[int] = []
        self.subscribing = 0
        self.recovered: list[bool] = []

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.latest[ctx.pub.data["k"]] = ctx.pub.data["seq"]
        self.offsets.append(ctx.pub.offset)

    async def on_subscribing(self, ctx: SubscribingContext) -> None:
        self.subscribing += 1

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.recovered.append(ctx.recovered)


async def test_the_official_sdk_on_a_slow_link_converges_and_recovers(tmp_path: Path) -> None:
    """centrifuge-python behind a link of 100 KB/s, on a recoverable subscription, while 1 MB/s
    is published: it converges to the latest value of every key, sees offsets rise, and is
    never made to resubscribe (a skipped offset is not a loss); after a reconnect it
    recovers and converges again.

    (The SDK reads its socket as fast as it can and queues what it read, so a slow handler
    alone is not slow for the server: the link is.)"""
    with serve_bench(tmp_path) as (port, _):
        async with SlowLink(port, 100_000) as link:
            client = Client(f"ws://127.0.0.1:{link}/connection/websocket")
            events = Events()
            sub = client.new_subscription("ticks:sdk", events=events, recoverable=True, positioned=True)
            await client.connect()
            await sub.subscribe()
            await eventually(lambda: events.recovered == [False])
            target, published, _ = await bench.publish(port, 1000, 10, 3.0, 1000, ("ticks:sdk",))
            await until(lambda: events.latest == target, 15)
            received = len(events.offsets)
            assert received < published / 2, (received, published)
            assert events.offsets == sorted(set(events.offsets))
            assert events.subscribing == 1  # the first subscribe only: no 2500, no resubscribe
            await client.disconnect()
            target, _, _ = await bench.publish(port, 100, 10, 0.5, 1000, ("ticks:sdk",))
            await client.connect()
            await until(lambda: events.latest == target, 15)
            assert events.recovered[-1] is True
            assert events.offsets == sorted(set(events.offsets))
            await client.disconnect()


async def until(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
