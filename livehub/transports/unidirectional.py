"""Unidirectional connections: what they receive, and uni_websocket's side of the socket.

A unidirectional client (curl, EventSource, a plain WebSocket) sends one connect request,
Centrifugo's ``ConnectRequest`` object itself (``{"token": "..."}``, not a command), and
then only receives. It is an ordinary :class:`~livehub.core.session.Session` made with
``unidirectional=True``: the connect request becomes its one ``connect`` command, so the
token, ``on_connect``, the ``channels`` claim, the personal channel and recovery work as
for any client, and its subscriptions are the server-side ones. What it is sent is the
protocol's ``Push`` objects on their own, not wrapped in ``{"push": ...}``:

* first ``{"connect": {"client": ..., "subs": {...}, "ping": 25, "session": ...}}``;
* then ``{"channel": "news", "pub": {"data": ...}}``, ``join``, ``leave``, ``subscribe``,
  ``unsubscribe``, ``message``, ``refresh`` pushes;
* ``{}`` every ``client.ping_interval`` (no answer expected);
* last, when the server ends it, ``{"disconnect": {"code": 3005, "reason": "connection
  expired"}}`` (not after 3008: a client too slow to read is not written to any more).

A refused connect gets no error reply: the connection ends with the disconnect code
Centrifuge maps the error to (``livehub.protocol.codes.unidirectional_disconnect``).

Fan-out encodes a publication once, wrapped, for every JSON client; a unidirectional
connection's outbox unwraps the messages of each frame it writes (a slice per message).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast
from urllib.parse import parse_qs

import orjson
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from livehub.core.node import Node
from livehub.core.session import Session
from livehub.models import Credentials
from livehub.protocol import codec
from livehub.protocol.codes import CLOSE_MESSAGE_TOO_BIG, Disconnect, Error, disconnect_bad_request
from livehub.protocol.commands import ClientCommand, ConnectParams
from livehub.protocol.encoding import JSON, Encoding
from livehub.protocol.websocket import OP_TEXT, encode_frame
from livehub.transports.asgi import ASGITransport, admission

#: The query parameter carrying the connect request as JSON (uni_sse's GET, uni_websocket).
CONNECT_PARAM = "cf_connect"
_PUSH = '{"push":'


def unwrap(message: str) -> str:
    """A queued message as a unidirectional client gets it: a push without its wrapper."""
    return message[len(_PUSH) : -1] if message.startswith(_PUSH) else message


def connect_request(data: str | bytes) -> ConnectParams:
    """A connect request (``ConnectRequest`` JSON; ``null`` or empty: no parameters), or a
    3501 Disconnect."""
    if not data.strip():
        return ConnectParams()
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise disconnect_bad_request() from None
    if obj is None:
        return ConnectParams()
    if not isinstance(obj, dict):
        raise disconnect_bad_request()
    return ConnectParams.parse(obj)


def query_connect_frame(query: str) -> str | None:
    """The connect request in a ``cf_connect`` query parameter, checked (a 3501 Disconnect
    if it is not one); None without one."""
    if CONNECT_PARAM not in query:
        return None
    values = parse_qs(query).get(CONNECT_PARAM)
    if not values:
        return None
    connect_request(values[0])
    return values[0]


def connect_command(params: ConnectParams) -> ClientCommand:
    return ClientCommand(1, "connect", params)


def _decode_connect(frame: str | bytes) -> list[ClientCommand]:
    return [connect_command(connect_request(frame))]


def _connect_push(command_id: int, method: str, result: dict[str, Any]) -> str:
    return codec.encode_push("", method, result)


def disconnect_push(disconnect: Disconnect) -> str:
    return codec.encode({"disconnect": {"code": disconnect.code, "reason": disconnect.reason}})


def encoding(join: Callable[[list[Any]], str | bytes]) -> Encoding:
    """JSON whose frames ``join`` makes (unwrapping each message) and whose one incoming
    frame is a connect request; replies (to ``connect`` only) go as pushes."""
    return Encoding(
        "json",
        JSON.subprotocol,
        False,
        codec.PING,
        _decode_connect,
        _connect_push,
        JSON.encode_error,
        codec.encode_push,
        join,
    )


# -- uni_websocket: one WebSocket message per push (or newline-joined, join_push_messages)

#: Frames made recently, by message: fan-out hands every recipient the same strings, so
#: each publication is framed once however many connections' batches it is in. Bounded in
#: bytes (emptied when full).
_framed: dict[str, bytes] = {}
_framed_bytes = 0
FRAMED_MAX_BYTES = 4 * 1024 * 1024


def _text_frame(message: str) -> bytes:
    """A message as one WebSocket text frame."""
    global _framed_bytes
    frame = _framed.get(message)
    if frame is None:
        frame = encode_frame(OP_TEXT, unwrap(message).encode())
        if _framed_bytes + len(frame) > FRAMED_MAX_BYTES:
            _framed.clear()
            _framed_bytes = 0
        _framed[message] = frame
        _framed_bytes += len(frame)
    return frame


def _frames(messages: list[str]) -> bytes:
    return b"".join(map(_text_frame, messages))


def _joined(messages: list[str]) -> str:
    return "\n".join(map(unwrap, messages))


FRAMES = encoding(_frames)
JOINED = encoding(_joined)


class WebSocketConnection(Protocol):
    """What uni_websocket needs of the socket-level connection
    (``livehub.transports.websocket.ClientConnection``)."""

    def write(self, frame: str | bytes) -> bool: ...

    def write_raw(self, data: bytes) -> bool: ...

    async def drained(self) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class WebSocketWriter:
    """A uni_websocket session's transport: frames made by its encoding go to the socket as
    they are; the ``disconnect`` push precedes the close frame."""

    __slots__ = ("_connection", "_disconnect_push")

    def __init__(self, connection: WebSocketConnection, disconnect_push: bool) -> None:
        self._connection = connection
        self._disconnect_push = disconnect_push

    def write(self, frame: str | bytes) -> bool:
        connection = self._connection
        return connection.write(frame) if isinstance(frame, str) else connection.write_raw(frame)

    async def drained(self) -> None:
        await self._connection.drained()

    async def close(self, code: int, reason: str) -> None:
        if self._disconnect_push and code not in (3000, 3008):
            push = disconnect_push(Disconnect(code, reason))
            self._connection.write_raw(encode_frame(OP_TEXT, push.encode()))
        await self._connection.close(code, reason)


def websocket_session(
    node: Node,
    connection: WebSocketConnection,
    credentials: Credentials | Error | Disconnect | None,
    scope: dict[str, Any] | None,
) -> Session:
    """The Session of a uni_websocket connection (started)."""
    cfg = node.settings.uni_websocket
    writer = WebSocketWriter(connection, not cfg.disable_disconnect_push)
    session = Session(
        node,
        writer,
        credentials,
        scope,
        encoding=JOINED if cfg.join_push_messages else FRAMES,
        unidirectional=True,
        transport_name="uni_websocket",
    )
    session.start()
    return session


# -- uni_websocket under any ASGI server (the Hub's route; ``livehub serve`` and ``livehub run``
# answer it from the socket instead)


class ASGIWriter:
    """A uni_websocket session's transport over ASGI messages: one ``websocket.send`` per
    message (split from the newline-joined frame), or per frame with ``join_push_messages``."""

    __slots__ = ("_transport", "_split", "_disconnect_push")

    def __init__(self, transport: ASGITransport, split: bool, disconnect_push: bool) -> None:
        self._transport = transport
        self._split = split
        self._disconnect_push = disconnect_push

    def write(self, frame: str | bytes) -> bool:
        if not self._split or not isinstance(frame, str) or "\n" not in frame:
            return self._transport.write(frame)
        ok = True
        for message in frame.split("\n"):
            ok = self._transport.write(message)
        return ok

    async def drained(self) -> None:
        await self._transport.drained()

    async def close(self, code: int, reason: str) -> None:
        if self._disconnect_push and code not in (3000, 3008):
            with contextlib.suppress(ConnectionError):
                self._transport.write(disconnect_push(Disconnect(code, reason)))
        await self._transport.close(code, reason)


async def _deny(websocket: WebSocket, status: int, reason: str) -> None:
    """Refuse before accepting: the HTTP answer where the server can send one, else a close
    before accept (which servers answer with 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(PlainTextResponse(reason + "\n", status_code=status))
    else:
        await websocket.close(code=1008)


def asgi_websocket_handler(node: Node) -> Callable[[WebSocket], Awaitable[None]]:
    """uni_websocket as a FastAPI WebSocket route: the origin and connection limits first,
    then the app's connect hook, then the connect request (``cf_connect`` or the first
    message); later messages are read and dropped."""
    cfg = node.settings.uni_websocket

    async def handle(websocket: WebSocket) -> None:
        ip = websocket.client.host if websocket.client is not None else ""
        refused = admission(node, websocket.headers, ip)
        if refused is not None:
            await _deny(websocket, *refused)
            return
        try:
            scope = cast(dict[str, Any], websocket.scope)
            try:
                first = query_connect_frame(scope.get("query_string", b"").decode("latin-1"))
            except Disconnect:
                await _deny(websocket, 400, "invalid connect request")
                return
            hook = node.upgrade_hook
            credentials = await hook(scope) if hook is not None else None
            await websocket.accept()
            transport = ASGITransport(websocket.send)
            writer = ASGIWriter(transport, not cfg.join_push_messages, not cfg.disable_disconnect_push)
            session = Session(
                node,
                writer,
                credentials,
                scope,
                encoding=JOINED,
                unidirectional=True,
                transport_name="uni_websocket",
            )
            session.start()
            try:
                if first is not None:
                    await session.handle_frame(first)
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        session.outbox.abort()
                        break
                    frame = message.get("text") or message.get("bytes") or ""
                    if first is None and not session.closing:
                        first = frame
                        if len(frame) > cfg.message_size_limit:
                            session.disconnect(Disconnect(CLOSE_MESSAGE_TOO_BIG, "message too big"))
                        else:
                            await session.handle_frame(frame)
                await session.outbox.wait_closed()
            finally:
                session.outbox.abort()
                transport.stop()
                await session.cleanup()
        finally:
            node.gate.release(ip)

    return handle
