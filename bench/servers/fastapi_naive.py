"""fastapi_naive: the anchor for "what a FastAPI user writes today".

The broadcast is the FastAPI documentation's ``ConnectionManager`` (WebSockets page, "Handling
disconnections and multiple clients"): a list of accepted sockets and a ``for`` loop awaiting
``send_text`` on each, run on uvicorn. It speaks the benchmark's plain anchor protocol:

- ``/sub``: a subscriber, added to the manager on connect; what it sends is read and ignored;
- ``/pub``: a publisher; each text message it sends is broadcast, unchanged, to every subscriber;
- ``/ws``: echo, ``Message text was: <text>`` (the FastAPI docs' first example; the RPC anchor).

    .venv/bin/python -m uvicorn bench.servers.fastapi_naive:app --host 127.0.0.1 --port 18765
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        self.active_connections.remove(websocket)

    async def broadcast(self, message: str) -> None:
        for connection in self.active_connections:
            await connection.send_text(message)


manager = ConnectionManager()
app = FastAPI()


@app.websocket("/sub")
async def subscriber(websocket: WebSocket) -> None:
    await manager.connect(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        manager.disconnect(websocket)


@app.websocket("/pub")
async def publisher(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await manager.broadcast(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_text()
            await websocket.send_text(f"Message text was: {data}")
    except WebSocketDisconnect:
        pass
