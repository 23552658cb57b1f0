"""The seed's endpoints behave exactly as the FastAPI tutorial wrote them (they come with the demos)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import websockets
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from livehub.app import create_app
from livehub.settings import Settings
from tests.servers import ROOT, serve


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(), demos=True)) as c:
        yield c


def test_ws_answers_every_text(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        for text in ("hello", "again", "ünïcode ✓", ""):
            ws.send_text(text)
            assert ws.receive_text() == f"Message text was: {text}"


def test_chat_answers_one_text_then_closes(client: TestClient) -> None:
    with client.websocket_connect("/chat") as ws:
        ws.send_text("hi there")
        assert ws.receive_text() == "You said: hi there"
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()


def test_echo_echoes_each_text(client: TestClient) -> None:
    with client.websocket_connect("/echo") as ws:
        for text in ("a", "b b", '{"json": true}'):
            ws.send_text(text)
            assert ws.receive_text() == text


def test_home_page(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "/connection/websocket" in response.text


def test_without_the_demos_there_are_no_seed_endpoints() -> None:
    with TestClient(create_app(Settings(client={"insecure": True}))) as c:
        assert c.get("/").status_code == 200
        for path in ("/ws", "/chat", "/echo"):
            with pytest.raises(WebSocketDisconnect), c.websocket_connect(path):
                pass


@pytest.fixture(scope="module")
def live_port() -> Iterator[int]:
    with serve(ROOT / "examples" / "demo.toml") as port:
        yield port


async def test_seed_endpoints_over_a_real_socket(live_port: int) -> None:
    base = f"ws://127.0.0.1:{live_port}"
    async with websockets.connect(base + "/ws") as ws:
        for i in range(3):
            await ws.send(f"m{i}")
            assert await asyncio.wait_for(ws.recv(), 5) == f"Message text was: m{i}"
    async with websockets.connect(base + "/echo") as ws:
        for i in range(3):
            await ws.send(f"e{i}")
            assert await asyncio.wait_for(ws.recv(), 5) == f"e{i}"
    async with websockets.connect(base + "/chat") as ws:
        await ws.send("once")
        assert await asyncio.wait_for(ws.recv(), 5) == "You said: once"
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 5)
