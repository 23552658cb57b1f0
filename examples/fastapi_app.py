"""Realtime added to a FastAPI app: the README's "Add realtime to a FastAPI app", as a file.

Run it:  .venv/bin/uvicorn examples.fastapi_app:app --port 8000
Clients (centrifuge-js, centrifuge-python) connect to ws://localhost:8000/connection/websocket
with the header ``X-User: alice`` or the cookie ``session=carol-session`` (stand-ins for your
real auth), subscribe to ``chat:<room>``, publish messages there and call the ``roll`` RPC;
``POST /announce`` publishes from an ordinary route. The AsyncAPI document of it all is at
http://localhost:8000/asyncapi.json. Rolls are kept in SQLite (``$CHAT_DB``, else ./chat.sqlite3).
tests/test_readme.py checks that the README shows exactly the code below.
"""

import os
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Cookie, Depends, FastAPI, Header
from pydantic import BaseModel, Field

from livehub import Client, ConnectResult, Error, Hub, Settings

app = FastAPI(title="chat example")
hub = Hub(Settings())  # in-memory engine; a config file or LIVEHUB_* variables change it
app.include_router(hub.router)  # the client endpoint /connection/websocket, and /asyncapi.json
app.include_router(hub.api_router())  # the server HTTP API, /api (401 unless http_api.key is set)

SESSIONS = {"carol-session": "carol"}  # your session store
BANNED = {"mallory"}


async def current_user(
    x_user: Annotated[str | None, Header()] = None,
    session: Annotated[str | None, Cookie()] = None,
) -> str | None:
    """Your app's usual auth dependency: a header, a session cookie, an OAuth2 bearer token..."""
    return x_user or SESSIONS.get(session or "")


@hub.on_connect  # every parameter is a FastAPI dependency, resolved from the WebSocket handshake
async def authenticate(user: Annotated[str | None, Depends(current_user)]) -> ConnectResult:
    if not user:
        raise Error(101, "unauthorized")  # the SDK's connect fails with this error
    return ConnectResult(user=user, info={"name": user.title()})


class ChatMessage(BaseModel):
    text: str = Field(min_length=1, max_length=500)
    sent_at: float = 0.0


# The namespace "chat" is declared here, with its options: no config needed.
hub.channel(
    "chat:{room}",
    model=ChatMessage,  # every publication must fit (107 otherwise), from clients and the server
    description="Messages of one chat room",
    history_size=50,
    history_ttl="10m",
    force_recovery=True,
    presence=True,
    join_leave=True,
    force_push_join_leave=True,
)


@hub.on_subscribe("chat:{room}")
async def may_join(client: Client, room: str) -> bool:
    return client.user not in BANNED and not room.startswith("staff-")  # False: 103


@hub.on_publish("chat:{room}")  # clients may publish here; the server stamps each message
async def stamp(client: Client, message: ChatMessage, room: str) -> ChatMessage:
    return message.model_copy(update={"sent_at": time.time()})


async def database() -> AsyncIterator[sqlite3.Connection]:
    """A database session per call: opened before the handler, committed and closed after it."""
    db = sqlite3.connect(os.environ.get("CHAT_DB", "chat.sqlite3"))
    try:
        db.execute("CREATE TABLE IF NOT EXISTS rolls (user TEXT, value INTEGER)")
        yield db
        db.commit()
    finally:
        db.close()


class Roll(BaseModel):
    sides: int = Field(default=6, ge=2, le=100)


class RollResult(BaseModel):
    value: int
    sides: int
    rolls: int  # how many times this user has rolled


@hub.rpc("roll")
async def roll(
    client: Client, request: Roll, db: Annotated[sqlite3.Connection, Depends(database)]
) -> RollResult:
    """Roll a die on the server."""
    value = random.randint(1, request.sides)
    db.execute("INSERT INTO rolls VALUES (?, ?)", (client.user, value))
    (rolls,) = db.execute("SELECT count(*) FROM rolls WHERE user = ?", (client.user,)).fetchone()
    return RollResult(value=value, sides=request.sides, rolls=rolls)


class Announcement(BaseModel):
    room: str = "lobby"
    text: str


@app.post("/announce")
async def announce(announcement: Announcement) -> dict[str, int]:
    """An ordinary route publishing to a channel."""
    message = ChatMessage(text=announcement.text, sent_at=time.time())
    position = await hub.publish(f"chat:{announcement.room}", message)
    return {"offset": position.offset}
