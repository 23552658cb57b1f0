"""Shared poll subscriptions in an embedded app (the poll function in Python), track
signatures, the bounds on tracked keys; and the app's Python hooks next to proxies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from livehub import Hub, Settings
from livehub.core.shared_poll import PolledItem, sign_keys, verify_signature
from livehub.protocol.codes import Error
from livehub.settings import SharedPollSettings
from livehub.testing import HubTestClient, ProtocolError
from tests.backend import Backend, backend

SECRET = "poll-secret"


def test_signature_verifies_for_its_keys_user_and_channel_only() -> None:
    cfg = SharedPollSettings(hmac_secret_key=SECRET)
    good = sign_keys(SECRET, "votes:1", ["a", "b"], "alice", ttl=60)
    assert verify_signature(cfg, "votes:1", good, ["a", "b"], "alice") > time.time()
    for channel, keys, user in [
        ("votes:2", ["a", "b"], "alice"),
        ("votes:1", ["a"], "alice"),
        ("votes:1", ["a", "b"], "bob"),
    ]:
        with pytest.raises(Error) as refused:
            verify_signature(cfg, channel, good, keys, user)
        assert refused.value.code == 103
    with pytest.raises(Error) as malformed:
        verify_signature(cfg, "votes:1", "garbage", ["a"], "alice")
    assert malformed.value.code == 103
    expired = sign_keys(SECRET, "votes:1", ["a"], "alice", ttl=-60)
    with pytest.raises(Error) as late:
        verify_signature(cfg, "votes:1", expired, ["a"], "alice")
    assert late.value.code == 109
    rotated = SharedPollSettings(hmac_secret_key="new", hmac_previous_secret_key=SECRET)
    assert verify_signature(rotated, "votes:1", good, ["a", "b"], "alice")


def _app(mode: str = "", max_keys: int = 100, per_node: int = 1000) -> tuple[FastAPI, Hub, dict[str, Any]]:
    settings = Settings(
        client={"insecure": True},
        shared_poll={"hmac_secret_key": SECRET, "max_keys_per_node": per_node},
        channel={
            "namespaces": [
                {
                    "name": "votes",
                    "subscription_type": "shared_poll",
                    "allow_subscribe_for_client": True,
                    "shared_poll": {
                        "refresh_interval": 0.1,
                        "mode": mode,
                        "max_keys_per_connection": max_keys,
                    },
                }
            ]
        },
    )
    hub = Hub(settings)
    state: dict[str, Any] = {"values": {}, "asked": []}

    @hub.shared_poll("votes:{post}")
    async def poll(keys: dict[str, int], post: str) -> Any:
        state["asked"].append((post, dict(keys)))
        if mode == "versioned":
            return [PolledItem(k, *state["values"][k]) for k in keys if k in state["values"]]
        return {k: state["values"][k] for k in keys if k in state["values"]}

    app = FastAPI(lifespan=hub.lifespan)
    app.include_router(hub.router)
    return app, hub, state


def _track(channel: str, keys: list[str], versions: dict[str, int] | None = None) -> dict[str, Any]:
    items = [{"key": k, "version": (versions or {}).get(k, 0)} for k in keys]
    return {
        "channel": channel,
        "type": 1,
        "track": [{"signature": sign_keys(SECRET, channel, keys, ""), "items": items}],
    }


async def test_embedded_poll_function_versionless() -> None:
    app, _, state = _app()
    state["values"]["a"] = {"n": 1}
    async with HubTestClient(app) as client:
        one = await client.connect()
        two = await client.connect()
        for c in (one, two):
            result = await c.subscribe("votes:7", type=4)
            assert len(result["epoch"]) == 8
        await one.command("sub_refresh", _track("votes:7", ["a"]))
        await two.command("sub_refresh", _track("votes:7", ["a"]))
        for c in (one, two):
            push = await c.next_push("pub", "votes:7")
            assert push["pub"] == {"key": "a", "version": 1, "data": {"n": 1}}
        asked = len(state["asked"])
        await asyncio.sleep(0.35)  # unchanged data: polled, nothing pushed
        assert len(state["asked"]) - asked in (2, 3, 4)  # one poll per interval for both clients
        assert all(post == "7" and keys == {"a": 0} for post, keys in state["asked"])
        state["values"]["a"] = {"n": 2}
        push = await one.next_push("pub", "votes:7")
        assert push["pub"] == {"key": "a", "version": 2, "data": {"n": 2}}
        await one.command("sub_refresh", {"channel": "votes:7", "type": 2, "untrack": ["a"]})
        push = await two.next_push("pub", "votes:7")
        assert push["pub"]["version"] == 2


async def test_embedded_poll_function_versioned_and_removal() -> None:
    app, _, state = _app(mode="versioned")
    state["values"]["a"] = (b'{"v":5}', 5)
    async with HubTestClient(app) as client:
        one = await client.connect()
        assert "epoch" not in await one.subscribe("votes:1", type=4)
        await one.command("sub_refresh", _track("votes:1", ["a"], {"a": 5}))
        await asyncio.sleep(0.3)  # the client has version 5: nothing to send
        state["values"]["a"] = (b'{"v":6}', 6)
        push = await one.next_push("pub", "votes:1")
        assert push["pub"] == {"key": "a", "version": 6, "data": {"v": 6}}
        assert state["asked"][0][1] == {"a": 5}  # the lowest version a tracker has
        state["values"]["a"] = (None, 7, True)
        push = await one.next_push("pub", "votes:1")
        assert push["pub"] == {"key": "a", "version": 7, "removed": True}


async def test_tracked_keys_are_bounded_per_connection_and_node() -> None:
    app, hub, _ = _app(max_keys=2, per_node=3)
    async with HubTestClient(app) as client:
        one = await client.connect()
        await one.subscribe("votes:1", type=4)
        with pytest.raises(ProtocolError) as over:
            await one.command("sub_refresh", _track("votes:1", ["a", "b", "c"]))
        assert over.value.code == 106
        await one.command("sub_refresh", _track("votes:1", ["a", "b"]))
        two = await client.connect()
        await two.subscribe("votes:2", type=4)
        await two.command("sub_refresh", _track("votes:2", ["x"]))
        with pytest.raises(ProtocolError) as node_full:
            await two.command("sub_refresh", _track("votes:2", ["y"]))
        assert node_full.value.code == 106
        assert hub.node.shared_poll.tracked == 3
        await one.unsubscribe("votes:1")
        assert hub.node.shared_poll.tracked == 1


async def test_types_must_match_the_namespace() -> None:
    app, _, _ = _app()
    async with HubTestClient(app) as client:
        one = await client.connect()
        with pytest.raises(ProtocolError) as stream_in_poll:
            await one.subscribe("votes:1")
        assert stream_in_poll.value.code == 103
        with pytest.raises(ProtocolError) as poll_elsewhere:
            await one.subscribe("other", type=4)
        assert poll_elsewhere.value.code == 108
        with pytest.raises(ProtocolError) as untracked:
            await one.command("sub_refresh", _track("votes:1", ["a"]))
        assert untracked.value.code == 103


@pytest.fixture
def back() -> Iterator[Backend]:
    with backend() as b:
        yield b


async def test_python_hooks_and_proxies_are_one_hook(back: Backend) -> None:
    """A Python on_subscribe for one namespace, the subscribe proxy for another: the session
    asks the node's one subscribe hook either way."""
    back.answers["/subscribe"] = lambda body: (
        {"result": {"data": {"seat": 1}}}
        if body["channel"] == "room:ok"
        else {"error": {"code": 4403, "message": "no"}}
    )
    settings = Settings(
        client={"insecure": True},
        channel={
            "proxy": {"subscribe": {"endpoint": back.url("/subscribe")}},
            "namespaces": [{"name": "room", "subscribe_proxy_enabled": True}, {"name": "chat"}],
        },
    )
    hub = Hub(settings)

    @hub.on_subscribe("chat:{room}")
    async def may_join(client: Any, room: str) -> bool:
        return room == "lobby"

    app = FastAPI(lifespan=hub.lifespan)
    app.include_router(hub.router)
    async with HubTestClient(app) as client:
        one = await client.connect()
        assert (await one.subscribe("room:ok"))["data"] == {"seat": 1}
        with pytest.raises(ProtocolError) as refused:
            await one.subscribe("room:no")
        assert refused.value.code == 4403
        await one.subscribe("chat:lobby")
        with pytest.raises(ProtocolError) as python_says_no:
            await one.subscribe("chat:vip")
        assert python_says_no.value.code == 103
        assert [r.body["channel"] for r in back.seen("/subscribe")] == ["room:ok", "room:no"]


def _field(number: int, payload: bytes | int) -> bytes:
    from livehub.protocol.protobuf import delimited, varint

    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + delimited(payload)


def test_protobuf_track_command_and_keyed_publication() -> None:
    """The hand-written codec: SubRefreshRequest's type/track/untrack, SubscribeRequest's type,
    a Publication's key/version/removed (field numbers of the protocol's client.proto)."""
    from livehub.protocol.protobuf import decode_command, encode_push, encode_reply

    item = _field(1, b"k1") + _field(2, 7)
    batch = _field(1, b"1:2:sig") + _field(2, item) + _field(2, _field(1, b"k2"))
    request = _field(1, b"votes:1") + _field(3, 1) + _field(4, batch) + _field(5, b"old")
    command = decode_command(_field(1, 3) + _field(15, request))
    assert command.method == "sub_refresh"
    params = command.request
    assert params.type == 1
    assert params.track == (("1:2:sig", (("k1", 7), ("k2", 0))),)
    assert params.untrack == ("old",)
    subscribe = decode_command(_field(1, 4) + _field(5, _field(1, b"votes:1") + _field(15, 4)))
    assert subscribe.request.type == 4
    push = encode_push("votes:1", "pub", {"key": "k1", "version": 300, "removed": True})
    pub = _field(11, b"k1") + _field(16, 300) + _field(12, 1)  # in the dict's order
    assert push.endswith(_field(4, pub))
    reply = encode_reply(5, "subscribe", {"type": 4, "epoch": "abcd1234"})
    assert _field(15, 4) in reply and b"abcd1234" in reply
