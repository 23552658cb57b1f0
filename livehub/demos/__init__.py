"""The demo pages that ``make run`` shows at ``/`` (``livehub serve --demos``, or ``demos.enabled``).

Each demo is a small module that uses only livehub's public API (:class:`~livehub.Hub`)
on the server, and a page that uses the official ``centrifuge`` SDK in the browser
(``static/<demo>.js``, importing the bundle that ``frontend/`` builds). They are meant to
be read and copied:

* :mod:`.chat` — rooms, presence, history, recovery; the server stamps who wrote what.
* :mod:`.notifications` — an HTTP route publishes to one user's personal channel ``#<user>``.
* :mod:`.dashboard` — the hub's own metrics and a simulated source, sampled by background tasks.
* :mod:`.game` — tic-tac-toe where the server is the authority: RPCs for moves, publications for state.
* :mod:`.ticker` — 200 updates a second, a snapshot RPC for new viewers.
* :mod:`.admin` — node, connections and channels, behind the server API key.
* :mod:`.pages` — the HTML pages, and the JWT route every page connects with.

Background tasks run with the app's lifespan and idle when nobody watches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from livehub.demos import admin, chat, dashboard, game, notifications, pages, ticker
from livehub.hub import Hub

Job = Callable[[], Coroutine[Any, Any, None]]


def background(*jobs: Job) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A lifespan running ``jobs`` as tasks while the app is up, cancelled when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(job(), name=f"demo {job.__qualname__}") for job in jobs]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return lifespan


def install(app: FastAPI, hub: Hub) -> None:
    """Add the demo pages, their channels, RPCs, routes and background tasks to ``app``."""
    chat.setup(hub)
    game.setup(hub)
    jobs = [*dashboard.setup(hub), *ticker.setup(hub)]
    router = APIRouter(include_in_schema=False, lifespan=background(*jobs))
    notifications.setup(hub, router)
    admin.setup(hub, router)
    pages.setup(hub, router)
    app.include_router(router)
    app.mount("/demos/static", StaticFiles(directory=pages.STATIC), name="demos-static")
