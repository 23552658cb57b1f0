"""livehub embedded in a FastAPI app (issue 10): channels declared in code, FastAPI
dependencies in every callback, on_connect through ``Node.connect_hook``, the public
``Client`` handle and the hub's read API. Driven through ASGI with HubTestClient."""

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Query
from pydantic import BaseModel, Field, ValidationError

from livehub import ChannelConflict, Client, ConnectResult, Error, Hub, Settings
from livehub.dependencies import Callback
from livehub.models import Credentials
from livehub.testing import HubTestClient, ProtocolError
from tests.test_session import Client as SessionClient
from tests.test_session import eventually

ROOT = Path(__file__).resolve().parent.parent


class Message(BaseModel):
    text: str = Field(min_length=1)


async def by_header(x_user: Annotated[str | None, Header()] = None) -> str | None:
    return x_user


def embedded(settings: Settings | None = None) -> tuple[FastAPI, Hub]:
    """An app with a hub whose users are named by the ``X-User`` header."""
    app = FastAPI()
    hub = Hub(settings or Settings())
    app.include_router(hub.router)

    @hub.on_connect
    async def connect(user: Annotated[str | None, Depends(by_header)]) -> ConnectResult | None:
        return ConnectResult(user=user, info={"name": user.title()}) if user else None

    return app, hub


# -- channels declared in code


async def test_a_namespace_declared_only_in_code_works_with_defaults_that_fit() -> None:
    app, hub = embedded()
    hub.channel("chat:{room}", model=Message, history_size=10, history_ttl="1m", presence=True)

    @app.post("/announce")
    async def announce(text: str) -> dict[str, int]:
        return {"offset": (await hub.publish("chat:lobby", Message(text=text))).offset}

    async with HubTestClient(app) as client:
        alice = await client.connect(headers={"X-User": "alice"})
        bob = await client.connect(headers={"X-User": "bob"})
        await alice.subscribe("chat:lobby")
        await alice.publish("chat:lobby", {"text": "hi"})  # typed: subscribers may publish
        assert (await alice.next_publication("chat:lobby"))["data"] == {"text": "hi"}
        with pytest.raises(ProtocolError) as bad:
            await alice.publish("chat:lobby", {"text": ""})
        assert bad.value.code == 107 and "text" in bad.value.message
        with pytest.raises(ProtocolError) as outsider:
            await bob.publish("chat:lobby", {"text": "not subscribed"})
        assert outsider.value.code == 103
        assert list(await alice.presence("chat:lobby")) == [alice.client_id]
        assert len((await alice.history("chat:lobby", limit=-1))["publications"]) == 1
        for unknown in ("chat:a:b", "other:x"):  # matches no declared pattern / no namespace
            with pytest.raises(ProtocolError) as missing:
                await bob.subscribe(unknown)
            assert missing.value.code == 102
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            reply = await http.post("/announce", params={"text": "from a route"})
        assert reply.status_code == 200 and reply.json() == {"offset": 2}
        assert (await alice.next_publication("chat:lobby"))["data"] == {"text": "from a route"}


async def test_an_untyped_channel_without_on_publish_is_written_by_the_server_only() -> None:
    app, hub = embedded()
    hub.channel("news:{topic}")
    async with HubTestClient(app) as client:
        alice = await client.connect(headers={"X-User": "alice"})
        await alice.subscribe("news:sport")
        with pytest.raises(ProtocolError) as denied:
            await alice.publish("news:sport", {"x": 1})
        assert denied.value.code == 103
        await hub.publish("news:sport", {"x": 2})
        assert (await alice.next_publication())["data"] == {"x": 2}


def test_code_and_config_stating_an_option_differently_is_an_error_naming_both() -> None:
    settings = Settings(channel={"namespaces": [{"name": "chat", "presence": False}]})
    hub = Hub(settings)
    with pytest.raises(ChannelConflict) as conflict:
        hub.channel("chat:{room}", presence=True)
    message = str(conflict.value)
    assert "'presence'" in message and "hub.channel('chat:{room}') says True" in message
    assert "the config (channel.namespaces 'chat') says False" in message
    assert hub.declared == []  # nothing half-declared
    hub.channel("chat:{room}", presence=False)  # agreeing is fine


def test_two_declarations_of_one_namespace_must_agree() -> None:
    hub = Hub()
    hub.channel("chat:{room}", history_size=10)
    with pytest.raises(ChannelConflict, match="hub.channel\\('chat:dm'\\) says 20.*'chat:\\{room\\}'"):
        hub.channel("chat:dm", history_size=20)
    with pytest.raises(ChannelConflict):
        hub.channel("chat:{room}", history_size=30)


def test_unknown_or_bad_options_are_refused_at_declaration() -> None:
    hub = Hub()
    with pytest.raises(TypeError, match="presense"):
        hub.channel("chat:{room}", presense=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        hub.channel("chat:{room}", history_ttl="soon")


async def test_config_and_code_merge_and_the_config_wins_over_what_code_implies() -> None:
    namespace = {"name": "chat", "history_size": 5, "history_ttl": 60, "allow_subscribe_for_client": False}
    app, hub = embedded(Settings(channel={"namespaces": [namespace]}))
    hub.channel("chat:{room}", presence=True)
    options = hub.channel_options("chat:x")
    assert (options.history_size, options.presence) == (5, True)  # one from each
    assert options.allow_history_for_subscriber and options.allow_presence_for_subscriber  # implied
    assert not options.allow_subscribe_for_client  # stated by the config
    async with HubTestClient(app) as client:
        alice = await client.connect(headers={"X-User": "alice"})
        with pytest.raises(ProtocolError) as denied:
            await alice.subscribe("chat:x")
        assert denied.value.code == 103


async def test_a_pattern_without_namespace_states_top_level_options() -> None:
    app, hub = embedded()
    hub.channel("news", presence=True)
    assert hub.channel_options("other").presence  # the options are the top level's
    async with HubTestClient(app) as client:
        alice = await client.connect(headers={"X-User": "alice"})
        await alice.subscribe("news")  # what the declaration implies is for "news" only
        with pytest.raises(ProtocolError) as denied:
            await alice.subscribe("other")
        assert denied.value.code == 103


def test_the_asyncapi_document_shows_the_options_and_who_publishes() -> None:
    from fastapi.testclient import TestClient

    app, hub = embedded()
    hub.channel("chat:{room}", model=Message, history_size=10, history_ttl=60)
    hub.channel("news:{topic}")
    with TestClient(app) as http:
        doc = http.get("/asyncapi.json").json()
    assert doc["channels"]["chat_room"]["x-livehub-options"]["history_size"] == 10
    assert doc["channels"]["chat_room"]["x-livehub-options"]["allow_publish_for_subscriber"] is True
    assert "chat_room.send" in doc["operations"]
    assert "news_topic.receive" in doc["operations"] and "news_topic.send" not in doc["operations"]


# -- dependencies in every callback


class Sessions:
    """A stand-in database: records when each session opens and closes, and what ran in it."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.count = 0

    async def session(self) -> AsyncIterator[int]:
        self.count += 1
        number = self.count
        self.events.append(f"open {number}")
        try:
            yield number
        except Error as exc:
            self.events.append(f"rollback {number} ({exc.code})")
            raise
        finally:
            self.events.append(f"close {number}")


class Sum(BaseModel):
    a: int
    b: int


async def test_a_yield_dependency_is_opened_and_closed_around_each_rpc() -> None:
    app, hub = embedded()
    db = Sessions()

    @hub.rpc("add")
    async def add(
        client: Client, request: Sum, session: Annotated[int, Depends(db.session)]
    ) -> dict[str, int]:
        db.events.append(f"add in {session}")
        if request.a < 0:
            raise Error(400, "negative")
        return {"sum": request.a + request.b, "session": session}

    async with HubTestClient(app) as client:
        alice = await client.connect(headers={"X-User": "alice"})
        assert await alice.rpc("add", {"a": 1, "b": 2}) == {"sum": 3, "session": 1}
        assert db.events == ["open 1", "add in 1", "close 1"]  # closed before the reply went
        assert await alice.rpc("add", {"a": 2, "b": 2}) == {"sum": 4, "session": 2}
        with pytest.raises(ProtocolError) as refused:
            await alice.rpc("add", {"a": -1, "b": 0})
        assert refused.value.code == 400
    assert db.events[3:] == [
        "open 2",
        "add in 2",
        "close 2",
        "open 3",
        "add in 3",
        "rollback 3 (400)",
        "close 3",
    ]


async def test_sqlite_session_per_rpc_with_the_apps_dependency_overrides(tmp_path: Path) -> None:
    import sqlite3

    app, hub = embedded()
    opened: list[sqlite3.Connection] = []

    async def database() -> AsyncIterator[sqlite3.Connection]:
        raise AssertionError("overridden in this test")
        yield  # pragma: no cover

    async def test_database() -> AsyncIterator[sqlite3.Connection]:
        db = sqlite3.connect(tmp_path / "test.sqlite3")
        opened.append(db)
        try:
            db.execute("CREATE TABLE IF NOT EXISTS notes (user TEXT, text TEXT)")
            yield db
            db.commit()
        finally:
            db.close()

    @hub.rpc("note")
    async def note(
        client: Client, request: dict[str, str], db: Annotated[sqlite3.Connection, Depends(database)]
    ) -> dict[str, int]:
        db.execute("INSERT INTO notes VALUES (?, ?)", (client.user, request["text"]))
        return {"notes": db.execute("SELECT count(*) FROM notes").fetchone()[0]}

    app.dependency_overrides[database] = test_database
    async with HubTestClient(app) as client:
        alice = await client.connect(headers={"X-User": "alice"})
        assert await alice.rpc("note", {"text": "one"}) == {"notes": 1}
        assert await alice.rpc("note", {"text": "two"}) == {"notes": 2}
    assert len(opened) == 2
    for db in opened:  # each was closed after its call
        with pytest.raises(sqlite3.ProgrammingError):
            db.execute("SELECT 1")
    check = sqlite3.connect(tmp_path / "test.sqlite3")
    assert check.execute("SELECT user, text FROM notes").fetchall() == [("alice", "one"), ("alice", "two")]
    check.close()


async def test_header_cookie_and_query_in_subscribe_publish_and_disconnect() -> None:
    app, hub = embedded()
    hub.channel("room:{name}", model=Message)
    left: list[tuple[str, str | None]] = []

    @hub.on_subscribe("room:{name}")
    async def staff_only(client: Client, name: str, x_role: Annotated[str, Header()] = "") -> bool:
        return not name.startswith("staff") or x_role == "staff"

    @hub.on_publish("room:{name}")
    async def tag(client: Client, message: Message, lang: Annotated[str, Query()] = "en") -> Message:
        return Message(text=f"[{lang}] {message.text}")

    @hub.on_disconnect
    async def gone(client: Client, theme: Annotated[str | None, Cookie()] = None) -> None:
        left.append((client.user, theme))

    async with HubTestClient(app) as client:
        staff = await client.connect(
            headers={"X-User": "sam", "X-Role": "staff", "Cookie": "theme=dark"}, query={"lang": "fr"}
        )
        guest = await client.connect(headers={"X-User": "gus"})
        await staff.subscribe("room:staff-1")
        with pytest.raises(ProtocolError) as denied:
            await guest.subscribe("room:staff-1")
        assert denied.value.code == 103
        await staff.publish("room:staff-1", {"text": "bonjour"})
        assert (await staff.next_publication())["data"] == {"text": "[fr] bonjour"}
        await staff.close()
        await eventually(lambda: left)
    assert ("sam", "dark") in left and ("gus", None) in left


async def test_dependency_failures_become_protocol_errors() -> None:
    app, hub = embedded()

    async def forbidden() -> None:
        raise HTTPException(403, "staff only")

    async def unauthorized() -> None:
        raise HTTPException(401)

    @hub.rpc("needs-header")
    async def needs_header(client: Client, request: Any, x_token: Annotated[str, Header()]) -> str:
        return x_token

    @hub.rpc("staff")
    async def staff(client: Client, request: Any, _: Annotated[None, Depends(forbidden)]) -> None:
        raise AssertionError("not reached")

    @hub.rpc("login")
    async def login(client: Client, request: Any, _: Annotated[None, Depends(unauthorized)]) -> None:
        raise AssertionError("not reached")

    async with HubTestClient(app) as client:
        alice = await client.connect(headers={"X-User": "alice"})
        with pytest.raises(ProtocolError) as missing:
            await alice.rpc("needs-header")
        assert missing.value.code == 107 and "header x-token" in missing.value.message
        with pytest.raises(ProtocolError) as staff_only:
            await alice.rpc("staff")
        assert (staff_only.value.code, staff_only.value.message) == (103, "staff only")
        with pytest.raises(ProtocolError) as login_first:
            await alice.rpc("login")
        assert login_first.value.code == 101


def test_a_parameter_that_would_be_a_request_body_is_refused_at_declaration() -> None:
    hub = Hub()
    with pytest.raises(TypeError, match="request body"):

        @hub.rpc("bad")
        async def bad(client: Client, request: Sum, other: Sum) -> None: ...


# -- on_connect through the connect hook


async def test_on_connect_runs_through_the_nodes_connect_hook_with_overrides_and_yield() -> None:
    app, hub = embedded()
    events: list[str] = []

    async def audit() -> AsyncIterator[str]:
        events.append("open")
        yield "audited"
        events.append("close")

    @hub.on_connect
    async def connect(
        user: Annotated[str | None, Depends(by_header)], note: Annotated[str, Depends(audit)]
    ) -> str | None:
        events.append(f"connect {user} {note}")
        return user

    assert hub.node.connect_hook is not None
    scope = {"type": "websocket", "headers": [(b"x-user", b"zoe")], "query_string": b""}
    assert await hub.node.connect_hook(scope) == Credentials("zoe")  # the seam every transport uses
    assert await hub.node.connect_hook({"headers": [(b"x-user", b"yan")]}) == Credentials("yan")
    assert events == ["open", "connect zoe audited", "close", "open", "connect yan audited", "close"]

    app.dependency_overrides[by_header] = lambda: "overridden"
    async with HubTestClient(app) as client:
        conn = await client.connect(headers={"X-User": "zoe"})
        assert [c.user for c in hub.connections()] == ["overridden"]
        assert conn.connect_result["client"]


async def test_on_connect_refusals_and_failures_reach_the_client_through_the_protocol() -> None:
    app = FastAPI()
    hub = Hub()
    app.include_router(hub.router)

    @hub.on_connect
    async def connect(x_user: Annotated[str, Header()]) -> str:
        if x_user == "boom":
            raise RuntimeError("a bug in the app")
        if x_user == "mallory":
            raise Error(101, "unauthorized")
        return x_user

    async with HubTestClient(app) as client:
        with pytest.raises(ProtocolError) as banned:
            await client.connect(headers={"X-User": "mallory"})
        assert banned.value.code == 101
        with pytest.raises(ProtocolError) as missing:
            await client.connect()
        assert missing.value.code == 107 and "x-user" in missing.value.message
        with pytest.raises(ProtocolError) as failed:
            await client.connect(headers={"X-User": "boom"})
        assert failed.value.code == 100  # temporary: the SDK retries
        await client.connect(headers={"X-User": "ok"})


# -- the Client handle and the read API


async def test_one_client_object_per_connection_with_its_handshake_and_actions() -> None:
    app, hub = embedded()
    seen: dict[str, list[Client]] = {"subscribe": [], "publish": [], "rpc": [], "disconnect": []}
    hub.channel("room:{name}", model=Message)

    @hub.on_subscribe("room:{name}")
    async def sub(client: Client, name: str) -> bool:
        seen["subscribe"].append(client)
        return True

    @hub.on_publish("room:{name}")
    async def pub(client: Client, message: Message) -> None:
        seen["publish"].append(client)

    @hub.rpc("whoami")
    async def whoami(client: Client, request: Any) -> dict[str, Any]:
        seen["rpc"].append(client)
        await client.send({"hello": client.user})
        return {
            "id": client.id,
            "user": client.user,
            "info": client.info,
            "transport": client.transport,
            "header": client.headers.get("x-extra"),
            "cookie": client.cookies.get("c"),
            "query": client.query_params.get("q"),
            "address": list(client.address or ()),
            "channels": sorted(client.channels),
        }

    @hub.on_disconnect
    async def gone(client: Client) -> None:
        seen["disconnect"].append(client)

    async with HubTestClient(app) as client:
        alice = await client.connect(
            headers={"X-User": "alice", "X-Extra": "1", "Cookie": "c=2"}, query={"q": "3"}
        )
        await alice.subscribe("room:a")
        await alice.publish("room:a", {"text": "hi"})
        assert await alice.rpc("whoami") == {
            "id": alice.client_id,
            "user": "alice",
            "info": {"name": "Alice"},
            "transport": "websocket",
            "header": "1",
            "cookie": "2",
            "query": "3",
            "address": ["127.0.0.1", 50000],
            "channels": ["room:a"],
        }
        assert (await alice.next_push("message"))["message"]["data"] == {"hello": "alice"}
        [handle] = hub.connections()
        await handle.subscribe("room:b", data={"why": "server"})
        assert (await alice.next_push("subscribe", "room:b"))["subscribe"]["data"] == {"why": "server"}
        await handle.unsubscribe("room:a")
        assert (await alice.next_push("unsubscribe", "room:a"))["unsubscribe"]["code"] == 2000
        handle.disconnect(4501, "bye")
        closed = await alice.wait_closed()
        assert (closed.code, closed.reason) == (4501, "bye")
    every = [c for clients in seen.values() for c in clients]
    assert len(every) == 4 and all(c is handle for c in every)
    with pytest.raises(ValueError):
        handle.disconnect(1000)


async def test_the_read_api() -> None:
    app, hub = embedded()
    hub.channel("room:{name}")
    async with HubTestClient(app) as client:
        a1 = await client.connect(headers={"X-User": "alice"})
        a2 = await client.connect(headers={"X-User": "alice"})
        bob = await client.connect(headers={"X-User": "bob"})
        for conn in (a1, a2, bob):
            await conn.subscribe("room:x")
        await bob.subscribe("room:y")
        await hub.publish("room:x", {"n": 1})
        await a1.next_publication()
        assert sorted(c.id for c in hub.connections()) == sorted(c.client_id for c in (a1, a2, bob))
        assert [c.id for c in hub.connections(user="bob")] == [bob.client_id]
        assert hub.users() == {"alice": 2, "bob": 1}
        assert hub.channels() == {"room:x": 3, "room:y": 1}
        assert hub.channels("room:y") == {"room:y": 1}
        stats = hub.stats()
        assert (stats.connections, stats.users, stats.channels, stats.subscriptions) == (3, 2, 2, 4)
        assert stats.publications == 1 and stats.deliveries == 3
        [node] = stats.nodes
        assert (node.id, node.connections, node.subscriptions) == (hub.node.id, 3, 4)


async def test_a_connection_without_a_scope_gets_a_minimal_one() -> None:
    """Transports that have no ASGI scope still run callbacks with dependencies (defaults apply)."""
    hub = Hub(Settings(client={"insecure": True}))
    hub.channel("room:{name}")
    calls: list[tuple[str, str]] = []

    @hub.on_subscribe("room:{name}")
    async def sub(client: Client, name: str, x_user: Annotated[str, Header()] = "nobody") -> bool:
        calls.append((x_user, str(client.address)))
        return True

    await hub.node.start()
    try:
        session_client = SessionClient(hub.node)
        assert session_client.session.scope is None
        await session_client.connect()
        await session_client.subscribe("room:a")
        assert calls == [("nobody", "None")]
        handle = Client.of(session_client.session)
        assert dict(handle.headers) == {} and handle.transport == "websocket"
        await session_client.session.cleanup()
    finally:
        await hub.node.stop()


def test_callbacks_take_their_channel_params_by_name_only_when_declared() -> None:
    async def no_params(client: object) -> bool:
        return True

    async def every(client: object, **params: str) -> dict[str, str]:
        return params

    assert Callback(no_params, 1, ["room"]).given == set()
    assert Callback(every, 1, ["room", "kind"]).given == {"room", "kind"}
    with pytest.raises(TypeError, match="positional"):
        Callback(no_params, 2)


def test_the_demos_use_only_the_public_api() -> None:
    internal = re.compile(r"hub\.node|\bSession\b|\bNode\b|livehub\.(node|session)\b")
    for path in sorted((ROOT / "livehub/demos").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not internal.search(line), f"{path.name}:{number}: {line.strip()}"
