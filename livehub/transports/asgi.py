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
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, cast

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from livehub import metrics
from livehub.core.node import Node
from livehub.core.session import Session
from livehub.models import Credentials
from livehub.protocol.codes import (
    CLOSE_MESSAGE_TOO_BIG,
    Disconnect,
    Error,
    disconnect_inappropriate_protocol,
)
from livehub.protocol.encoding import JSON, Encoding, negotiate

log = logging.getLogger("livehub.transport")


#: Bytes a connection's writer may have queued before ``write`` reports push-back: enough for
#: the frames of a few flushes while the server's send catches up, small next to the outbox's
#: own limit (``client.queue_max_size``), which is what decides that a client is too slow.
MAX_QUEUED = 64 * 1024
#: Closed with this code (a flood of commands past the rate limit), a client is owed nothing
#: that was queued for it: the close goes first.
CLOSE_FLOODING = 3013
#: How long a close may wait for the peer to take what is queued and the close message; then
#: the connection is let go (its session cleaned up, the handler returns to the server).
CLOSE_TIMEOUT = 2.0


class ASGITransport:
    """A Session's transport over ASGI messages: one writer task per connection.

    An ASGI ``send`` is a coroutine, so only a task can run it. A task per write (with the
    outbox waiting for each) costs two tasks and a loop turn per frame; stepping the
    coroutine by hand needs asyncio's private future protocol and runs the server's send
    outside the connection's task and context. Instead one task, started with the transport
    (at accept, in the connection's task) and ended by :meth:`close` or :meth:`stop`, sends
    the queued frames in order, awaiting one ``send`` each; uvicorn's returns without
    suspending unless its socket pushes back, so flushing a thousand connections steps a
    thousand existing tasks and creates none.

    ``write`` queues the frame and wakes the writer. Once more than ``max_queued`` bytes
    wait (the socket, or the server, does not keep up) it reports push-back, and
    :meth:`drained` waits until the writer has sent them all: the backlog stays in the
    outbox, whose byte limit closes a slow client with 3008, and this queue stays under
    ``max_queued`` plus one frame.
    """

    __slots__ = (
        "_send",
        "_max_queued",
        "_frames",
        "_queued",
        "_wakeup",
        "_idle",
        "_closed",
        "_failure",
        "_abandoned",
        "_writer",
    )

    def __init__(self, send: Callable[[Any], Awaitable[None]], max_queued: int = MAX_QUEUED) -> None:
        self._send = send
        self._max_queued = max_queued
        self._frames: deque[str | bytes] = deque()
        #: Bytes of the queued frames, the one being sent included.
        self._queued = 0
        #: What the writer waits on while the queue is empty; ``write`` sets it.
        self._wakeup: asyncio.Future[None] | None = None
        #: What :meth:`drained` waits on; the writer sets it once the queue is empty.
        self._idle: asyncio.Future[None] | None = None
        #: No more writes: the writer was stopped, or a send failed (``_failure``).
        self._closed = False
        self._failure: Exception | None = None
        #: The outbox stopped waiting for the queue (``drained`` was cancelled): close drops it.
        self._abandoned = False
        self._writer: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._write_queued())

    def write(self, frame: str | bytes) -> bool:
        if self._closed:
            self._raise_closed()
        self._frames.append(frame)
        self._queued += len(frame)
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set_result(None)
        return self._queued <= self._max_queued

    async def drained(self) -> None:
        if self._frames:
            self._idle = idle = asyncio.get_running_loop().create_future()
            try:
                await idle
            except asyncio.CancelledError:
                self._abandoned = True  # whoever waited has let go of what is queued
                raise
        if self._closed:
            self._raise_closed()

    async def close(self, code: int, reason: str) -> None:
        """Send what is queued, then the close message, within ``CLOSE_TIMEOUT`` in all. What
        the outbox stopped waiting for (a slow client's: the socket, or the server, would not
        take it) is abandoned, and so is what a flooder (3013) was due: it is not waited for.
        A peer that takes nothing is let go at the deadline, close message sent or not, so
        its session ends and the server stops reading it."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                try:
                    if not self._abandoned and code != CLOSE_FLOODING:
                        await self.drained()
                finally:
                    self.stop()
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except TimeoutError:
            log.debug("close %d not taken within %gs: the connection is let go", code, CLOSE_TIMEOUT)

    def stop(self) -> None:
        """End the writer, dropping what it has not sent (the peer is gone, or the close is
        due); writes from now on raise."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
        self._closed = True
        self._frames.clear()
        self._queued = 0
        self._wake_drained()

    async def _write_queued(self) -> None:
        frames = self._frames
        send = self._send
        loop = asyncio.get_running_loop()
        try:
            while True:
                while frames:
                    frame = frames[0]
                    key = "text" if isinstance(frame, str) else "bytes"
                    await send({"type": "websocket.send", key: frame})
                    frames.popleft()
                    self._queued -= len(frame)
                self._wake_drained()
                self._wakeup = wakeup = loop.create_future()
                await wakeup
        except Exception as exc:  # the socket broke: the next write or drained() raises
            log.debug("send failed: %r", exc)
            self._writer = None
            self._failure = exc
            self.stop()

    def _wake_drained(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

    def _raise_closed(self) -> NoReturn:
        if self._failure is not None:
            raise ConnectionResetError("send failed") from self._failure
        raise ConnectionResetError("connection closed")


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
    encoding: Encoding = JSON,
) -> None:
    """Pump frames from an accepted WebSocket into a new Session until either side closes:
    text frames for JSON, binary frames for Protobuf (the other kind closes with 3506)."""
    size_limit = node.settings.websocket.message_size_limit
    transport = ASGITransport(send)
    session = Session(node, transport, credentials, scope, encoding=encoding)
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
        transport.stop()
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
            hook = node.upgrade_hook
            credentials = await hook(scope) if hook is not None else None
            offered = websocket.scope.get("subprotocols") or []
            query = websocket.scope.get("query_string", b"").decode("latin-1")
            encoding, subprotocol = negotiate(offered, query)
            await websocket.accept(subprotocol=subprotocol)
            await run_session(node, websocket.receive, websocket.send, credentials, scope, encoding)
        finally:
            node.gate.release(ip)

    return handle
