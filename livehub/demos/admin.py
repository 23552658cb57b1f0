"""Admin: this node's connections and channels, for the page ``static/admin.js``.

The route is protected by the server API key (``http_api.key``), checked as the server
HTTP API checks it (``X-API-Key``). The page's buttons call that API itself
(``POST /api/info`` for the nodes, ``POST /api/publish``, ``POST /api/disconnect``), and its
rates come from the dashboard's ``dashboard.metrics`` channel.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from livehub import Hub
from livehub.api import authorized

MAX_LISTED = 200


class Connection(BaseModel):
    client: str
    user: str
    name: str
    channels: list[str]


class AdminState(BaseModel):
    connections: list[Connection]
    #: Channels with subscribers on this node, and how many.
    channels: dict[str, int]


def setup(hub: Hub, router: APIRouter) -> None:
    settings = hub.settings.http_api

    def api_key(request: Request) -> None:
        if not settings.key and not settings.insecure:
            raise HTTPException(503, "set http_api.key in the config to use the admin page")
        if not authorized(request, settings):
            raise HTTPException(401, "wrong API key")

    @router.get("/demos/admin/state", dependencies=[Depends(api_key)])
    async def admin_state() -> AdminState:
        clients = sorted(hub.connections(), key=lambda c: (c.user, c.id))[:MAX_LISTED]
        return AdminState(
            connections=[
                Connection(client=c.id, user=c.user, name=c.name, channels=sorted(c.channels))
                for c in clients
            ],
            channels=dict(sorted(hub.channels().items())),
        )
