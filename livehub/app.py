"""The standalone server: a FastAPI app with the hub's endpoint and the seed's examples.

``create_app(settings)`` is what ``livehub serve`` runs and what tests start in-process.
The seed endpoints ``/ws``, ``/chat`` and ``/echo`` are kept as the tutorial wrote them:
they show the raw FastAPI WebSocket API that livehub builds on.
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from livehub import __version__
from livehub.api import api_router
from livehub.demos import install as install_demos
from livehub.hub import Hub
from livehub.settings import Settings


def add_seed_endpoints(app: FastAPI) -> None:
    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                data = await websocket.receive_text()
                await websocket.send_text(f"Message text was: {data}")
        except WebSocketDisconnect:
            pass

    @app.websocket("/chat")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            data = await websocket.receive_text()
            await websocket.send_text(f"You said: {data}")
            await websocket.close()
        except WebSocketDisconnect:
            pass

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                data = await websocket.receive_text()
                await websocket.send_text(data)
        except WebSocketDisconnect:
            pass


HOME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>livehub</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;color:#1d2433}
code{background:#eef1f6;padding:.1rem .3rem;border-radius:4px}</style></head>
<body><h1>livehub</h1>
<p>Real-time messaging for Python, speaking Centrifugo's client protocol.</p>
<ul>
<li>Client endpoint: <code>ws://HOST/connection/websocket</code> (centrifuge-js, centrifuge-python)</li>
<li>Seed examples: <code>/ws</code>, <code>/chat</code>, <code>/echo</code></li>
<li>Demos: run with <code>examples/demo.toml</code> (<code>make run</code>)</li>
</ul></body></html>"""


def create_app(
    settings: Settings | None = None, hub: Hub | None = None, demos: bool | None = None
) -> FastAPI:
    """The standalone app: the hub's router (client endpoint, AsyncAPI), seed examples, home page.

    ``demos`` adds the demo pages (``livehub.demos``); by default only in ``client.insecure``
    mode, since their token route lets anyone connect as any user.
    """
    hub = hub or Hub(settings)
    app = FastAPI(title="livehub", version=__version__)
    app.state.hub = hub
    app.state.node = hub.node
    app.include_router(hub.router)
    app.include_router(api_router(hub.node))
    add_seed_endpoints(app)
    if demos is None:
        demos = hub.settings.client.insecure
    if demos:
        install_demos(app, hub)  # its home page at /, the demos under /demos
    else:

        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def home() -> str:
            return HOME

    return app
