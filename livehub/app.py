"""The standalone server: a FastAPI app with the hub's endpoint, the server API, the operator's
endpoints (``/metrics``, ``/health``, ``/health/ready``, the admin page) and, on request, the
demos with the seed's examples.

``create_app(settings)`` is what ``livehub serve`` runs and what tests start in-process.
The seed endpoints ``/ws``, ``/chat`` and ``/echo`` are kept as the tutorial wrote them (they
show the raw FastAPI WebSocket API that livehub builds on) and come with the demos.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, Response

from livehub import __version__, metrics
from livehub.api import api_router
from livehub.core.node import Node
from livehub.engines.base import HistoryOptions
from livehub.hub import Hub
from livehub.settings import Settings

#: How long the readiness check waits for the engine.
READY_TIMEOUT = 2.0


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
<li>Demos and the seed examples (<code>/ws</code>, <code>/chat</code>, <code>/echo</code>):
<code>livehub serve --demos</code> (<code>make run</code>)</li>
</ul></body></html>"""


async def engine_ready(node: Node) -> str:
    """ "" when the engine answers; else why not (for the readiness endpoint)."""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await node.presence_manager.presence_stats("livehub-readiness")
            await node.broker.history("livehub-readiness", HistoryOptions(limit=0))
    except TimeoutError:
        return f"engine did not answer within {READY_TIMEOUT:g}s"
    except Exception as exc:  # EngineUnavailable, or whatever a broken engine raises
        return f"engine unavailable: {exc}"
    return ""


def add_operator_endpoints(app: FastAPI, node: Node) -> None:
    """``/metrics``, ``/health`` and ``/health/ready`` (Centrifugo's ``prometheus`` and ``health``)."""
    settings = node.settings
    if settings.prometheus.enabled:
        metrics.instrument(node)
        registry = metrics.node_registry(node)

        @app.get(settings.prometheus.handler_prefix, include_in_schema=False)
        async def prometheus_metrics() -> Response:
            return Response(metrics.render(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    if settings.health.enabled:
        prefix = settings.health.handler_prefix.rstrip("/")

        @app.get(prefix, include_in_schema=False)
        async def health() -> dict[str, str]:
            """Alive: the process answers (Centrifugo's ``/health``)."""
            return {}

        @app.get(prefix + "/ready", include_in_schema=False)
        async def ready() -> JSONResponse:
            """Ready for traffic: the engine answers; 503 while it does not."""
            problem = await engine_ready(node)
            if problem:
                return JSONResponse({"status": "unavailable", "reason": problem}, status_code=503)
            return JSONResponse({"status": "ok"})


def create_app(
    settings: Settings | None = None, hub: Hub | None = None, demos: bool | None = None
) -> FastAPI:
    """The standalone app: the hub's router (client endpoint, AsyncAPI), the server API, the
    operator's endpoints, the admin page (``admin.enabled``), a home page.

    ``demos`` adds the demo pages (``livehub.demos``, with their channels and RPCs) and the
    seed examples; by default as ``demos.enabled`` says (``livehub serve --demos``), never
    because of ``client.insecure``: their token route lets anyone connect as any user.
    """
    hub = hub or Hub(settings)
    app = FastAPI(title="livehub", version=__version__)
    app.state.hub = hub
    app.state.node = hub.node
    app.include_router(hub.router)
    app.include_router(api_router(hub.node))
    add_operator_endpoints(app, hub.node)
    if hub.settings.admin.enabled:
        from livehub import admin

        admin.install(app, hub.node, hub.settings.admin)
    if demos is None:
        demos = hub.settings.demos.enabled
    if demos:
        from livehub.demos import install as install_demos

        add_seed_endpoints(app)
        install_demos(app, hub)  # its home page at /, the demos under /demos
    else:

        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def home() -> str:
            return HOME

    return app
