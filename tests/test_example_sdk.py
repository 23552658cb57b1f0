"""examples/fastapi_app.py (the README's app) served by uvicorn, driven by the official
centrifuge-python SDK: issue 10's scenario end to end.

Auth by a header or a cookie dependency; a channel declared in code only (no config);
``on_subscribe`` refusing (103); a typed RPC with a database session per call (a
yield-dependency); a route publishing to subscribers (``POST /announce``); publications
validated against the channel's model (107) and transformed by ``on_publish``.
"""

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from centrifuge import (  # type: ignore[import-untyped]
    Client,
    ClientEventHandler,
    DisconnectedContext,
    PublicationContext,
    ReplyError,
    SubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

from tests.servers import ROOT, free_port, wait_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """The example under uvicorn on a free port, with its database in a fresh file."""
    port = free_port()
    db = tmp_path_factory.mktemp("example") / "chat.sqlite3"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.fastapi_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, "CHAT_DB": str(db)},
    )
    try:
        wait_port(port, proc)
        yield port, db
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def url(server: tuple[int, Path]) -> str:
    return f"ws://127.0.0.1:{server[0]}/connection/websocket"


class Events(SubscriptionEventHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.publications: asyncio.Queue[Any] = asyncio.Queue()
        self.subscribed = asyncio.Event()
        self.unsubscribed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.publications.put(ctx.pub)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.set()

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        if not self.unsubscribed.done():
            self.unsubscribed.set_result(ctx.code)


class ClientEvents(ClientEventHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.disconnected: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        if not self.disconnected.done():
            self.disconnected.set_result((ctx.code, ctx.reason))


async def test_sdk_chat_with_typed_channel_and_rpc(url: str) -> None:
    alice = Client(url, headers={"X-User": "alice"})
    events = Events()
    sub = alice.new_subscription("chat:lobby", events=events)
    await alice.connect()
    try:
        await sub.subscribe()
        await asyncio.wait_for(events.subscribed.wait(), 5)
        await sub.publish({"text": "hello from the SDK"})
        pub = await asyncio.wait_for(events.publications.get(), 5)
        assert pub.data["text"] == "hello from the SDK"
        assert pub.data["sent_at"] > 0  # stamped by the app's on_publish handler
        assert pub.info.user == "alice"

        with pytest.raises(ReplyError) as bad:
            await sub.publish({"text": ""})
        assert bad.value.code == 107 and "text" in bad.value.message

        result = await alice.rpc("roll", {"sides": 12})
        assert result.data["sides"] == 12 and 1 <= result.data["value"] <= 12
    finally:
        await alice.disconnect()


async def test_sdk_banned_user_cannot_subscribe(url: str) -> None:
    mallory = Client(url, headers={"X-User": "mallory"})
    events = Events()
    sub = mallory.new_subscription("chat:lobby", events=events)
    await mallory.connect()
    try:
        await sub.subscribe()
        assert await asyncio.wait_for(events.unsubscribed, 5) == 103
    finally:
        await mallory.disconnect()


async def test_sdk_the_issue_scenario_end_to_end(server: tuple[int, Path], url: str) -> None:
    port, db = server
    # Connecting without credentials: on_connect's Error(101) ends the SDK's connect.
    stranger_events = ClientEvents()
    stranger = Client(url, events=stranger_events)
    await stranger.connect()
    assert await asyncio.wait_for(stranger_events.disconnected, 5) == (101, "unauthorized")

    # A session cookie, through the Cookie dependency.
    carol = Client(url, headers={"Cookie": "session=carol-session"})
    lobby = Events()
    staff = Events()
    carol_lobby = carol.new_subscription("chat:news", events=lobby)
    carol_staff = carol.new_subscription("chat:staff-room", events=staff)
    await carol.connect()
    try:
        # chat:news is in the namespace declared in code only: subscribing works.
        await carol_lobby.subscribe()
        await asyncio.wait_for(lobby.subscribed.wait(), 5)
        # on_subscribe refuses staff rooms: 103.
        await carol_staff.subscribe()
        assert await asyncio.wait_for(staff.unsubscribed, 5) == 103

        # A route publishes: the subscriber gets it.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            reply = await http.post("/announce", json={"room": "news", "text": "from a route"})
        assert reply.status_code == 200, reply.text
        pub = await asyncio.wait_for(lobby.publications.get(), 5)
        assert pub.data["text"] == "from a route" and pub.offset == reply.json()["offset"]

        # A publication that does not fit ChatMessage: 107 naming the field.
        with pytest.raises(ReplyError) as bad:
            await carol_lobby.publish({"txt": "typo"})
        assert bad.value.code == 107 and "text" in bad.value.message
        # One that fits goes out, stamped by on_publish.
        await carol_lobby.publish({"text": "fits"})
        pub = await asyncio.wait_for(lobby.publications.get(), 5)
        assert pub.data["text"] == "fits" and pub.data["sent_at"] > 0 and pub.info.user == "carol"

        # The typed RPC, with its database session per call: each call is committed and closed.
        first = await carol.rpc("roll", {"sides": 20})
        second = await carol.rpc("roll", {"sides": 20})
        assert second.data["rolls"] == first.data["rolls"] + 1
        with pytest.raises(ReplyError) as out_of_range:
            await carol.rpc("roll", {"sides": 1})
        assert out_of_range.value.code == 107 and "sides" in out_of_range.value.message
    finally:
        await carol.disconnect()
    check = sqlite3.connect(db)  # read by another process: what the app's sessions committed
    try:
        rows = check.execute("SELECT value FROM rolls WHERE user = 'carol'").fetchall()
    finally:
        check.close()
    assert len(rows) == second.data["rolls"] and rows[-1][0] == second.data["value"]
