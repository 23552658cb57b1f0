"""The demo pages (one layout, one fragment per page) and the token route they connect with.

A page gets a connection JWT from ``GET /demos/token?user=<name>``: a real app would
take the user from its own session here; the demo lets anyone be anyone, to show several
users in several windows. The JWT is signed with ``client.token.hmac_secret_key``.
"""

from __future__ import annotations

import html
import time
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Annotated

import jwt
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from livehub import Hub

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
BUNDLE = STATIC / "vendor" / "centrifuge.js"
TOKEN_TTL = 3600

#: path, template and script name, title, navigation label (None: not in the navigation)
PAGES = [
    ("/", "home", "Real-time messaging for FastAPI", None),
    ("/demos/chat", "chat", "Live chat", "Chat"),
    ("/demos/notifications", "notifications", "Notifications", "Notifications"),
    ("/demos/dashboard", "dashboard", "Live dashboard", "Dashboard"),
    ("/demos/game", "game", "Tic-tac-toe", "Game"),
    ("/demos/ticker", "ticker", "Streaming ticker", "Ticker"),
    ("/demos/admin", "admin", "Admin", "Admin"),
    ("/demos/seed", "seed", "Seed endpoints", "Seed"),
]

UserName = Annotated[str, Query(pattern=r"^[A-Za-z0-9_-]{1,24}$")]


class TokenReply(BaseModel):
    user: str
    token: str


NO_BUNDLE = (
    '<div class="notice error">The browser SDK bundle is missing: run <code>make frontend</code> '
    "(or <code>bash frontend/build.sh</code>) and reload.</div>"
)


@cache
def layout(slug: str) -> str:
    """The layout around one page's fragment (read once, then cached)."""
    nav = "".join(
        f'<a href="{path}"{" aria-current=page" if name == slug else ""}>{label}</a>'
        for path, name, _, label in PAGES
        if label
    )
    title = next(title for _, name, title, _ in PAGES if name == slug)
    return (
        (TEMPLATES / "layout.html")
        .read_text()
        .replace("{{title}}", html.escape(title))
        .replace("{{nav}}", nav)
        .replace("{{page}}", slug)
        .replace("{{body}}", (TEMPLATES / f"{slug}.html").read_text())
    )


def render(slug: str) -> str:
    return layout(slug).replace("{{notice}}", "" if BUNDLE.exists() else NO_BUNDLE)


def setup(hub: Hub, router: APIRouter) -> None:
    token_settings = hub.settings.client.token

    @router.get("/demos/token")
    async def token(user: UserName) -> TokenReply:
        """A connection JWT for ``user`` (demo only: a real app checks who asks)."""
        if not token_settings.hmac_secret_key:
            raise HTTPException(503, "set client.token.hmac_secret_key in the config to sign demo tokens")
        claims: dict[str, object] = {"sub": user, "exp": int(time.time()) + TOKEN_TTL, "info": {"name": user}}
        if token_settings.audience:
            claims["aud"] = token_settings.audience
        if token_settings.issuer:
            claims["iss"] = token_settings.issuer
        signed = jwt.encode(claims, token_settings.hmac_secret_key, algorithm="HS256")
        return TokenReply(user=user, token=signed)

    for path, slug, _, _ in PAGES:
        router.add_api_route(path, page(slug), methods=["GET"], response_class=HTMLResponse)


def page(slug: str) -> Callable[[], Awaitable[HTMLResponse]]:
    async def show() -> HTMLResponse:
        return HTMLResponse(render(slug))

    show.__name__ = f"{slug}_page"
    return show
