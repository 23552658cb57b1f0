"""Map subscriptions end to end in process (memory engine): the server API's map methods,
the subscribe phases (state pages, stream pages, live), client writes and their
permissions, presence kept as maps, tags filters, and the Hub's Python API.

The centrifuge-js SDK runs the same protocol in tests/peers (sdk.test.mjs) and in the
centrifuge-js repository's own suite (``make js-suite``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from livehub.app import create_app
from livehub.core.node import Node
from livehub.models import StreamPosition
from livehub.protocol.codes import Error
from livehub.settings import Settings
from livehub.testing import HubTestClient, ProtocolError, TestConnection

KEY = "api-key"

MAP_NAMESPACES: list[dict[str, Any]] = [
    {
        "name": "live",
        "subscription_type": "map",
        "map": {
            "mode": "ephemeral",
            "key_ttl": "60s",
            "allow_publish_for_subscriber": True,
            "min_page_size": 1,
        },
        "map_clients_presence_channel_prefix": "who:",
        "map_users_presence_channel_prefix": "users:",
        "allow_tags_filter": True,
    },
    {
        "name": "kept",
        "subscription_type": "map",
        "map": {"mode": "persistent", "stream_size": 3, "min_page_size": 1, "max_keys": 4},
        "allowed_delta_types": ["fossil"],
        "client_publish_debounce_interval": "50ms",
    },
    {"name": "who", "subscription_type": "map_clients", "map": {"mode": "ephemeral", "key_ttl": "60s"}},
    {"name": "users", "subscription_type": "map_users", "map": {"mode": "ephemeral", "key_ttl": "60s"}},
    {
        "name": "cursors",
        "subscription_type": "map",
        "map": {
            "mode": "ephemeral",
            "key_ttl": "60s",
            "client_key": "client_id",
            "allow_publish_for_subscriber": True,
            "remove_client_on_unsubscribe": True,
            "min_page_size": 1,
            "subscribe_catch_up_timeout": "200ms",
        },
    },
    {"name": "plain"},
]
SECRET = "a-test-secret-that-is-at-least-32-bytes-long"


def settings() -> Settings:
    return Settings.model_validate(
        {
            "http_api": {"key": KEY},
            "client": {
                "insecure": False,
                "allow_anonymous_connect_without_token": True,
                "token": {"hmac_secret_key": SECRET},
            },
            "channel": {
                "without_namespace": {
                    "allow_subscribe_for_client": True,
                    "allow_subscribe_for_anonymous": True,
                },
                "namespaces": [
                    {**ns, "allow_subscribe_for_client": True, "allow_subscribe_for_anonymous": True}
                    for ns in MAP_NAMESPACES
                ],
            },
        }
    )


@dataclass
class Env:
    app: FastAPI
    hub: HubTestClient
    http: httpx.AsyncClient

    @property
    def node(self) -> Node:
        node: Node = self.app.state.node
        return node

    async def api(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(f"/api/{method}", json=body, headers={"X-API-Key": KEY})
        reply: dict[str, Any] = response.json()
        return reply


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    app = create_app(settings())
    transport = httpx.ASGITransport(app=app)
    async with HubTestClient(app) as hub, httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield Env(app, hub, http)


async def load(
    conn: TestConnection, channel: str, limit: int = 0, type_: int = 1, **params: Any
) -> list[dict[str, Any]]:
    """Subscribe as the SDK does: state pages, then stream pages, until live; every reply."""
    replies = []
    params["type"] = type_
    request: dict[str, Any] = {"phase": 2, **params}
    if limit:
        request["limit"] = limit
    while True:
        result = await conn.subscribe(channel, **request)
        replies.append(result)
        if not result.get("phase"):
            return replies
        if result["phase"] == 2 and result.get("cursor"):
            request = {
                **request,
                "cursor": result["cursor"],
                "offset": result["offset"],
                "epoch": result["epoch"],
            }
        else:
            offset = result["offset"]
            if result["phase"] == 1:
                offset = result["offset"]
            request = {"phase": 1, "offset": offset, "epoch": result["epoch"], **params}
            if limit:
                request["limit"] = limit


def state_keys(replies: list[dict[str, Any]]) -> list[str]:
    return [entry["key"] for reply in replies for entry in reply.get("state", [])]


# -- the server API


async def test_api_publish_read_remove_and_clear(env: Env) -> None:
    assert await env.api("map_publish", {"channel": "kept:a", "key": "x", "data": {"n": 1}}) == {
        "result": {"offset": 1, "epoch": (await env.node.maps.top("kept:a")).epoch}
    }
    await env.api("map_publish", {"channel": "kept:a", "key": "y", "data": {"n": 2}, "tags": {"t": "1"}})
    state = (await env.api("map_read_state", {"channel": "kept:a"}))["result"]
    assert [(e["key"], e["data"], e["offset"]) for e in state["entries"]] == [
        ("x", {"n": 1}, 1),
        ("y", {"n": 2}, 2),
    ]
    assert state["entries"][1]["tags"] == {"t": "1"} and state["offset"] == 2 and "cursor" not in state
    page = (await env.api("map_read_state", {"channel": "kept:a", "limit": 1}))["result"]
    assert [e["key"] for e in page["entries"]] == ["x"] and page["cursor"] == "x"
    one = (await env.api("map_read_state", {"channel": "kept:a", "key": "y"}))["result"]
    assert [e["key"] for e in one["entries"]] == ["y"]
    removed = (await env.api("map_remove", {"channel": "kept:a", "key": "x"}))["result"]
    assert removed["offset"] == 3
    missing = (await env.api("map_remove", {"channel": "kept:a", "key": "x"}))["result"]
    assert missing["suppressed"] is True and missing["suppress_reason"] == "key_not_found"
    stream = (await env.api("map_read_stream", {"channel": "kept:a", "since_offset": 1, "limit": -1}))[
        "result"
    ]
    assert [(e["key"], e.get("removed", False)) for e in stream["entries"]] == [("y", False), ("x", True)]
    assert (await env.api("map_stats", {"channel": "kept:a"}))["result"] == {"num_keys": 1}
    assert (await env.api("map_clear", {"channel": "kept:a"}))["result"] == {}
    assert (await env.api("map_stats", {"channel": "kept:a"}))["result"] == {}


async def test_api_key_modes_and_refusals(env: Env) -> None:
    new = await env.api("map_publish", {"channel": "kept:b", "key": "k", "data": 1, "key_mode": "if_new"})
    assert new["result"]["offset"] == 1
    again = await env.api("map_publish", {"channel": "kept:b", "key": "k", "data": 2, "key_mode": "if_new"})
    assert again["result"]["suppress_reason"] == "key_exists"
    assert (await env.api("map_publish", {"channel": "plain:x", "key": "k", "data": 1}))["error"][
        "code"
    ] == 108
    assert (await env.api("map_publish", {"channel": "kept:b", "data": 1}))["error"]["code"] == 107
    assert (await env.api("map_publish", {"channel": "kept:b", "key": "k"}))["error"]["code"] == 107
    for unsupported in ({"version": 3}, {"idempotency_key": "i"}, {"score": 5}):
        reply = await env.api("map_publish", {"channel": "kept:b", "key": "k", "data": 1, **unsupported})
        assert reply["error"]["code"] == 108, unsupported
    for key in ("k2", "k3", "k4"):
        await env.api("map_publish", {"channel": "kept:b", "key": key, "data": 1})
    assert (await env.api("map_publish", {"channel": "kept:b", "key": "k5", "data": 1}))["error"][
        "code"
    ] == 106
    old = await env.api(
        "map_read_stream", {"channel": "kept:b", "since_offset": 0, "since_epoch": "old", "limit": -1}
    )
    assert old["error"]["code"] == 112


async def test_api_batch_takes_map_methods(env: Env) -> None:
    reply = await env.http.post(
        "/api/batch",
        json={
            "commands": [
                {"map_publish": {"channel": "kept:c", "key": "a", "data": 1}},
                {"map_stats": {"channel": "kept:c"}},
            ]
        },
        headers={"X-API-Key": KEY},
    )
    replies = reply.json()["replies"]
    assert replies[0]["map_publish"]["offset"] == 1 and replies[1]["map_stats"] == {"num_keys": 1}


# -- subscribing


async def test_state_pages_then_live_then_changes(env: Env) -> None:
    for key in ["c", "a", "b"]:
        await env.api("map_publish", {"channel": "live:room", "key": key, "data": {"k": key}})
    conn = await env.hub.connect()
    replies = await load(conn, "live:room", limit=2)
    assert [r.get("phase", 0) for r in replies] == [2, 0]
    assert replies[0]["cursor"] == "b" and state_keys(replies) == ["a", "b", "c"]
    assert replies[-1]["type"] == 1 and "recoverable" not in replies[-1]  # no stream: no recovery
    await env.api("map_publish", {"channel": "live:room", "key": "d", "data": {"k": "d"}})
    pub = await conn.next_publication("live:room")
    assert pub["key"] == "d" and pub["data"] == {"k": "d"}
    await env.api("map_remove", {"channel": "live:room", "key": "a"})
    pub = await conn.next_publication("live:room")
    assert pub == {"key": "a", "removed": True, "time": pub["time"]}


async def test_a_positioned_map_pages_the_stream_and_recovers(env: Env) -> None:
    conn = await env.hub.connect()
    replies = await load(conn, "kept:s")
    live = replies[-1]
    assert live["recoverable"] is True and live["offset"] == 0 and live["publish_debounce"] == 50
    await env.api("map_publish", {"channel": "kept:s", "key": "a", "data": 1})
    assert (await conn.next_publication("kept:s"))["offset"] == 1
    await conn.unsubscribe("kept:s")
    await env.api("map_publish", {"channel": "kept:s", "key": "b", "data": 2})
    position = {"offset": 1, "epoch": live["epoch"]}
    recovered = await conn.subscribe("kept:s", type=1, phase=1, recover=True, **position)
    assert recovered["recovered"] is True and [p["key"] for p in recovered["publications"]] == ["b"]
    assert recovered["offset"] == 2
    await conn.unsubscribe("kept:s")
    for n in range(4):  # the stream keeps 3 changes: offset 2 is gone
        await env.api("map_publish", {"channel": "kept:s", "key": "a", "data": n})
    with pytest.raises(ProtocolError) as refused:
        await conn.subscribe("kept:s", type=1, phase=1, recover=True, offset=2, epoch=live["epoch"])
    assert refused.value.code == 112
    with pytest.raises(ProtocolError) as stale:
        await conn.subscribe("kept:s", type=1, phase=0, recover=True, offset=6, epoch="another")
    assert stale.value.code == 112


async def test_changes_made_while_paging_are_not_lost(env: Env) -> None:
    for key in "abcd":
        await env.api("map_publish", {"channel": "kept:p", "key": key, "data": 0})
    conn = await env.hub.connect()
    first = await conn.subscribe("kept:p", type=1, phase=2, limit=2)
    assert first["phase"] == 2 and first["cursor"] == "b" and first["offset"] == 4
    await env.api("map_publish", {"channel": "kept:p", "key": "d", "data": 1})  # on the next page
    second = await conn.subscribe(
        "kept:p", type=1, phase=2, limit=2, cursor="b", offset=first["offset"], epoch=first["epoch"]
    )
    assert [e["key"] for e in second["state"]] == ["c"]  # d changed since: it comes from the stream
    assert second.get("phase", 0) == 0 and [p["key"] for p in second["publications"]] == ["d"]


async def test_subscribe_types_must_match_the_namespace(env: Env) -> None:
    conn = await env.hub.connect()
    for channel, type_ in (("plain:x", 1), ("live:x", 0), ("live:x", 2), ("who:x", 1)):
        with pytest.raises(ProtocolError) as refused:
            await conn.subscribe(channel, type=type_, phase=2)
        assert refused.value.code == 103, (channel, type_)
    with pytest.raises(ProtocolError) as continued:
        await conn.subscribe("live:y", type=1, phase=2, cursor="a")  # a later page of no load
    assert continued.value.code == 103


async def test_client_writes_follow_the_namespace(env: Env) -> None:
    writer = await env.hub.connect()
    with pytest.raises(ProtocolError) as refused:  # allow_publish_for_subscriber: subscribe first
        await writer.command("publish", {"channel": "live:w", "type": 1, "key": "k", "data": 1})
    assert refused.value.code == 103
    await load(writer, "live:w")
    await writer.command("publish", {"channel": "live:w", "type": 1, "key": "k", "data": {"v": 1}})
    pub = await writer.next_publication("live:w")
    assert pub["key"] == "k" and pub["info"]["client"] == writer.client_id
    with pytest.raises(ProtocolError) as no_remove:
        await writer.command("publish", {"channel": "live:w", "type": 1, "key": "k", "removed": True})
    assert no_remove.value.code == 103
    with pytest.raises(ProtocolError) as not_a_map:
        await writer.command("publish", {"channel": "plain:w", "type": 1, "key": "k", "data": 1})
    assert not_a_map.value.code == 108


async def test_presence_as_maps(env: Env) -> None:
    watcher = await env.hub.connect()
    await load(watcher, "who:live:game", type_=2)
    await load(watcher, "users:live:game", type_=3)
    player = await env.hub.connect()
    await load(player, "live:game")
    joined = await watcher.next_publication("who:live:game")
    assert joined["key"] == player.client_id and joined["info"]["client"] == player.client_id
    await player.unsubscribe("live:game")
    left = await watcher.next_publication("who:live:game")
    assert left["key"] == player.client_id and left["removed"] is True
    # an anonymous player has no user entry; the users map stays empty
    assert (await env.api("map_stats", {"channel": "users:live:game"}))["result"] == {}


async def test_users_presence_is_one_entry_per_user_and_outlives_a_quick_leave(env: Env) -> None:
    token = jwt.encode({"sub": "ann"}, SECRET, algorithm="HS256")
    first, second = await env.hub.connect(token=token), await env.hub.connect(token=token)
    await load(first, "live:hall")
    await load(second, "live:hall")
    users = (await env.api("map_read_state", {"channel": "users:live:hall"}))["result"]["entries"]
    assert [e["key"] for e in users] == ["ann"]
    clients = (await env.api("map_read_state", {"channel": "who:live:hall"}))["result"]["entries"]
    assert sorted(e["key"] for e in clients) == sorted([first.client_id, second.client_id])
    await first.unsubscribe("live:hall")
    await second.unsubscribe("live:hall")
    assert (await env.api("map_stats", {"channel": "who:live:hall"}))["result"] == {}
    assert (await env.api("map_stats", {"channel": "users:live:hall"}))["result"] == {"num_keys": 1}


async def test_client_key_and_remove_on_unsubscribe(env: Env) -> None:
    conn = await env.hub.connect()
    await load(conn, "cursors:doc")
    await conn.command(
        "publish", {"channel": "cursors:doc", "type": 1, "key": "someone-else", "data": [1, 2]}
    )
    assert (await conn.next_publication("cursors:doc"))["key"] == conn.client_id
    await conn.unsubscribe("cursors:doc")
    assert (await env.api("map_stats", {"channel": "cursors:doc"}))["result"] == {}


async def test_a_load_that_takes_too_long_is_dropped(env: Env) -> None:
    for key in "ab":
        await env.api("map_publish", {"channel": "cursors:slow", "key": key, "data": 1})
    conn = await env.hub.connect()
    first = await conn.subscribe("cursors:slow", type=1, phase=2, limit=1)
    assert first["cursor"] == "a"
    await asyncio.sleep(0.3)  # map.subscribe_catch_up_timeout is 200ms
    await conn.send_raw(
        '{"id":99,"subscribe":{"channel":"cursors:slow","type":1,"phase":2,"limit":1,"cursor":"a"}}'
    )
    assert (await conn.wait_closed()).code == 3008


async def test_tags_filter(env: Env) -> None:
    await env.api("map_publish", {"channel": "live:t", "key": "a", "data": 1, "tags": {"team": "x"}})
    await env.api("map_publish", {"channel": "live:t", "key": "b", "data": 2, "tags": {"team": "y"}})
    conn = await env.hub.connect()
    replies = await load(conn, "live:t", tf={"key": "team", "cmp": "eq", "val": "y"})
    assert state_keys(replies) == ["b"]
    await env.api("map_publish", {"channel": "live:t", "key": "c", "data": 3, "tags": {"team": "x"}})
    await env.api("map_publish", {"channel": "live:t", "key": "d", "data": 4, "tags": {"team": "y"}})
    assert (await conn.next_publication("live:t"))["key"] == "d"
    with pytest.raises(ProtocolError) as bad:
        await conn.subscribe("live:u", type=1, phase=2, tf={"key": "team", "cmp": "what", "val": "y"})
    assert bad.value.code == 107
    with pytest.raises(ProtocolError) as not_allowed:
        await conn.subscribe("kept:u", type=1, phase=2, tf={"key": "team", "cmp": "eq", "val": "y"})
    assert not_allowed.value.code == 107


async def test_map_deltas_are_per_key(env: Env) -> None:
    big = "x" * 300
    conn = await env.hub.connect()
    await load(conn, "kept:d", delta="fossil")
    for key, n in (("a", 1), ("b", 1), ("a", 2)):
        await env.api("map_publish", {"channel": "kept:d", "key": key, "data": {"n": n, "pad": big}})
    pubs = [await conn.next_publication("kept:d") for _ in range(3)]
    assert [p.get("delta", False) for p in pubs] == [False, False, True]
    assert isinstance(pubs[0]["data"], str)  # the base a delta client keeps, as text


async def test_a_map_load_counts_against_the_channel_limit() -> None:
    s = settings()
    s.client.channel_limit = 1
    app = create_app(s)
    async with HubTestClient(app) as hub:
        conn = await hub.connect()
        first = await conn.subscribe("kept:l1", type=1, phase=2, limit=1)
        assert first.get("phase", 0) == 0  # empty: live at once
        with pytest.raises(ProtocolError) as refused:
            await conn.subscribe("kept:l2", type=1, phase=2)
        assert refused.value.code == 106


# -- the Hub's Python API


async def test_hub_map_methods() -> None:
    from livehub.hub import Hub

    hub = Hub(settings())
    await hub.node.start()
    try:
        update = await hub.map_publish("kept:h", "a", {"v": 1})
        assert update.position.offset == 1 and not update.suppressed
        assert (await hub.map_publish("kept:h", "a", {"v": 2}, key_mode="if_new")).suppressed == "key_exists"
        page = await hub.map_state("kept:h")
        assert [(p.key, p.data) for p in page.entries] == [("a", b'{"v":1}')]
        pubs, top = await hub.map_stream("kept:h", StreamPosition(0, update.position.epoch))
        assert [p.key for p in pubs] == ["a"] and top == update.position
        assert await hub.map_stats("kept:h") == 1
        assert (await hub.map_remove("kept:h", "a")).position.offset == 2
        await hub.map_clear("kept:h")
        with pytest.raises(Error) as not_a_map:
            await hub.map_publish("plain:h", "a", 1)
        assert not_a_map.value.code == 108
    finally:
        await hub.node.stop(grace=0)
