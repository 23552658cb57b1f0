"""Realtime added to a FastAPI app with livehub: auth by dependency, typed channels, an RPC.

Run it:  .venv/bin/uvicorn examples.fastapi_app:app --port 8000
Clients (centrifuge-js, centrifuge-python) connect to ws://localhost:8000/connection/websocket
with the header ``X-User: alice`` (a stand-in for your real session or OAuth2 auth) and can
then subscribe to ``chat:<room>``, publish messages there, and call the ``roll`` RPC.
The AsyncAPI document of it all is at http://localhost:8000/asyncapi.json.
"""

from __future__ import annotations

import random
import time
from typing import Annotated

from fastapi import Depends, FastAPI, Header
from pydantic import BaseModel, Field

from livehub import ConnectResult, Error, Hub, Session, Settings

app = FastAPI(title="chat example")
CHAT = {
    "name": "chat",
    "history_size": 50,
    "history_ttl": "10m",
    "force_recovery": True,
    "presence": True,
    "join_leave": True,
    "force_push_join_leave": True,
    "allow_history_for_subscriber": True,
    "allow_presence_for_subscriber": True,
}
hub = Hub(Settings(channel={"namespaces": [CHAT]}))
app.include_router(hub.router)

BANNED = {"mallory"}


class ChatMessage(BaseModel):
    text: Annotated[str, Field(min_length=1, max_length=500)]
    sent_at: float = 0.0


class Roll(BaseModel):
    sides: Annotated[int, Field(ge=2, le=100)] = 6


class RollResult(BaseModel):
    value: int
    sides: int


async def current_user(x_user: Annotated[str | None, Header()] = None) -> str | None:
    """Your app's usual auth dependency: a session cookie, an OAuth2 bearer token, ..."""
    return x_user


@hub.on_connect
async def authenticate(user: Annotated[str | None, Depends(current_user)]) -> ConnectResult:
    if not user:
        raise Error(101, "unauthorized")
    return ConnectResult(user=user, info={"name": user.title()})


hub.channel("chat:{room}", model=ChatMessage, description="Messages of one chat room")


@hub.on_subscribe("chat:{room}")
async def may_join(client: Session, room: str) -> bool:
    return client.user not in BANNED and not room.startswith("staff-")


@hub.on_publish("chat:{room}")
async def stamp(client: Session, data: ChatMessage, room: str) -> ChatMessage:
    return data.model_copy(update={"sent_at": time.time()})


@hub.rpc("roll")
async def roll(client: Session, request: Roll) -> RollResult:
    """Roll a die on the server."""
    return RollResult(value=random.randint(1, request.sides), sides=request.sides)


@app.post("/rooms/{room}/announce")
async def announce(room: str, text: str) -> dict[str, int]:
    """An ordinary route publishing to a channel."""
    position = await hub.publish(f"chat:{room}", ChatMessage(text=text, sent_at=time.time()))
    return {"offset": position.offset}
