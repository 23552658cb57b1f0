"""The client endpoint served straight from the socket: an asyncio Protocol per connection.

uvicorn creates one HTTP protocol object per accepted connection; ``livehub serve``
gives it :func:`client_protocol`, whose connections look at the first request: a
WebSocket upgrade to the client endpoint is answered here (``livehub.protocol.websocket``
does the handshake and the framing); anything else is handed, bytes included, to the
HTTP protocol uvicorn would have used, so the app's routes, its own WebSocket routes and
keep-alive behave as they always do.

Why: behind ASGI, every idle connection keeps a task, its coroutine chain, a receive
queue and the request objects alive, and every message crosses a queue and a context
switch. Here an idle connection is this object, its parser and its Session; frames go
from ``data_received`` to the Session, and the Session's outbox writes to the transport
synchronously (an encoded publication is framed once and the same bytes go to every
recipient). A task exists only while commands are being handled. When the transport's
buffer is over its high-water mark, writes report it, the outbox fills, and a client
that stays behind is closed with 3008 as on every other path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from livehub.node import Node
from livehub.protocol.codes import Disconnect, disconnect_inappropriate_protocol
from livehub.protocol.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    HandshakeError,
    WebSocketError,
    accept_response,
    check_upgrade,
    encode_close,
    encode_frame,
    offered_subprotocols,
    parse_close,
    parse_request,
    reject_response,
)
from livehub.session import Session
from livehub.transport import origin_allowed

log = logging.getLogger("livehub.connection")

#: How long to wait for the client's close frame after sending ours before dropping the socket.
CLOSE_TIMEOUT = 2.0
#: Frames received while commands are still being handled, before reading pauses.
INBOX_LIMIT = 64
#: The longest request head looked at; a longer one is left to uvicorn (which refuses it).
MAX_HEAD = 16384

# The last text frame encoded: fan-out hands the same string to every recipient whose
# batch is that one message, so each publication is encoded and framed once.
_last_text = ""
_last_frame = encode_frame(OP_TEXT, b"")


def _text_frame(text: str) -> bytes:
    global _last_text, _last_frame
    if text is not _last_text:
        _last_frame = encode_frame(OP_TEXT, text.encode())
        _last_text = text
    return _last_frame


class ClientConnection(asyncio.Protocol):
    """One connection of the client endpoint, from the upgrade request to the socket's end.

    Also the Session's transport (``write``/``drained``/``close``). Subclassed by
    :func:`client_protocol` with the node, the endpoint's path and uvicorn's HTTP protocol.
    """

    node: Node
    #: ``GET /connection/websocket``: how a request for this endpoint starts.
    request_start: bytes
    fallback: Callable[..., asyncio.Protocol]

    __slots__ = (
        "_args", "_head", "_transport", "_connections", "_parser", "_session", "_inbox", "_task",
        "_reading_paused", "_write_paused", "_drained", "_close_sent", "_close_received", "_lost",
        "_close_timer",
    )  # fmt: skip

    def __init__(self, config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> None:
        # uvicorn's arguments, kept only until the request is known (for the fallback protocol)
        self._args: tuple[Any, Any, Any, Any] | None = (config, server_state, app_state, _loop)
        self._head = b""
        self._transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self._connections: set[Any] = server_state.connections
        self._parser: FrameParser | None = None
        self._session: Session | None = None
        self._inbox: list[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._close_sent = False
        self._close_received = False
        self._lost = False
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._parser is not None:
            try:
                messages = self._parser.feed(data)
            except WebSocketError as exc:
                log.info("client broke the WebSocket protocol: %s", exc.reason)
                self._protocol_error(exc.code, exc.reason)
                return
            for opcode, payload in messages:
                self._on_message(opcode, payload)
        elif self._args is not None:
            self._on_request(self._head + data if self._head else data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._connections.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._wake_writer()
        session = self._session
        if session is not None:
            session.outbox.abort()
            self._inbox = None
            if self._task is None:  # else the handler cleans up once its command is done
                self._task = asyncio.get_running_loop().create_task(session.cleanup())

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    def shutdown(self) -> None:
        """uvicorn is stopping (clients were asked to reconnect before): close now."""
        if self._transport.is_closing():
            return
        if not self._close_sent:
            self._close_sent = True
            self._transport.write(encode_close(1012, "service restart"))
        self._transport.close()

    # -- the opening handshake

    def _on_request(self, head: bytes) -> None:
        """Answer an upgrade to the client endpoint; hand anything else to uvicorn."""
        start = self.request_start
        if not (head[: len(start)] == start and head[len(start) : len(start) + 1] in (b" ", b"?")):
            if len(head) <= len(start) and start.startswith(head):
                self._head = head  # too short to tell yet
            else:
                self._hand_over(head)
            return
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_HEAD:
                self._hand_over(head)
            else:
                self._head = head
            return
        try:
            request = parse_request(head[:end])
        except HandshakeError:
            self._hand_over(head)
            return
        if "upgrade" not in request.headers or self.node.authenticates_at_upgrade:
            # a plain GET of the endpoint's URL, or the app's on_connect must see the request
            self._hand_over(head)
            return
        self._args = None
        self._head = b""
        try:
            key = check_upgrade(request)
            if not origin_allowed(request.headers, self.node.settings.client.allowed_origins):
                log.info("rejected connection from origin %r", request.headers.get("origin"))
                raise HandshakeError(403, "origin not allowed")
        except HandshakeError as exc:
            self._transport.write(reject_response(exc))
            self._transport.close()
            return
        subprotocol = "centrifuge-json" if "centrifuge-json" in offered_subprotocols(request) else None
        self._transport.write(accept_response(key, subprotocol))
        self._connections.add(self)
        self._parser = FrameParser(self.node.settings.websocket.message_size_limit)
        self._session = Session(self.node, self)
        self._session.start()
        if len(head) > end + 4:  # frames sent right behind the request
            self.data_received(head[end + 4 :])

    def _hand_over(self, data: bytes) -> None:
        """Not the client endpoint: uvicorn's HTTP protocol takes the connection as it is."""
        assert self._args is not None
        config, server_state, app_state, loop = self._args
        self._args = None
        self._head = b""
        protocol = self.fallback(config=config, server_state=server_state, app_state=app_state, _loop=loop)
        self._transport.set_protocol(protocol)
        protocol.connection_made(self._transport)
        protocol.data_received(data)

    # -- incoming messages

    def _on_message(self, opcode: int, payload: bytes) -> None:
        session = self._session
        assert session is not None
        if opcode == OP_TEXT:
            if session.closing or self._lost:
                return
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                session.disconnect(Disconnect(1007, "text frame is not UTF-8"))
                return
            if self._inbox is None:
                self._inbox = [text]
            else:
                self._inbox.append(text)
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._handle_inbox(session))
            elif len(self._inbox) >= INBOX_LIMIT and not self._reading_paused:
                self._reading_paused = True
                self._transport.pause_reading()
        elif opcode == OP_BINARY:
            session.disconnect(disconnect_inappropriate_protocol())
        elif opcode == OP_PING:
            if not self._close_sent:
                self._transport.write(encode_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self._close_received = True
            try:
                code, _reason = parse_close(payload)
            except WebSocketError as exc:
                self._protocol_error(exc.code, exc.reason)
                return
            if not self._close_sent:  # the client closes: answer with its code and stop writing
                self._close_sent = True
                self._transport.write(encode_close(code))
            session.outbox.abort()
            self._transport.close()

    async def _handle_inbox(self, session: Session) -> None:
        """Handle the received frames in order, one at a time; ends when none is left."""
        try:
            while self._inbox and not session.closing:
                text = self._inbox.pop(0)
                if self._reading_paused and len(self._inbox) < INBOX_LIMIT // 2:
                    self._reading_paused = False
                    if not self._lost:
                        self._transport.resume_reading()
                await session.handle_frame(text)
        finally:
            self._task = None
            if self._lost:
                await session.cleanup()

    def _protocol_error(self, code: int, reason: str) -> None:
        """Close with the WebSocket close code after what is queued (the frames stop here)."""
        self._parser = None
        if self._session is not None:
            self._session.disconnect(Disconnect(code, reason))

    # -- the Session's transport

    def write(self, frame: str) -> bool:
        if not (self._close_sent or self._lost):
            self._transport.write(_text_frame(frame))
        return not self._write_paused

    async def drained(self) -> None:
        if self._write_paused and not self._lost:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self._lost:  # a paused transport is never resumed once lost: do not wait on it
            raise ConnectionResetError("connection lost")

    async def close(self, code: int, reason: str) -> None:
        if self._close_sent or self._lost:
            return
        self._close_sent = True
        self._transport.write(encode_close(code, reason))
        if self._close_received:
            self._transport.close()
        else:
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._transport.abort)

    def _wake_writer(self) -> None:
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None


def client_protocol(node: Node) -> type[ClientConnection]:
    """The HTTP protocol class to give uvicorn (``http=``) for ``node``'s client endpoint;
    every other request goes to the class uvicorn would have used."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    path = node.settings.websocket.handler_prefix
    attrs = {
        "__slots__": (),
        "node": node,
        "request_start": b"GET " + path.encode(),
        "fallback": AutoHTTPProtocol,
    }
    return type("ClientConnection", (ClientConnection,), attrs)
