"""Async consumers: API commands read from Redis Streams and NATS JetStream by ``livehub
serve``, against the real servers, each test on streams of its own.

A command is executed once (a publication into a channel with history shows it), a bad
message is logged and acknowledged (it does not block the ones after it), and a node
restarted meanwhile goes on where its group or durable consumer was: what was written
while it was down is executed, what it had acknowledged is not executed again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest
import redis.asyncio as aioredis
from nats.js import api as js_api

from livehub.consumers.dispatch import split
from livehub.settings import ConfigError, load_settings
from tests.servers import free_port, running, serve, stop

TIMEOUT = 30.0  # generous: the machine is shared, and an engine reconnects with backoff


def config(tmp_path: Path, prefix: str, consumer: str) -> Path:
    path = tmp_path / "livehub.toml"
    path.write_text(
        f"""
[engine]
url = "redis://127.0.0.1:6379/0?prefix={prefix}"

[http_api]
insecure = true

[[channel.namespaces]]
name = "news"
history_size = 100
history_ttl = "10m"

[[consumers]]
name = "commands"
enabled = true
{consumer}
"""
    )
    return path


async def history(port: int, channel: str) -> list[Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        reply = (await http.post("/api/history", json={"channel": channel, "limit": -1})).json()
    return [p["data"] for p in reply["result"].get("publications", [])]


async def until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def redis_client() -> AsyncIterator[Any]:
    client = aioredis.from_url("redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()


async def drop_keys(client: Any, prefix: str) -> None:
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)


def publish_command(channel: str, n: int) -> bytes:
    return orjson.dumps({"channel": channel, "data": {"n": n}})


async def test_redis_stream_commands_once_and_across_a_restart(tmp_path: Path, redis_client: Any) -> None:
    tag = uuid.uuid4().hex[:12]
    stream, prefix, channel = f"livehub-test-cmds-{tag}", f"livehub-test-{tag}", f"news:{tag}"
    path = config(
        tmp_path,
        prefix,
        f"""type = "redis_stream"
[consumers.redis_stream]
address = "127.0.0.1:6379"
streams = ["{stream}"]
consumer_group = "livehub"
visibility_timeout = "2s"
num_workers = 4
""",
    )
    try:
        with serve(path) as port:
            # the group exists once the node has started: what is added now is for it
            await until(lambda: redis_client.exists(stream), "the stream and its group")
            await redis_client.xadd(stream, {"method": "publish", "payload": publish_command(channel, 1)})
            # bad messages: not JSON, an unknown method, a refused request; then a good one
            await redis_client.xadd(stream, {"payload": b"not json"})
            await redis_client.xadd(stream, {"method": "drop_database", "payload": b"{}"})
            await redis_client.xadd(
                stream, {"method": "publish", "payload": b'{"channel": "nowhere:x", "data": 1}'}
            )
            whole = orjson.dumps({"method": "publish", "payload": {"channel": channel, "data": {"n": 2}}})
            await redis_client.xadd(stream, {"payload": whole})
            await until(lambda: _has(port, channel, 2), "two publications")
            await until(lambda: _nothing_pending(redis_client, stream), "every entry acknowledged")
        await redis_client.xadd(stream, {"method": "publish", "payload": publish_command(channel, 3)})
        with serve(path) as port:
            await until(lambda: _has(port, channel, 3), "the command written while the node was down")
            await asyncio.sleep(2.5)  # past the visibility timeout: nothing is delivered again
            assert [d["n"] for d in await history(port, channel)] == [1, 2, 3]
            assert await _nothing_pending(redis_client, stream)
    finally:
        await redis_client.delete(stream)
        await drop_keys(redis_client, prefix)


async def test_a_failed_command_is_delivered_again_until_it_is_done(
    tmp_path: Path, redis_client: Any
) -> None:
    """The node's engine (a Redis of its own) stops: the command fails, stays pending
    (not acknowledged) and is claimed again after the visibility timeout; once the engine
    is back it is executed, once."""
    tag = uuid.uuid4().hex[:12]
    stream, channel = f"livehub-test-retry-{tag}", f"news:{tag}"
    engine_port = free_port()
    engine_cmd = ["redis-server", "--port", str(engine_port), "--save", "", "--appendonly", "no"]
    path = config(
        tmp_path,
        "livehub",
        f"""type = "redis_stream"
[consumers.redis_stream]
streams = ["{stream}"]
consumer_group = "livehub"
visibility_timeout = "1s"
""",
    ).read_text()
    path = path.replace("redis://127.0.0.1:6379/0", f"redis://127.0.0.1:{engine_port}/0")
    (tmp_path / "retry.toml").write_text(path)
    try:
        with running(engine_cmd, engine_port) as engine:
            with serve(tmp_path / "retry.toml") as port:
                await until(lambda: redis_client.exists(stream), "the stream and its group")
                stop(engine)
                await redis_client.xadd(stream, {"method": "publish", "payload": publish_command(channel, 1)})
                await until(lambda: _pending(redis_client, stream, 1), "the failed entry pending")
                await asyncio.sleep(1.5)  # claimed again at least once, failing again
                assert await _pending(redis_client, stream, 1)
                with running(engine_cmd, engine_port):
                    await until(
                        lambda: _has(port, channel, 1), "the command executed once the engine is back"
                    )
                    await until(lambda: _nothing_pending(redis_client, stream), "the entry acknowledged")
                    await asyncio.sleep(1.5)
                    assert [d["n"] for d in await history(port, channel)] == [1]
    finally:
        await redis_client.delete(stream)


async def test_redis_stream_publication_data_mode(tmp_path: Path, redis_client: Any) -> None:
    tag = uuid.uuid4().hex[:12]
    stream, prefix = f"livehub-test-data-{tag}", f"livehub-test-{tag}"
    path = config(
        tmp_path,
        prefix,
        f"""type = "redis_stream"
[consumers.redis_stream]
streams = ["{stream}"]
consumer_group = "livehub"
[consumers.redis_stream.publication_data_mode]
enabled = true
""",
    )
    try:
        with serve(path) as port:
            await until(lambda: redis_client.exists(stream), "the stream and its group")
            fields = {
                "payload": b'{"price": 7}',
                "centrifugo-channels": f"news:a{tag},news:b{tag}",
                "centrifugo-tag-source": "feed",
            }
            await redis_client.xadd(stream, fields)
            await until(lambda: _has(port, f"news:b{tag}", 1), "the publication in the second channel")
            assert await history(port, f"news:a{tag}") == [{"price": 7}]
    finally:
        await redis_client.delete(stream)
        await drop_keys(redis_client, prefix)


async def test_nats_jetstream_commands_once_and_across_a_restart(tmp_path: Path, redis_client: Any) -> None:
    tag = uuid.uuid4().hex[:12]
    stream, subject, prefix, channel = (
        f"LIVEHUB_TEST_{tag}",
        f"livehub.test.{tag}",
        f"livehub-test-{tag}",
        f"news:{tag}",
    )
    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    await js.add_stream(js_api.StreamConfig(name=stream, subjects=[f"{subject}.>"]))
    path = config(
        tmp_path,
        prefix,
        f"""type = "nats_jetstream"
[consumers.nats_jetstream]
url = "nats://127.0.0.1:4222"
stream_name = "{stream}"
subjects = ["{subject}.commands"]
durable_consumer_name = "livehub"
""",
    )
    method = {"centrifugo-method": "publish"}
    try:
        with serve(path) as port:
            await until(lambda: _consumer_exists(js, stream), "the durable consumer")
            await js.publish(f"{subject}.commands", publish_command(channel, 1), headers=method)
            await js.publish(
                f"{subject}.other", publish_command(channel, 99), headers=method
            )  # not its subject
            await js.publish(f"{subject}.commands", b"{broken", headers=method)
            whole = orjson.dumps({"method": "publish", "payload": {"channel": channel, "data": {"n": 2}}})
            await js.publish(f"{subject}.commands", whole)
            await until(lambda: _has(port, channel, 2), "two publications")
            await until(lambda: _all_acked(js, stream), "every message acknowledged")
        await js.publish(f"{subject}.commands", publish_command(channel, 3), headers=method)
        with serve(path) as port:
            await until(lambda: _has(port, channel, 3), "the command published while the node was down")
            await asyncio.sleep(1.0)
            assert [d["n"] for d in await history(port, channel)] == [1, 2, 3]
            assert await _all_acked(js, stream)
    finally:
        await js.delete_stream(stream)
        await nc.close()
        await drop_keys(redis_client, prefix)


async def test_nats_a_failed_command_is_delivered_again_until_it_is_done(
    tmp_path: Path, redis_client: Any
) -> None:
    """As for Redis Streams: the node's engine stops, the message is negatively acknowledged
    and delivered again until the engine is back; then it is executed once and acknowledged."""
    tag = uuid.uuid4().hex[:12]
    stream, subject, channel = f"LIVEHUB_TEST_{tag}", f"livehub.test.{tag}", f"news:{tag}"
    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    await js.add_stream(js_api.StreamConfig(name=stream, subjects=[f"{subject}.>"]))
    engine_port = free_port()
    engine_cmd = ["redis-server", "--port", str(engine_port), "--save", "", "--appendonly", "no"]
    text = config(
        tmp_path,
        "livehub",
        f"""type = "nats_jetstream"
[consumers.nats_jetstream]
stream_name = "{stream}"
durable_consumer_name = "livehub"
""",
    ).read_text()
    (tmp_path / "retry.toml").write_text(text.replace("127.0.0.1:6379/0", f"127.0.0.1:{engine_port}/0"))
    try:
        with running(engine_cmd, engine_port) as engine, serve(tmp_path / "retry.toml") as port:
            await until(lambda: _consumer_exists(js, stream), "the durable consumer")
            stop(engine)
            await js.publish(
                f"{subject}.x", publish_command(channel, 1), headers={"centrifugo-method": "publish"}
            )
            await until(lambda: _delivered(js, stream, 2), "the failed message delivered again")
            with running(engine_cmd, engine_port):
                await until(lambda: _has(port, channel, 1), "the command executed once the engine is back")
                await until(lambda: _all_acked(js, stream), "the message acknowledged")
                await asyncio.sleep(1.0)
                assert [d["n"] for d in await history(port, channel)] == [1]
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def _delivered(js: Any, stream: str, times: int) -> bool:
    info = await js.consumer_info(stream, "livehub")
    return bool(info.num_redelivered >= 1 and info.delivered.consumer_seq >= times)


async def _has(port: int, channel: str, n: int) -> bool:
    return len(await history(port, channel)) >= n


async def _nothing_pending(client: Any, stream: str) -> bool:
    return await _pending(client, stream, 0)


async def _pending(client: Any, stream: str, n: int) -> bool:
    summary = await client.xpending(stream, "livehub")
    return bool(summary["pending"] == n)


async def _consumer_exists(js: Any, stream: str) -> bool:
    try:
        await js.consumer_info(stream, "livehub")
    except nats.js.errors.NotFoundError:
        return False
    return True


async def _all_acked(js: Any, stream: str) -> bool:
    info = await js.consumer_info(stream, "livehub")
    return bool(info.num_ack_pending == 0 and info.num_pending == 0)


def test_a_message_may_carry_its_method_in_the_payload() -> None:
    assert split(b'{"method": "publish", "payload": {"channel": "a", "data": 1}}') == (
        "publish",
        b'{"channel":"a","data":1}',
    )
    assert split(b'{"method": "publish", "payload": "{\\"channel\\": \\"a\\"}"}') == (
        "publish",
        b'{"channel": "a"}',
    )
    assert split(b"[1]") is None and split(b"nope") is None


def test_consumer_config_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.json"

    def load(consumers: list[dict[str, Any]]) -> None:
        path.write_text(orjson.dumps({"consumers": consumers}).decode())
        load_settings(path)

    load([{"name": "off", "type": "kafka"}])  # disabled: checked, not run
    with pytest.raises(ConfigError, match="is not supported"):
        load([{"name": "kk", "enabled": True, "type": "kafka"}])
    with pytest.raises(ConfigError, match="needs address, streams and consumer_group"):
        load([{"name": "rr", "enabled": True, "type": "redis_stream", "redis_stream": {"streams": ["s"]}}])
    with pytest.raises(ConfigError, match="needs url, stream_name and durable_consumer_name"):
        load([{"name": "nn", "enabled": True, "type": "nats_jetstream"}])
    with pytest.raises(ConfigError, match="unique"):
        load([{"name": "aa"}, {"name": "aa"}])
    with pytest.raises(ConfigError, match="consumers\\[0\\].kafka: Centrifugo's option"):
        load([{"name": "kk", "kafka": {"brokers": ["x"]}}])
    with pytest.raises(ConfigError, match="did you mean consumers\\[0\\].redis_stream.streams"):
        load([{"name": "rr", "redis_stream": {"stream": ["x"]}}])
