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
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from livehub import metrics
from livehub.models import Credentials
from livehub.node import Node
from livehub.protocol.codes import CLOSE_MESSAGE_TOO_BIG, Disconnect, Error, disconnect_inappropriate_protocol
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

    def write(self, frame: str) -> bool:
        if self._sending is not None:  # the contract says this does not happen; never reorder
            raise RuntimeError("write before the previous send was drained")
        self._sending = asyncio.ensure_future(self._send({"type": "websocket.send", "text": frame}))
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


def origin_allowed(headers: Mapping[str, str], patterns: list[str]) -> bool:
    """Browsers send Origin: it must match one of ``patterns`` (globs). With no patterns no
    browser page may connect, not even one served by this host (Centrifugo's rule: a
    same-host check trusts the Host header, which DNS rebinding controls). Clients that
    send no Origin (SDKs outside browsers) are not concerned."""
    origin = headers.get("origin")
    if not origin:
        return True
    return any(fnmatch.fnmatchcase(origin.lower(), p.lower()) for p in patterns)


def admission(node: Node, headers: Mapping[str, str], ip: str) -> tuple[int, str] | None:
    """Check a new connection at its upgrade, before any app code: its origin, then the
    node's connection limits (counting it in when admitted: the caller must
    ``node.gate.release(ip)`` when it ends). A refusal is the HTTP status and reason to
    answer with: 403 for the origin, 503 for a limit (Centrifugo's answers)."""
    if not origin_allowed(headers, node.settings.client.allowed_origins):
        log.info("rejected connection from origin %r", headers.get("origin"))
        metrics.limit_refusal("origin")
        return 403, "origin not allowed"
    gate = node.gate
    if gate.enabled:
        refused = gate.admit(ip, time.monotonic())
        if refused is not None:
            log.info("refused connection from %s: %s reached", ip, refused)
            metrics.limit_refusal(refused)
            return 503, f"{refused} reached"
    return None


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
    ``on_connect``) says who the connection is, from its handshake, before it is accepted.
    The origin and the connection limits are checked first (:func:`admission`)."""

    async def handle(websocket: WebSocket) -> None:
        ip = websocket.client.host if websocket.client is not None else ""
        refused = admission(node, websocket.headers, ip)
        if refused is not None:
            status, reason = refused
            # before accept: the HTTP answer where the server has the denial-response
            # extension; else a close before accept, which servers answer with 403
            if "websocket.http.response" in websocket.scope.get("extensions", {}):
                await websocket.send_denial_response(PlainTextResponse(reason + "\n", status_code=status))
            else:
                await websocket.close(code=1008)
            return
        try:
            scope = cast(dict[str, Any], websocket.scope)
            hook = node.connect_hook
            credentials = await hook(scope) if hook is not None else None
            offered = websocket.scope.get("subprotocols") or []
            await websocket.accept(subprotocol="centrifuge-json" if "centrifuge-json" in offered else None)
            await run_session(node, websocket.receive, websocket.send, credentials, scope)
        finally:
            node.gate.release(ip)

    return handle
