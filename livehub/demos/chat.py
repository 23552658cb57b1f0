"""Live chat: rooms are channels ``chat.<room>``; clients publish, the server stamps each message.

Everything else is channel configuration (the demo config's default namespace): presence
for who is online, join/leave pushes, history for the last messages, and recovery so a
dropped connection gets what it missed. The page is ``static/chat.js``.
"""

from __future__ import annotations

import re
import time
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from livehub import Client, Error, Hub

ROOM = re.compile(r"[a-z0-9-]{1,32}")


class ChatMessage(BaseModel):
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    #: Set by the server: whatever a client puts here is replaced.
    user: str = ""
    time: float = Field(default=0.0, description="Unix time the server received it")


def setup(hub: Hub) -> None:
    hub.channel("chat.{room}", model=ChatMessage, description="Messages of one chat room")

    @hub.on_subscribe("chat.{room}")
    async def may_enter(client: Client, room: str) -> bool:
        if not client.user:
            raise Error(101, "unauthorized: pick a nickname first")
        return ROOM.fullmatch(room) is not None

    @hub.on_publish("chat.{room}")
    async def stamp(client: Client, data: ChatMessage, room: str) -> ChatMessage:
        if not client.user:
            raise Error(101, "unauthorized: pick a nickname first")
        return data.model_copy(update={"user": client.user, "time": time.time()})
