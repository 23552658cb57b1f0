"""The FastAPI-native API: Depends auth, channel rules, typed channels, RPC, hub operations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.security import OAuth2PasswordBearer
from fastapi.testclient import TestClient

from examples.fastapi_app import app, hub
from livehub import Hub, Settings
from livehub.testing import ConnectionClosed, HubTestClient, ProtocolError


@pytest.fixture(autouse=True)
def chat_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example keeps its rolls in SQLite at $CHAT_DB: a fresh file per test."""
    monkeypatch.setenv("CHAT_DB", str(tmp_path / "chat.sqlite3"))


async def test_connect_by_dependency_and_refusal() -> None:
    async with HubTestClient(app) as client:
        alice = await client.connect(headers={"X-User": "alice"})
        assert alice.client_id
        with pytest.raises(ProtocolError) as refused:
            await client.connect()
        assert (refused.value.code, refused.value.message) == (101, "unauthorized")


async def test_conn_info_from_connect_result_reaches_presence_and_publications() -> None:
    async with HubTestClient(app) as client:
        alice = await client.connect(headers={"X-User": "alice"})
        await alice.subscribe("chat:lobby")
        presence = await alice.presence("chat:lobby")
        assert presence[alice.client_id] == {
            "user": "alice",
            "client": alice.client_id,
            "conn_info": {"name": "Alice"},
        }
        await alice.publish("chat:lobby", {"text": "hello"})
        pub = await alice.next_publication("chat:lobby")
        assert pub["data"]["text"] == "hello"
        assert pub["data"]["sent_at"] > 0  # transformed by the on_publish handler
        assert pub["info"]["user"] == "alice"


async def test_subscribe_rules_by_pattern() -> None:
    async with HubTestClient(app) as client:
        mallory = await client.connect(headers={"X-User": "mallory"})
        bob = await client.connect(headers={"X-User": "bob"})
        with pytest.raises(ProtocolError) as denied:
            await mallory.subscribe("chat:lobby")
        assert denied.value.code == 103
        with pytest.raises(ProtocolError) as staff:
            await bob.subscribe("chat:staff-room")
        assert staff.value.code == 103
        await bob.subscribe("chat:lobby")


async def test_typed_channel_refuses_bad_data_with_a_clear_error() -> None:
    async with HubTestClient(app) as client:
        bob = await client.connect(headers={"X-User": "bob"})
        await bob.subscribe("chat:typed")
        with pytest.raises(ProtocolError) as bad:
            await bob.publish("chat:typed", {"text": ""})
        assert bad.value.code == 107
        assert "text" in bad.value.message
        with pytest.raises(ProtocolError):
            await bob.publish("chat:typed", {"nope": 1})
        history = await bob.history("chat:typed", limit=-1)
        assert history["publications"] == []  # nothing invalid got in


async def test_rpc_with_models() -> None:
    async with HubTestClient(app) as client:
        bob = await client.connect(headers={"X-User": "bob"})
        result = await bob.rpc("roll", {"sides": 20})
        assert result["sides"] == 20 and 1 <= result["value"] <= 20
        with pytest.raises(ProtocolError) as bad:
            await bob.rpc("roll", {"sides": 1})
        assert bad.value.code == 107
        with pytest.raises(ProtocolError) as unknown:
            await bob.rpc("fly")
        assert unknown.value.code == 104


async def test_server_side_publish_from_a_route_and_validation() -> None:
    async with HubTestClient(app) as client:
        bob = await client.connect(headers={"X-User": "bob"})
        await bob.subscribe("chat:news")
        position = await hub.publish("chat:news", {"text": "from the server"})
        assert position.offset == 1
        assert (await bob.next_publication("chat:news"))["data"]["text"] == "from the server"
        with pytest.raises(Exception, match="text"):
            await hub.publish("chat:news", {"text": ""})


async def test_on_disconnect_runs_once_per_connection() -> None:
    seen: list[str] = []
    h = Hub(Settings(client={"insecure": True}))

    @h.on_disconnect
    async def gone(client: object) -> None:
        seen.append(client.id)

    from fastapi import FastAPI

    a = FastAPI()
    a.include_router(h.router)
    async with HubTestClient(a) as client:
        c1 = await client.connect()
        c2 = await client.connect()
        await c1.close()
        await c2.close()
    assert sorted(seen) == sorted([c1.client_id, c2.client_id])


async def test_disconnect_user() -> None:
    async with HubTestClient(app) as client:
        carol = await client.connect(headers={"X-User": "carol"})
        assert hub.disconnect("carol") == 1
        closed = await carol.wait_closed()
        assert closed.code == 3503


async def test_on_connect_declared_after_include_router() -> None:
    from fastapi import FastAPI

    a = FastAPI()
    h = Hub()
    a.include_router(h.router)

    @h.on_connect
    def by_query(user: str = "") -> str | None:
        return user or None

    async with HubTestClient(a) as client:
        conn = await client.connect(query={"user": "dave"})
        assert conn.connect_result["client"]
        with pytest.raises(ConnectionClosed) as anon:
            await client.connect()
        assert anon.value.code == 3501  # no credentials and anonymous access is off


def test_asyncapi_document_is_served() -> None:
    with TestClient(app) as c:
        doc = c.get("/asyncapi.json").json()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["chat_room"]["address"] == "chat:{room}"
    assert "room" in doc["channels"]["chat_room"]["parameters"]
    schemas = doc["components"]["schemas"]
    assert schemas["ChatMessage"]["properties"]["text"]["maxLength"] == 500
    assert doc["operations"]["rpc.roll"]["reply"]
    assert schemas["Roll"]["properties"]["sides"]["maximum"] == 100


async def test_typed_channel_applies_to_the_http_api_too() -> None:
    import httpx
    from pydantic import BaseModel

    from livehub.app import create_app

    class Tick(BaseModel):
        price: float

    prices = {"name": "prices"}
    h = Hub(Settings(client={"insecure": True}, http_api={"key": "k"}, channel={"namespaces": [prices]}))
    h.channel("prices:{symbol}", model=Tick)
    a: FastAPI = create_app(hub=h)
    async with HubTestClient(a) as client:
        viewer = await client.connect()
        await viewer.subscribe("prices:ACME")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t") as http:
            headers = {"X-API-Key": "k"}
            bad = await http.post(
                "/api/publish", json={"channel": "prices:ACME", "data": {"price": "cheap"}}, headers=headers
            )
            assert bad.json()["error"]["code"] == 107
            assert "price" in bad.json()["error"]["message"]
            ok = await http.post(
                "/api/publish", json={"channel": "prices:ACME", "data": {"price": 1.5}}, headers=headers
            )
            assert ok.json() == {"result": {}}
        assert (await viewer.next_publication("prices:ACME"))["data"] == {"price": 1.5}


async def test_server_side_subscribe_and_unsubscribe_of_a_user() -> None:
    async with HubTestClient(app) as client:
        erin = await client.connect(headers={"X-User": "erin"})
        await hub.subscribe("erin", "chat:updates", data={"welcome": True})
        push = await erin.next_push("subscribe", "chat:updates")
        assert push["subscribe"]["data"] == {"welcome": True}
        await hub.publish("chat:updates", {"text": "server-side"})
        assert (await erin.next_publication("chat:updates"))["data"]["text"] == "server-side"
        await hub.unsubscribe("erin", "chat:updates")
        push = await erin.next_push("unsubscribe", "chat:updates")
        assert push["unsubscribe"]["code"] == 2000


oauth2 = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)


async def by_bearer(token: Annotated[str | None, Depends(oauth2)]) -> str | None:
    return f"user-{token}" if token else None


async def test_on_connect_with_an_oauth2_scheme() -> None:
    a = FastAPI()
    h = Hub()
    a.include_router(h.router)
    h.on_connect(by_bearer)
    async with HubTestClient(a) as client:
        conn = await client.connect(headers={"Authorization": "Bearer abc"})
        assert h.node.sessions[conn.client_id].user == "user-abc"
        with pytest.raises(ConnectionClosed) as anon:
            await client.connect()
        assert anon.value.code == 3501
