"""The WebSocket edge: ASGI messages in and out of a Session. Nothing else touches the socket.

Frames are moved with raw ASGI messages (not ``send_text``/``receive_text``), so a
client that went away is just the end of the loop, never a "Cannot call send once a
close message has been sent" error.

:func:`websocket_handler` is the client endpoint as a FastAPI WebSocket route (the Hub's
router; the app's ``on_connect`` runs at the upgrade, through ``node.connect_hook``).
``livehub serve`` answers the client endpoint below ASGI instead (``livehub.connection``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast
from urllib.parse import urlsplit

from starlette.websockets import WebSocket

from livehub.models import Credentials
from livehub.node import Node
from livehub.protocol.codes import CLOSE_MESSAGE_TOO_BIG, Disconnect, Error, disconnect_inappropriate_protocol
from livehub.session import Session

log = logging.getLogger("livehub.transport")


class ASGITransport:
    """A Session's transport over ASGI messages: ``write`` starts the ASGI ``send`` and
    reports whether it finished at once (it does unless the socket pushes back)."""

    __slots__ = ("_send", "_pending")

    def __init__(self, send: Callable[[Any], Awaitable[None]]) -> None:
        self._send = send  # an ASGI send: an async function, so it returns a coroutine
        #: A send that had to wait: the coroutine, started by hand, and what it waits on.
        self._pending: tuple[Coroutine[Any, Any, None], Any] | None = None

    def write(self, frame: str) -> bool:
        send = cast(Coroutine[Any, Any, None], self._send({"type": "websocket.send", "text": frame}))
        try:
            waiting = send.send(None)
        except StopIteration:
            return True
        self._pending = (send, waiting)
        return False

    async def drained(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        send, waiting = pending
        try:
            await _resume(send, waiting)
        except asyncio.CancelledError:
            send.close()
            raise

    async def close(self, code: int, reason: str) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:  # the peer never took it: abandoned
            pending[0].close()
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


async def _resume(send: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Drive a coroutine that was started by hand and is waiting on ``waiting``."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                # What a Task does with a yielded future before it waits on it.
                waiting._asyncio_future_blocking = False
                await waiting
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            try:
                waiting = send.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting = send.send(None)
        except StopIteration:
            return


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
) -> None:
    """Pump frames from an accepted WebSocket into a new Session until either side closes."""
    size_limit = node.settings.websocket.message_size_limit
    session = Session(node, ASGITransport(send), credentials, scope)
    session.start()
    try:
        while not session.closing:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                session.outbox.abort()
                break
            text = message.get("text")
            if text is None:
                session.disconnect(disconnect_inappropriate_protocol())
            elif len(text) > size_limit:
                session.disconnect(Disconnect(CLOSE_MESSAGE_TOO_BIG, "message too big"))
            else:
                await session.handle_frame(text)
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
        await websocket.accept(subprotocol="centrifuge-json" if "centrifuge-json" in offered else None)
        await run_session(node, websocket.receive, websocket.send, credentials, scope)

    return handle
