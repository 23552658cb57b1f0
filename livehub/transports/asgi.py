"""The client endpoint as an ASGI WebSocket: ASGI messages in and out of a Session.

:func:`websocket_handler` is the Hub's FastAPI WebSocket route: what serves the client
endpoint under any ASGI server (hypercorn, granian, daphne, uvicorn without livehub's
protocol). Under uvicorn with livehub's protocol (``livehub serve``, ``livehub run``) the
endpoint is answered below ASGI instead (``livehub.transports.websocket``) and this route
only sees what that one hands over.

Frames are moved with raw ASGI messages (not ``send_text``/``receive_text``), so a
client that went away is just the end of the loop, never a "Cannot call send once a
close message has been sent" error.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit

from starlette.websockets import WebSocket

from livehub.models import Credentials
from livehub.node import Node
from livehub.protocol.codes import CLOSE_MESSAGE_TOO_BIG, Disconnect, Error, disconnect_inappropriate_protocol
from livehub.protocol.encoding import JSON, Encoding, negotiate
from livehub.session import Session

log = logging.getLogger("livehub.transport")


class ASGITransport:
    """A Session's transport over ASGI messages.

    ``write`` starts the ASGI ``send`` as a task and reports push-back until it completes:
    the outbox then writes nothing more until :meth:`drained` has awaited that send. One
    send in flight at a time, in order; a send the peer never takes is cancelled by
    ``close`` (a slow client) or when the outbox gives up.
    """

    __slots__ = ("_send", "_sending")

    def __init__(self, send: Callable[[Any], Awaitable[None]]) -> None:
        self._send = send
        self._sending: asyncio.Task[None] | None = None

    def write(self, frame: str | bytes) -> bool:
        if self._sending is not None:  # the contract says this does not happen; never reorder
            raise RuntimeError("write before the previous send was drained")
        message = {"type": "websocket.send", "text" if isinstance(frame, str) else "bytes": frame}
        self._sending = asyncio.ensure_future(self._send(message))
        return False

    async def drained(self) -> None:
        sending = self._sending
        if sending is None:
            return
        try:
            await sending  # cancelled with it if the outbox gives up
        finally:
            self._sending = None

    async def close(self, code: int, reason: str) -> None:
        sending, self._sending = self._sending, None
        if sending is not None and not sending.done():  # the peer never took it: abandoned
            sending.cancel()
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


def origin_allowed(headers: dict[str, str], patterns: list[str]) -> bool:
    """Browsers send Origin; with no patterns only same-host pages (and non-browsers) may connect."""
    origin = headers.get("origin")
    if not origin:
        return True
    if patterns:
        return any(fnmatch.fnmatchcase(origin.lower(), p.lower()) for p in patterns)
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


async def run_session(
    node: Node,
    receive: Callable[[], Awaitable[Any]],
    send: Callable[[Any], Awaitable[None]],
    credentials: Credentials | Error | Disconnect | None = None,
    scope: dict[str, Any] | None = None,
    encoding: Encoding = JSON,
) -> None:
    """Pump frames from an accepted WebSocket into a new Session until either side closes:
    text frames for JSON, binary frames for Protobuf (the other kind closes with 3506)."""
    size_limit = node.settings.websocket.message_size_limit
    session = Session(node, ASGITransport(send), credentials, scope, encoding=encoding)
    kind = "bytes" if encoding.binary else "text"
    session.start()
    try:
        while not session.closing:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                session.outbox.abort()
                break
            frame = message.get(kind)
            if frame is None:
                session.disconnect(disconnect_inappropriate_protocol())
            elif len(frame) > size_limit:
                session.disconnect(Disconnect(CLOSE_MESSAGE_TOO_BIG, "message too big"))
            else:
                await session.handle_frame(frame)
        await session.outbox.wait_closed()
    finally:
        session.outbox.abort()
        await session.cleanup()


Handler = Callable[[WebSocket], Awaitable[None]]


def websocket_handler(node: Node) -> Handler:
    """The client endpoint as a FastAPI WebSocket route; ``node.connect_hook`` (the app's
    ``on_connect``) says who the connection is, from its handshake, before it is accepted."""
    patterns = node.settings.client.allowed_origins

    async def handle(websocket: WebSocket) -> None:
        if not origin_allowed(dict(websocket.headers), patterns):
            log.info("rejected connection from origin %r", websocket.headers.get("origin"))
            await websocket.close(code=1008)  # before accept: the handshake gets HTTP 403
            return
        scope = cast(dict[str, Any], websocket.scope)
        hook = node.connect_hook
        credentials = await hook(scope) if hook is not None else None
        offered = websocket.scope.get("subprotocols") or []
        query = websocket.scope.get("query_string", b"").decode("latin-1")
        encoding, subprotocol = negotiate(offered, query)
        await websocket.accept(subprotocol=subprotocol)
        await run_session(node, websocket.receive, websocket.send, credentials, scope, encoding)

    return handle
