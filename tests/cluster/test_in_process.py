"""Two nodes in one process on a real Redis, driven by protocol test clients: what the
process-level tests cannot make happen on cue — a node missing publications, a stream
lost under a subscriber, an engine that cannot be reached."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from livehub import Hub, Settings
from livehub.api import api_router
from livehub.core.control import RefreshUser, Target
from livehub.testing import HubTestClient, ProtocolError
from tests.engines.contract import delete_redis_keys, require_service

from .harness import API_KEY, REDIS_DB, REDIS_URL, SECRET, engine_url, token, unique_prefix


def settings(engine: str) -> Settings:
    return Settings(
        client={
            "insecure": True,
            "token": {"hmac_secret_key": SECRET},
            "channel_position_check_delay": 0.2,
            "presence_update_interval": 0.5,
        },
        channel={
            "namespaces": [
                {"name": "stream", "history_size": 100, "history_ttl": 300, "force_recovery": True},
                {
                    "name": "board",
                    "subscription_type": "map",
                    "map": {"mode": "persistent", "min_page_size": 1},
                    "map_clients_presence_channel_prefix": "boardwho:",
                },
                {
                    "name": "boardwho",
                    "subscription_type": "map_clients",
                    "map": {"mode": "ephemeral", "key_ttl": 60},
                },
            ]
        },
        http_api={"key": API_KEY},
        engine={"url": engine},
    )


def make_app(engine: str) -> tuple[FastAPI, Hub]:
    hub = Hub(settings(engine))
    app = FastAPI()
    app.include_router(hub.router)
    app.include_router(api_router(hub.node))
    return app, hub


@asynccontextmanager
async def nodes(count: int) -> AsyncIterator[list[tuple[Hub, HubTestClient]]]:
    require_service(REDIS_URL, "Redis")
    prefix = unique_prefix()
    try:
        async with AsyncExitStack() as stack:
            started = []
            for _ in range(count):
                app, hub = make_app(engine_url(prefix))
                started.append((hub, await stack.enter_async_context(HubTestClient(app))))
            yield started
    finally:
        await delete_redis_keys([f"{REDIS_URL}/{REDIS_DB}"], prefix)


async def collect_until(conn: Any, kind: str, channel: str) -> list[dict[str, Any]]:
    """Every push up to and including the first ``kind`` push of ``channel``."""
    seen = []
    while True:
        push = await conn.next_push()
        seen.append(push)
        if kind in push and push.get("channel") == channel:
            return seen


async def test_hub_operations_reach_connections_on_another_node() -> None:
    async with nodes(2) as [(hub1, _), (_, client2)]:
        alice = await client2.connect(token=token("alice"))
        bob = await client2.connect(token=token("bob"))
        carol = await client2.connect(token=token("carol"))

        await hub1.subscribe("bob", "stream:s", data={"why": "server"})
        push = await bob.next_push("subscribe", "stream:s")
        assert push["subscribe"]["data"] == {"why": "server"} and push["subscribe"]["recoverable"]
        await hub1.unsubscribe("bob", "stream:s")
        push = await bob.next_push("unsubscribe", "stream:s")
        assert push["unsubscribe"]["code"] == 2000

        hub1.node.command_soon(RefreshUser(Target("carol"), expired=True))
        assert (await carol.wait_closed()).code == 3005

        assert hub1.disconnect("alice") == 0  # not on this node; node 2 closes it
        assert (await alice.wait_closed()).code == 3503
        assert bob.closed is None


async def test_position_check_finds_publications_a_node_missed() -> None:
    """The node's broker link loses the last publications (nothing follows to reveal the
    gap): the periodic position check sees the client behind the stream top and makes it
    resubscribe (2500), and recovery brings back what was missed."""
    async with nodes(2) as [(hub1, client1), (hub2, _)]:
        alice = await client1.connect()
        sub = await alice.subscribe("stream:tail")
        for n in (1, 2):
            await hub2.publish("stream:tail", {"n": n})
            assert (await alice.next_publication("stream:tail"))["offset"] == n

        node1 = hub1.node
        node1.handle_publication = lambda *args: None  # type: ignore[method-assign]
        for n in (3, 4):
            await hub2.publish("stream:tail", {"n": n})
        del node1.handle_publication  # back to the class's

        seen = await collect_until(alice, "unsubscribe", "stream:tail")
        assert seen[-1]["unsubscribe"]["code"] == 2500
        assert not [p for p in seen if "pub" in p]
        result = await alice.subscribe("stream:tail", recover=True, offset=2, epoch=sub["epoch"])
        assert result["recovered"] is True
        assert [(p["offset"], p["data"]["n"]) for p in result["publications"]] == [(3, 3), (4, 4)]
        await hub2.publish("stream:tail", {"n": 5})
        assert (await alice.next_publication("stream:tail"))["offset"] == 5


async def test_a_publication_of_a_new_epoch_is_not_taken_for_a_continuation() -> None:
    """The stream was lost (e.g. Redis restarted empty) and begins again at offset 1 with
    a new epoch: the subscriber is made to resubscribe and told it cannot recover."""
    async with nodes(2) as [(hub1, client1), (hub2, _)]:
        alice = await client1.connect()
        sub = await alice.subscribe("stream:lost")
        for n in (1, 2, 3):
            await hub2.publish("stream:lost", {"n": n})
            await alice.next_publication("stream:lost")
        admin = aioredis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}")
        try:
            prefix = hub1.node.settings.engine.url.split("prefix=")[1].split("&")[0]
            await admin.delete(f"{prefix}:meta:{{stream:lost}}", f"{prefix}:stream:{{stream:lost}}")
        finally:
            await admin.aclose()
        await hub2.publish("stream:lost", {"n": "new"})

        seen = await collect_until(alice, "unsubscribe", "stream:lost")
        assert seen[-1]["unsubscribe"]["code"] == 2500
        assert not [p for p in seen if "pub" in p]
        result = await alice.subscribe("stream:lost", recover=True, offset=3, epoch=sub["epoch"])
        assert "recovered" not in result and result["was_recovering"] is True
        assert result["epoch"] != sub["epoch"] and result["offset"] == 1


async def test_engine_unavailable_is_error_100_and_a_one_line_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="livehub")
    app, hub = make_app("redis://127.0.0.1:1/0?prefix=unreachable&connect_timeout=200ms&io_timeout=300ms")
    async with HubTestClient(app) as client:
        alice = await client.connect(token=token("alice"))
        with pytest.raises(ProtocolError) as publish:
            await alice.publish("stream:x", {"n": 1})
        assert publish.value.code == 100
        with pytest.raises(ProtocolError) as subscribe:
            await alice.subscribe("stream:x")
        assert subscribe.value.code == 100
        assert hub.node.channels() == {} and alice.closed is None
        with pytest.raises(ProtocolError) as history:
            await alice.history("stream:y")
        assert history.value.code == 100

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            headers = {"X-API-Key": API_KEY}
            for method, body in (
                ("publish", {"channel": "stream:x", "data": {}}),
                ("history", {"channel": "stream:x"}),
                ("disconnect", {"user": "bob"}),
            ):
                reply = (await http.post(f"/api/{method}", json=body, headers=headers)).json()
                assert reply == {"error": {"code": 100, "message": "internal server error"}}, method
    warnings = [r for r in caplog.records if r.name.startswith("livehub") and r.levelno >= logging.WARNING]
    assert any("engine unavailable" in r.getMessage() for r in warnings)
    assert [r.getMessage() for r in warnings if r.exc_info] == []  # no tracebacks


async def test_map_subscriptions_across_nodes() -> None:
    """A map written on one node reaches a subscriber on another, whose presence entry the
    first node reads; a change its node missed is found by the position check, and the
    subscriber recovers it from the map's stream."""
    async with nodes(2) as [(hub1, client1), (hub2, _)]:
        await hub2.map_publish("board:x", "a", {"n": 1})
        alice = await client1.connect()
        live = await alice.subscribe("board:x", type=1, phase=2)
        assert [e["key"] for e in live["state"]] == ["a"] and live["offset"] == 1
        await hub2.map_publish("board:x", "b", {"n": 2})
        pub = await alice.next_publication("board:x")
        assert (pub["key"], pub["offset"]) == ("b", 2)
        who = await hub2.map_state("boardwho:board:x")
        assert [p.key for p in who.entries] == [alice.client_id]

        node1 = hub1.node
        node1.handle_publication = lambda *args: None  # type: ignore[method-assign]
        await hub2.map_publish("board:x", "c", {"n": 3})
        await asyncio.sleep(0.3)  # the change reaches node 1 through Redis pub/sub, and is dropped
        del node1.handle_publication
        seen = await collect_until(alice, "unsubscribe", "board:x")
        assert seen[-1]["unsubscribe"]["code"] == 2500
        result = await alice.subscribe(
            "board:x", type=1, phase=1, recover=True, offset=2, epoch=live["epoch"]
        )
        assert result["recovered"] is True and [p["key"] for p in result["publications"]] == ["c"]
