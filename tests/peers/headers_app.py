"""An app embedding a Hub whose ``on_connect`` reads the ``X-Token`` header, which browsers
send through headers emulation (the SDK's ``headers`` option), for test_headers_emulation.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header

from livehub import Client, ConnectResult, Hub, Settings

hub = Hub(Settings(client={"emulated_headers": ["x-token"]}))
app = FastAPI(title="headers emulation")
app.include_router(hub.router)


@hub.on_connect
async def connect(x_token: Annotated[str | None, Header()] = None) -> ConnectResult | None:
    return ConnectResult(user=x_token, info={"via": "x-token"}) if x_token else None


@hub.rpc("whoami")
async def whoami(client: Client, request: Any) -> dict[str, Any]:
    return {"user": client.user, "headers": {k: v for k, v in client.headers.items() if k.startswith("x-")}}
