"""A FastAPI app embedding a Hub whose connections are resolved by ``node.connect_hook``
(who the client is, from its handshake's ASGI scope), for tests/test_run.py."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI

from livehub import Client, Hub, Settings
from livehub.models import Credentials
from livehub.protocol.codes import Error

CHAT = {
    "name": "chat",
    "presence": True,
    "allow_subscribe_for_client": True,
    "allow_presence_for_subscriber": True,
}
hub = Hub(Settings(channel={"namespaces": [CHAT]}))
app = FastAPI(title="embedded hub")
app.include_router(hub.router)


async def by_header(scope: dict[str, Any]) -> Credentials | Error:
    user = dict(scope["headers"]).get(b"x-user", b"").decode()
    return Credentials(user) if user else Error(101, "unauthorized")


hub.node.connect_hook = by_header


@hub.on_publish("chat:{room}")
async def stamp(client: Client, data: dict[str, Any], room: str) -> dict[str, Any]:
    return {**data, "sent_at": time.time()}


@hub.rpc("roll")
async def roll(client: Client, request: dict[str, Any]) -> dict[str, int]:
    return {"value": 1 + int(time.time() * 1000) % request["sides"], "sides": request["sides"]}


@hub.rpc("scope")
async def scope(client: Client, request: Any) -> dict[str, Any]:
    """What the connection's scope holds: the handshake as the connect hook saw it."""
    scope = client.handshake.scope
    return {"keys": sorted(scope), "path": scope["path"]}
