"""The WebSocket edge: Starlette's WebSocket in, a Session out. Nothing else touches the socket.

Frames are moved with raw ASGI messages (not ``send_text``/``receive_text``), so a
client that went away is just the end of the loop, never a "Cannot call send once a
close message has been sent" error.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.websockets import WebSocket

from livehub.models import Credentials
from livehub.node import Node
from livehub.protocol.codes import CLOSE_MESSAGE_TOO_BIG, DISCONNECT_INAPPROPRIATE_PROTOCOL, Disconnect, Error
from livehub.session import Session

log = logging.getLogger("livehub.transport")


class WebSocketTransport:
    __slots__ = ("_send",)

    def __init__(self, websocket: WebSocket) -> None:
        self._send = websocket.send

    async def send(self, frame: str) -> None:
        await self._send({"type": "websocket.send", "text": frame})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


def origin_allowed(websocket: WebSocket, patterns: list[str]) -> bool:
    """Browsers send Origin; with no patterns only same-host pages (and non-browsers) may connect."""
    origin = websocket.headers.get("origin")
    if not origin:
        return True
    if patterns:
        return any(fnmatch.fnmatchcase(origin.lower(), p.lower()) for p in patterns)
    return urlsplit(origin).netloc.lower() == websocket.headers.get("host", "").lower()


Handler = Callable[[WebSocket, Credentials | Error | Disconnect | None], Awaitable[None]]


def websocket_handler(node: Node) -> Handler:
    settings = node.settings
    size_limit = settings.websocket.message_size_limit

    async def handle(
        websocket: WebSocket, credentials: Credentials | Error | Disconnect | None = None
    ) -> None:
        if not origin_allowed(websocket, settings.client.allowed_origins):
            log.info("rejected connection from origin %r", websocket.headers.get("origin"))
            await websocket.close(code=1008)  # before accept: the handshake gets HTTP 403
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="centrifuge-json" if "centrifuge-json" in offered else None)
        session = Session(node, WebSocketTransport(websocket), credentials)
        session.start()
        receive = websocket.receive
        try:
            while not session.closing:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    session.outbox.abort()
                    break
                text = message.get("text")
                if text is None:
                    session.disconnect(DISCONNECT_INAPPROPRIATE_PROTOCOL)
                elif len(text) > size_limit:
                    session.disconnect(Disconnect(CLOSE_MESSAGE_TOO_BIG, "message too big"))
                else:
                    await session.handle_frame(text)
            await session.outbox.wait_closed()
        finally:
            session.outbox.abort()
            await session.cleanup()

    return handle
