"""examples/fastapi_app.py served by uvicorn, driven by the official centrifuge-python SDK.

Shows the FastAPI-native API end to end: auth by ``Depends`` from a request header, a
typed channel whose publications are validated and transformed, pattern permissions and
an RPC method with Pydantic models.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from centrifuge import (  # type: ignore[import-untyped]
    Client,
    PublicationContext,
    ReplyError,
    SubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

from tests.servers import ROOT, free_port, wait_port


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = free_port()
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
    )
    try:
        wait_port(port, proc)
        yield f"ws://127.0.0.1:{port}/connection/websocket"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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
