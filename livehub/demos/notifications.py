"""Notifications: an HTTP route publishes to one user's personal channel ``#<user>``.

With ``client.subscribe_to_user_personal_channel.enabled`` (the demo config sets it) the
server subscribes each connection to its user's channel on connect, so every window of
that user, and nobody else, gets the notification. The page is ``static/notifications.js``.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints

from livehub import Client, Error, Hub

UserName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,24}$")]


class Notification(BaseModel):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
    text: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] = ""
    level: Literal["info", "success", "warning"] = "info"
    time: float = 0.0


class SendNotification(Notification):
    to: UserName


class Sent(BaseModel):
    channel: str
    offset: int
    #: Connections of that user on this node right now (0: it waits in the channel's history).
    delivered_to: int = Field(description="connections of the user on this node")


def setup(hub: Hub, router: APIRouter) -> None:
    # Personal channels carry more than notifications, so no model is declared for them;
    # what the server sends is a Notification. Even in insecure mode, only the owner may
    # subscribe to (or publish into) ``#<user>``.
    hub.channel("#{user}", description="One user's personal channel: notifications")

    @hub.on_subscribe("#{user}")
    async def only_the_owner_reads(client: Client, user: str) -> bool:
        return client.user == user

    @hub.on_publish("#{user}")
    async def only_the_owner_writes(client: Client, data: object, user: str) -> None:
        if client.user != user:
            raise Error(103, "permission denied")

    @router.post("/demos/notify")
    async def notify(request: SendNotification) -> Sent:
        """Send a notification to every window of one user (try it with curl)."""
        note = Notification(title=request.title, text=request.text, level=request.level, time=time.time())
        channel = f"#{request.to}"
        position = await hub.publish(channel, note)
        connections = len(hub.connections(user=request.to))
        return Sent(channel=channel, offset=position.offset, delivered_to=connections)
