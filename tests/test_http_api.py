"""The server HTTP API in process: httpx over ASGI for the API, livehub.testing for the clients.

Replies are compared whole, so a field that should be left out (a zero offset, an empty
epoch) fails the test if it is there.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import orjson
import pytest
from fastapi import FastAPI

from livehub.app import create_app
from livehub.core.node import Node
from livehub.protocol.codes import Error
from livehub.settings import Settings
from livehub.testing import HubTestClient, TestConnection

KEY = "api-key"
SECRET = "a-test-secret-that-is-at-least-32-bytes-long"


def settings(**http_api: Any) -> Settings:
    return Settings.model_validate(
        {
            "http_api": {"key": KEY, **http_api},
            "client": {"token": {"hmac_secret_key": SECRET}, "allow_anonymous_connect_without_token": True},
            "channel": {
                "without_namespace": {
                    "history_size": 10,
                    "history_ttl": "300s",
                    "presence": True,
                    "join_leave": True,
                    "allow_subscribe_for_client": True,
                    "allow_subscribe_for_anonymous": True,
                },
                "namespaces": [
                    {"name": "plain", "allow_subscribe_for_client": True},
                    {"name": "rec", "history_size": 100, "history_ttl": "300s", "force_recovery": True},
                ],
            },
        }
    )


def token(user: str) -> str:
    return jwt.encode({"sub": user}, SECRET, algorithm="HS256")


@dataclass
class Env:
    app: FastAPI
    hub: HubTestClient
    http: httpx.AsyncClient

    @property
    def node(self) -> Node:
        node: Node = self.app.state.node
        return node

    async def post(self, method: str, body: Any, **headers: str) -> httpx.Response:
        return await self.http.post(f"/api/{method}", json=body, headers={"X-API-Key": KEY, **headers})

    async def call(self, method: str, body: Any) -> dict[str, Any]:
        """The parsed body of a 200 reply."""
        response = await self.post(method, body)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        reply: dict[str, Any] = response.json()
        return reply

    async def result(self, method: str, body: Any) -> Any:
        reply = await self.call(method, body)
        assert set(reply) == {"result"}, reply
        return reply["result"]

    async def error(self, method: str, body: Any) -> dict[str, Any]:
        reply = await self.call(method, body)
        assert set(reply) == {"error"}, reply
        error: dict[str, Any] = reply["error"]
        return error

    async def connect(self, user: str = "") -> TestConnection:
        return await self.hub.connect(token=token(user) if user else "")


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    app = create_app(settings())
    transport = httpx.ASGITransport(app=app)
    async with HubTestClient(app) as hub, httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield Env(app, hub, http)


async def raw_post(settings_: Settings, path: str, **kwargs: Any) -> httpx.Response:
    app = create_app(settings_)
    async with (
        HubTestClient(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        return await http.post(path, **kwargs)


# -- auth and transport


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/api/info", {"X-API-Key": KEY}, 200),
        ("/api/info", {"Authorization": f"apikey {KEY}"}, 200),
        ("/api/info", {"Authorization": f"APIKey {KEY}"}, 200),
        (f"/api/info?api_key={KEY}", {}, 200),
        (f"/api/info?api_key={KEY}", {"X-API-Key": "wrong"}, 200),  # the query is the last resort
        ("/api/info", {}, 401),
        ("/api/info", {"X-API-Key": "wrong"}, 401),
        ("/api/info", {"X-API-Key": "wrong", "Authorization": f"apikey {KEY}"}, 401),  # header first
        ("/api/info", {"Authorization": f"Bearer {KEY}"}, 401),
        ("/api/info", {"Authorization": f"apikey {KEY} extra"}, 401),
        ("/api/info?api_key=wrong", {}, 401),
        ("/api/info", {"X-API-Key": "clé".encode()}, 401),
    ],
)
async def test_api_key_sources_and_their_order(path: str, headers: dict[str, Any], status: int) -> None:
    response = await raw_post(settings(), path, json={}, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.content == b""


async def test_no_configured_key_refuses_everyone_unless_insecure() -> None:
    refused = await raw_post(settings(key=""), "/api/info", json={}, headers={"X-API-Key": ""})
    assert (refused.status_code, refused.content) == (401, b"")
    insecure = await raw_post(settings(key="", insecure=True), "/api/info", json={})
    assert insecure.status_code == 200
    assert insecure.json()["result"]["nodes"][0]["uid"]


async def test_auth_is_checked_before_the_body_is_read() -> None:
    response = await raw_post(settings(), "/api/publish", content=b"{not json")
    assert (response.status_code, response.content) == (401, b"")


async def test_handler_prefix_is_configurable() -> None:
    s = settings(handler_prefix="/server-api")
    response = await raw_post(s, "/server-api/info", json={}, headers={"X-API-Key": KEY})
    assert response.status_code == 200
    assert (await raw_post(s, "/api/info", json={}, headers={"X-API-Key": KEY})).status_code == 404


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[]", b'"x"', b'{"channel": 5, "data": 1}', b'{"channel": "a", "tags": {"k": 1}}'],
)
async def test_a_body_that_does_not_decode_is_400(env: Env, body: bytes) -> None:
    response = await env.http.post("/api/publish", content=body, headers={"X-API-Key": KEY})
    assert (response.status_code, response.text) == (400, "Bad Request")


@pytest.mark.parametrize(
    "body", [b'{"channel": "news", "data": NaN}', b'{"channel": "news", "data": Infinity}']
)
async def test_non_finite_numbers_are_refused_not_published_as_null(env: Env, body: bytes) -> None:
    response = await env.http.post("/api/publish", content=body, headers={"X-API-Key": KEY})
    assert (response.status_code, response.text) == (400, "Bad Request")
    history = await env.result("history", {"channel": "news", "limit": -1})
    assert history["publications"] == []


async def test_a_body_over_the_size_limit_is_413_and_publishes_nothing() -> None:
    big = orjson.dumps({"channel": "news", "data": "x" * 5000})
    response = await raw_post(
        settings(max_body_size=4096), "/api/publish", content=big, headers={"X-API-Key": KEY}
    )
    assert response.status_code == 413
    fits = await raw_post(
        settings(max_body_size=8192), "/api/publish", content=big, headers={"X-API-Key": KEY}
    )
    assert fits.json()["result"]["offset"] == 1


async def test_a_bad_channels_pattern_is_107_without_a_traceback(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    assert await env.error("channels", {"pattern": "[z-a]"}) == {"code": 107, "message": "bad request"}
    assert not [r for r in caplog.records if r.levelno >= 40 or r.exc_info]


async def test_json_body_is_read_whatever_the_content_type(env: Env) -> None:
    response = await env.http.post(
        "/api/publish",
        content=b'{"channel":"news","data":{"n":1}}',
        headers={"X-API-Key": KEY, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.json() == {"result": {"offset": 1, "epoch": response.json()["result"]["epoch"]}}


async def test_only_post(env: Env) -> None:
    response = await env.http.get("/api/info", headers={"X-API-Key": KEY})
    assert response.status_code == 405


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"channel": "nope:x", "data": 1}, 404, {"code": 102, "message": "unknown channel"}),
        ({"data": 1}, 400, {"code": 107, "message": "bad request"}),
    ],
)
async def test_transport_error_mode(
    env: Env, body: dict[str, Any], status: int, error: dict[str, Any]
) -> None:
    response = await env.post("publish", body, **{"X-Centrifugo-Error-Mode": "transport"})
    assert response.status_code == status
    assert response.json() == error
    ok = await env.post(
        "publish", {"channel": "plain:x", "data": 1}, **{"X-Centrifugo-Error-Mode": "transport"}
    )
    assert (ok.status_code, ok.json()) == (200, {"result": {}})


async def test_transport_error_mode_for_108_and_for_the_rpc_104(env: Env) -> None:
    mode = {"X-Centrifugo-Error-Mode": "transport"}
    off = await env.post("history", {"channel": "plain:x"}, **mode)
    assert (off.status_code, off.json()) == (400, {"code": 108, "message": "not available"})
    env.node.api_rpc("known")(_echo)
    unknown = await env.post("rpc", {"method": "other"}, **mode)
    assert (unknown.status_code, unknown.json()) == (404, {"code": 104, "message": "not found"})


async def test_openapi_lists_every_method_with_its_request_schema(env: Env) -> None:
    schema = (await env.http.get("/openapi.json")).json()
    methods = (
        "publish broadcast subscribe unsubscribe disconnect refresh presence presence_stats "
        "history history_remove channels info batch rpc"
    ).split()
    for method in methods:
        operation = schema["paths"][f"/api/{method}"]["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    publish = schema["components"]["schemas"]["PublishRequest"]["properties"]
    assert {"channel", "data", "b64data", "skip_history", "tags", "idempotency_key"} <= set(publish)
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]


# -- publish and broadcast


async def test_publish_returns_the_position_only_with_history(env: Env) -> None:
    first = await env.result("publish", {"channel": "news", "data": {"n": 1}})
    assert set(first) == {"offset", "epoch"} and first["offset"] == 1
    second = await env.result("publish", {"channel": "news", "data": {"n": 2}})
    assert second == {"offset": 2, "epoch": first["epoch"]}
    assert await env.result("publish", {"channel": "plain:x", "data": 1}) == {}
    assert await env.result("publish", {"channel": "news", "data": 3, "skip_history": True}) == {}
    history = await env.result("history", {"channel": "news", "limit": -1})
    assert [p["data"] for p in history["publications"]] == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"data": 1}, 107),
        ({"channel": "", "data": 1}, 107),
        ({"channel": "news"}, 107),  # no data
        ({"channel": "nope:x", "data": 1}, 102),
        ({"channel": "news", "b64data": "not base64!"}, 107),
        ({"channel": "news", "b64data": base64.b64encode(b"\xff\x00binary").decode()}, 107),
        ({"channel": "news", "data": 2**70}, 107),
    ],
)
async def test_publish_errors(env: Env, body: dict[str, Any], code: int) -> None:
    messages = {102: "unknown channel", 107: "bad request"}
    assert await env.error("publish", body) == {"code": code, "message": messages[code]}


async def test_publish_data_forms_and_tags(env: Env) -> None:
    alice = await env.connect("alice")
    await alice.subscribe("news")
    await env.result("publish", {"channel": "news", "data": None, "tags": {"kind": "null"}})
    b64 = base64.b64encode(b'{"from":\n "b64"}').decode()
    await env.result("publish", {"channel": "news", "b64data": b64, "data": "ignored"})
    first = await alice.next_publication("news")
    assert first["time"] > 0
    assert {**first, "time": 0} == {"data": None, "offset": 1, "tags": {"kind": "null"}, "time": 0}
    second = await alice.next_publication("news")
    assert second["data"] == {"from": "b64"}
    history = await env.result("history", {"channel": "news", "limit": 10})
    assert history["publications"] == [
        {"data": None, "offset": 1, "tags": {"kind": "null"}},
        {"data": {"from": "b64"}, "offset": 2},
    ]


async def test_idempotent_publish_returns_the_first_result(env: Env) -> None:
    body = {"channel": "news", "data": {"once": True}, "idempotency_key": "k1"}
    first = await env.result("publish", body)
    assert await env.result("publish", body) == first
    other = await env.result("publish", {**body, "idempotency_key": "k2"})
    assert other["offset"] == first["offset"] + 1
    history = await env.result("history", {"channel": "news", "limit": -1})
    assert len(history["publications"]) == 2


async def test_broadcast_answers_per_channel_in_order(env: Env) -> None:
    await env.result("publish", {"channel": "b", "data": 0})
    result = await env.result(
        "broadcast", {"channels": ["a", "b", "nope:x", "", "plain:y", "a"], "data": {"all": 1}}
    )
    responses = result["responses"]
    assert responses[0]["result"]["offset"] == 1
    assert responses[1]["result"]["offset"] == 2
    assert responses[2] == {"error": {"code": 102, "message": "unknown channel"}}
    assert responses[3] == {"error": {"code": 107, "message": "bad request"}}
    assert responses[4] == {"result": {}}
    assert responses[5]["result"]["offset"] in (1, 2) and len(responses) == 6
    assert await env.error("broadcast", {"channels": [], "data": 1}) == {
        "code": 107,
        "message": "bad request",
    }
    assert await env.error("broadcast", {"channels": ["a"]}) == {"code": 107, "message": "bad request"}


# -- history, presence, channels, info


async def test_history_reads_and_its_errors(env: Env) -> None:
    for n in range(1, 6):
        await env.result("publish", {"channel": "news", "data": n})
    top = await env.result("history", {"channel": "news"})
    assert top == {"publications": [], "epoch": top["epoch"], "offset": 5}
    assert top["epoch"]
    since = {"offset": 2, "epoch": top["epoch"]}
    forward = await env.result("history", {"channel": "news", "limit": 2, "since": since})
    assert [p["offset"] for p in forward["publications"]] == [3, 4]
    backward = await env.result("history", {"channel": "news", "limit": 10, "reverse": True})
    assert [p["data"] for p in backward["publications"]] == [5, 4, 3, 2, 1]
    stale = {"channel": "news", "limit": 1, "since": {"offset": 2, "epoch": "old"}}
    assert await env.error("history", stale) == {"code": 112, "message": "unrecoverable position"}
    reverse_from_zero = {"channel": "news", "limit": 1, "reverse": True, "since": {"offset": 0}}
    assert (await env.error("history", reverse_from_zero))["code"] == 107
    assert (await env.error("history", {"channel": "plain:x"}))["code"] == 108
    assert (await env.error("history", {"channel": "nope:x"}))["code"] == 102
    assert (await env.error("history", {}))["code"] == 107
    empty = await env.result("history", {"channel": "never-used", "limit": 10})
    assert empty["publications"] == [] and empty["offset"] == 0


async def test_history_remove_keeps_the_position(env: Env) -> None:
    for n in range(3):
        await env.result("publish", {"channel": "news", "data": n})
    assert await env.result("history_remove", {"channel": "news"}) == {}
    after = await env.result("history", {"channel": "news", "limit": -1})
    assert after["publications"] == [] and after["offset"] == 3
    assert (await env.error("history_remove", {"channel": "plain:x"}))["code"] == 108
    assert (await env.error("history_remove", {"channel": ""}))["code"] == 107


async def test_presence_and_stats(env: Env) -> None:
    assert await env.result("presence", {"channel": "news"}) == {"presence": {}}
    assert await env.result("presence_stats", {"channel": "news"}) == {"num_clients": 0, "num_users": 0}
    alice = await env.connect("alice")
    alice2 = await env.connect("alice")
    anon = await env.connect()
    for conn in (alice, alice2, anon):
        await conn.subscribe("news")
    presence = (await env.result("presence", {"channel": "news"}))["presence"]
    assert presence == {
        alice.client_id: {"user": "alice", "client": alice.client_id},
        alice2.client_id: {"user": "alice", "client": alice2.client_id},
        anon.client_id: {"user": "", "client": anon.client_id},
    }
    assert await env.result("presence_stats", {"channel": "news"}) == {"num_clients": 3, "num_users": 2}
    assert (await env.error("presence", {"channel": "plain:x"}))["code"] == 108
    assert (await env.error("presence_stats", {"channel": "rec:x"}))["code"] == 108
    assert (await env.error("presence", {}))["code"] == 107


async def test_channels_with_a_glob_pattern(env: Env) -> None:
    a, b = await env.connect("a"), await env.connect("b")
    for channel in ("news", "plain:one", "plain:two", "rec:x"):
        await a.subscribe(channel) if channel != "rec:x" else await env.result(
            "subscribe", {"user": "a", "channel": channel}
        )
    await b.subscribe("news")
    everything = (await env.result("channels", {}))["channels"]
    assert everything == {
        "news": {"num_clients": 2},
        "plain:one": {"num_clients": 1},
        "plain:two": {"num_clients": 1},
        "rec:x": {"num_clients": 1},
    }
    assert set((await env.result("channels", {"pattern": "plain:*"}))["channels"]) == {
        "plain:one",
        "plain:two",
    }
    assert set((await env.result("channels", {"pattern": "{news,rec:?}"}))["channels"]) == {"news", "rec:x"}
    assert set((await env.result("channels", {"pattern": "plain:[!o]*"}))["channels"]) == {"plain:two"}
    assert (await env.result("channels", {"pattern": "nothing*"}))["channels"] == {}


async def test_info_describes_this_node(env: Env) -> None:
    await env.connect("alice")
    bob = await env.connect("bob")
    await bob.subscribe("news")
    await bob.subscribe("plain:x")
    (node,) = (await env.result("info", {}))["nodes"]
    assert node["uid"] == env.node.id and node["name"] and node["version"] == env.node.version
    assert (node["num_clients"], node["num_users"], node["num_subs"], node["num_channels"]) == (2, 2, 2, 2)
    fields = "uid name version num_clients num_users num_subs num_channels uptime".split()
    assert set(node) <= set(fields)
    env.node.started_at = time.time() - 100
    (later,) = (await env.result("info", {}))["nodes"]
    assert later["uptime"] >= 100


# -- batch and rpc


async def _echo(params: bytes | None) -> Any:
    if params == b'"fail"':
        raise Error(4000, "custom failure")
    if params == b'"crash"':
        raise RuntimeError("boom")
    return {"echo": None if params is None else orjson.loads(params)}


@pytest.mark.parametrize("parallel", [False, True])
async def test_batch_replies_in_order_without_result(env: Env, parallel: bool) -> None:
    reply = await env.call(
        "batch",
        {
            "commands": [
                {"publish": {"channel": "news", "data": 1}},
                {"publish": {"channel": "nope:x", "data": 1}},
                {"presence": {"channel": "news"}},
                {"history": {"channel": "news", "limit": 10}},
                {"info": {}},
                {},
                None,
            ],
            "parallel": parallel,
        },
    )
    assert set(reply) == {"replies"}
    replies = reply["replies"]
    assert replies[0]["publish"]["offset"] == 1
    assert replies[1] == {"error": {"code": 102, "message": "unknown channel"}}
    assert replies[2] == {"presence": {"presence": {}}}
    if not parallel:
        assert [p["data"] for p in replies[3]["history"]["publications"]] == [1]
    assert replies[4]["info"]["nodes"][0]["uid"] == env.node.id
    assert replies[5] == {"error": {"code": 104, "message": "not found"}}
    assert replies[6] == {"error": {"code": 107, "message": "bad request"}}
    assert await env.call("batch", {"commands": []}) == {"replies": []}


async def test_batch_ignores_the_transport_error_mode(env: Env) -> None:
    body = {"commands": [{"publish": {"channel": "nope:x", "data": 1}}]}
    response = await env.post("batch", body, **{"X-Centrifugo-Error-Mode": "transport"})
    assert response.status_code == 200
    assert response.json() == {"replies": [{"error": {"code": 102, "message": "unknown channel"}}]}


async def test_rpc(env: Env) -> None:
    assert await env.error("rpc", {"method": "echo"}) == {"code": 108, "message": "not available"}
    env.node.api_rpc("echo")(_echo)
    assert await env.result("rpc", {"method": "echo", "params": {"a": [1]}}) == {"data": {"echo": {"a": [1]}}}
    assert await env.result("rpc", {"method": "echo"}) == {"data": {"echo": None}}
    assert await env.error("rpc", {"method": "other"}) == {"code": 104, "message": "not found"}
    assert await env.error("rpc", {"method": ""}) == {"code": 107, "message": "bad request"}
    assert await env.error("rpc", {"method": "echo", "params": "fail"}) == {
        "code": 4000,
        "message": "custom failure",
    }
    assert await env.error("rpc", {"method": "echo", "params": "crash"}) == {
        "code": 100,
        "message": "internal server error",
    }

    @env.node.api_rpc("nothing")
    async def nothing(params: bytes | None) -> None:
        return None

    assert await env.result("rpc", {"method": "nothing"}) == {}
    reply = await env.call("batch", {"commands": [{"rpc": {"method": "echo", "params": 1}}]})
    assert reply == {"replies": [{"rpc": {"data": {"echo": 1}}}]}


# -- connections: pushes and closes


async def test_subscribe_pushes_subscribe_and_delivers(env: Env) -> None:
    alice = await env.connect("alice")
    other = await env.connect("bob")
    await env.result("publish", {"channel": "news", "data": "before"})
    body = {"user": "alice", "channel": "news", "data": {"welcome": True}, "info": {"role": "guest"}}
    assert await env.result("subscribe", body) == {}
    push = await alice.next_push("subscribe")
    assert push == {"channel": "news", "subscribe": {"data": {"welcome": True}}}
    await env.result("publish", {"channel": "news", "data": "after"})
    pub = await alice.next_publication("news")
    assert pub["data"] == "after"
    presence = (await env.result("presence", {"channel": "news"}))["presence"]
    assert presence == {
        alice.client_id: {"user": "alice", "client": alice.client_id, "chan_info": {"role": "guest"}}
    }
    # Already subscribed: left alone, no second push.
    assert await env.result("subscribe", {"user": "alice", "channel": "news"}) == {}
    assert (await env.result("channels", {}))["channels"] == {"news": {"num_clients": 1}}
    assert not other.pushes


async def test_subscribe_with_recovery_sends_position_and_missed_publications(env: Env) -> None:
    for n in range(1, 4):
        await env.result("publish", {"channel": "rec:x", "data": n})
    top = await env.result("history", {"channel": "rec:x"})
    alice = await env.connect("alice")
    since = {"offset": 1, "epoch": top["epoch"]}
    await env.result("subscribe", {"user": "alice", "channel": "rec:x", "recover_since": since})
    push = await alice.next_push("subscribe")
    assert push["subscribe"] == {"recoverable": True, "positioned": True, "epoch": top["epoch"], "offset": 1}
    assert [(await alice.next_publication("rec:x"))["data"] for _ in range(2)] == [2, 3]


async def test_subscribe_override_positions_without_recovery(env: Env) -> None:
    alice = await env.connect("alice")
    await env.result("publish", {"channel": "news", "data": 1})
    override = {"force_positioning": {"value": True}}
    await env.result("subscribe", {"user": "alice", "channel": "news", "override": override})
    push = await alice.next_push("subscribe")
    assert push["subscribe"]["positioned"] is True and push["subscribe"]["offset"] == 1
    assert "recoverable" not in push["subscribe"]


async def test_subscribe_targets_anonymous_and_single_clients(env: Env) -> None:
    anon = await env.connect()
    alice1, alice2 = await env.connect("alice"), await env.connect("alice")
    await env.result("subscribe", {"user": "", "channel": "news"})
    assert (await anon.next_push("subscribe"))["channel"] == "news"
    await env.result("subscribe", {"user": "alice", "client": alice2.client_id, "channel": "plain:x"})
    assert (await alice2.next_push("subscribe"))["channel"] == "plain:x"
    # A client of someone else, and a session id (WebSocket connections have none): no one.
    await env.result("subscribe", {"user": "bob", "client": alice1.client_id, "channel": "plain:x"})
    await env.result("subscribe", {"user": "alice", "session": "s1", "channel": "plain:x"})
    stats = (await env.result("channels", {}))["channels"]
    assert stats == {"news": {"num_clients": 1}, "plain:x": {"num_clients": 1}}
    assert not alice1.pushes


async def test_subscribe_errors(env: Env) -> None:
    assert (await env.error("subscribe", {"user": "alice"}))["code"] == 107
    assert (await env.error("subscribe", {"user": "alice", "channel": "nope:x"}))["code"] == 102
    # Users that are not connected are fine: nothing to do.
    assert await env.result("subscribe", {"user": "ghost", "channel": "news"}) == {}


async def test_unsubscribe_pushes_2000(env: Env) -> None:
    alice = await env.connect("alice")
    await alice.subscribe("news")
    await alice.subscribe("plain:x")
    assert await env.result("unsubscribe", {"user": "alice", "channel": "news"}) == {}
    push = await alice.next_push("unsubscribe")
    assert push == {"channel": "news", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}}
    assert await env.result("presence", {"channel": "news"}) == {"presence": {}}
    await env.result("unsubscribe", {"user": "alice", "channel": ""})  # every channel
    assert (await alice.next_push("unsubscribe"))["channel"] == "plain:x"
    assert (await env.result("channels", {}))["channels"] == {}
    assert (await env.error("unsubscribe", {"user": "alice", "channel": "nope:x"}))["code"] == 102
    assert await env.result("unsubscribe", {"user": "ghost", "channel": "news"}) == {}


async def test_disconnect_closes_with_3503_by_default(env: Env) -> None:
    alice = await env.connect("alice")
    bob = await env.connect("bob")
    assert await env.result("disconnect", {"user": "alice"}) == {}
    closed = await alice.wait_closed()
    assert (closed.code, closed.reason) == (3503, "force disconnect")
    assert bob.closed is None
    await alice.close()  # the peer's answer to the close frame ends the session
    async with asyncio.timeout(2):
        while (await env.result("info", {}))["nodes"][0]["num_clients"] != 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_disconnect_custom_code_whitelist_and_client(env: Env) -> None:
    a1, a2, a3 = await env.connect("alice"), await env.connect("alice"), await env.connect("alice")
    body = {
        "user": "alice",
        "whitelist": [a1.client_id],
        "client": a2.client_id,
        "disconnect": {"code": 4000, "reason": "go away"},
    }
    await env.result("disconnect", body)
    closed = await a2.wait_closed()
    assert (closed.code, closed.reason) == (4000, "go away")
    await env.result("disconnect", {"user": "alice", "whitelist": [a1.client_id]})
    assert (await a3.wait_closed()).code == 3503
    assert a1.closed is None
    bad = {"user": "alice", "disconnect": {"code": 1000, "reason": "x"}}
    assert (await env.error("disconnect", bad))["code"] == 107
    assert await env.result("disconnect", {"user": "ghost"}) == {}


async def test_refresh_sets_expiry_or_expires(env: Env) -> None:
    alice = await env.connect("alice")
    expire_at = int(time.time()) + 600
    assert await env.result("refresh", {"user": "alice", "expire_at": expire_at}) == {}
    push = await alice.next_push("refresh")
    assert push["refresh"]["expires"] is True and 590 <= push["refresh"]["ttl"] <= 600
    await env.result("refresh", {"user": "alice"})
    assert (await alice.next_push("refresh")) == {"refresh": {}}
    await env.result("refresh", {"user": "alice", "expired": True})
    assert (await alice.wait_closed()).code == 3005
    assert await env.result("refresh", {"user": "ghost", "expire_at": expire_at}) == {}
