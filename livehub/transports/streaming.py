"""A Session over a streaming HTTP response: what HTTP-streaming and SSE (and the
unidirectional transports) share.

The client sends one request; the response stays open and carries every reply and push
of its Session, framed by a :class:`StreamFormat`:

* ``NDJSON``: JSON messages, each followed by ``\\n`` (HTTP-streaming, JSON);
* ``DELIMITED``: Protobuf messages, each prefixed by its varint length (HTTP-streaming, Protobuf);
* ``SSE``: one ``data: <JSON>\\n\\n`` event per message (``text/event-stream``).

The interface, for a front end (``livehub.transports.emulation``):

* :func:`read_body` reads a request body up to a byte limit (None when it is over);
* :func:`serve_session` admits nothing itself (the caller ran ``admission`` and the
  connect hook), answers 200, runs a Session whose outbox writes to the response, feeds
  it ``frame`` (the connect command, usually) and returns once either side ended;
  the session gets a stream session id (sent in the connect reply with the node's id)
  under which ``node.stream_sessions`` finds it (``/emulation``, server API calls naming a
  ``session``); with ``emulated=True`` (bidirectional emulation) further command frames
  reach it through :meth:`StreamConnection.feed`, else (unidirectional transports) none do.

The writer is the ASGI route's (``ASGITransport``: one task, bounded queue, push-back to
the outbox, whose byte limit closes a client that does not read with 3008); this module
only turns its WebSocket messages into chunks of the response body (:class:`StreamSend`).
Closing writes the ``disconnect`` push the SDKs read on these transports (they have no
close code), then ends the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from livehub.core.node import Node
from livehub.core.session import Session
from livehub.models import Credentials
from livehub.protocol.codes import Disconnect, Error
from livehub.protocol.encoding import Encoding
from livehub.transports.asgi import ASGITransport

log = logging.getLogger("livehub.transport.streaming")

Send = Callable[[Any], Awaitable[None]]
Receive = Callable[[], Awaitable[Any]]

#: Command frames waiting to be handled for one streaming session (``/emulation`` requests
#: arriving faster than the session handles them); past it, a request is refused (503).
INBOX_LIMIT = 64
#: After the session asked to close, how long the end of the response may take to go out
#: (a client that does not read would keep it forever) before the request is given up.
CLOSE_TIMEOUT = 2.0
#: Response headers of every stream: no caching, no buffering by proxies (nginx reads
#: ``X-Accel-Buffering``).
STREAM_HEADERS = [
    (b"cache-control", b"private, no-cache, no-store, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
    (b"x-accel-buffering", b"no"),
]


def _last_one(frame: Callable[[str | bytes], bytes]) -> Callable[[str | bytes], bytes]:
    """``frame``, remembering its last answer: fan-out hands the same message object to every
    subscriber whose batch is that one message, so each publication is framed once."""
    last_in: str | bytes = b""
    last_out = frame(b"")

    def framed(data: str | bytes) -> bytes:
        nonlocal last_in, last_out
        if data is not last_in:
            last_out = frame(data)
            last_in = data
        return last_out

    return framed


def _ndjson(frame: str | bytes) -> bytes:
    data = frame.encode() if isinstance(frame, str) else frame
    return data + b"\n"


def _delimited(frame: str | bytes) -> bytes:
    return frame if isinstance(frame, bytes) else frame.encode()  # messages come delimited


def _sse(frame: str | bytes) -> bytes:
    text = frame.decode() if isinstance(frame, bytes) else frame
    # a frame of several JSON messages is newline-separated and JSON holds no raw newline:
    # each message becomes an event of its own
    return ("data: " + text.replace("\n", "\n\ndata: ") + "\n\n").encode()


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """How the messages of a session become the bytes of a response body."""

    name: str
    content_type: bytes
    #: Sent once, right after the headers (SSE: a blank line, so the client sees it open).
    preamble: bytes
    #: One outbox frame (messages joined by the encoding's ``join_frame``) as body bytes.
    frame: Callable[[str | bytes], bytes]


NDJSON = StreamFormat("ndjson", b"application/x-ndjson", b"", _last_one(_ndjson))
DELIMITED = StreamFormat("delimited", b"application/octet-stream", b"", _delimited)
SSE = StreamFormat("sse", b"text/event-stream; charset=utf-8", b"\r\n", _last_one(_sse))


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it grows past ``limit`` bytes (what was read is
    dropped; the rest is not read). A client gone before the end gives what came."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def respond(
    send: Send, status: int, reason: str = "", headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A short plain answer (refusals, 204)."""
    body = (reason + "\n").encode() if reason else b""
    head = list(headers or [])
    if body:
        head.append((b"content-type", b"text/plain; charset=utf-8"))
    head.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class StreamSend:
    """The ``send`` of an ``ASGITransport`` that writes a streaming response body: a
    ``websocket.send`` becomes a framed chunk, ``websocket.close`` the ``disconnect``
    push (but for a slow client, whose socket takes nothing) and the end of the body."""

    __slots__ = ("_send", "_format", "_encoding", "closing", "ended")

    def __init__(self, send: Send, fmt: StreamFormat, encoding: Encoding) -> None:
        self._send = send
        self._format = fmt
        self._encoding = encoding
        #: Done once the close began (the body's end may then wait for a client that does not read).
        self.closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: The body's last chunk went out.
        self.ended = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            frame = message.get("text")
            if frame is None:
                frame = message["bytes"]
            await self._send(
                {"type": "http.response.body", "body": self._format.frame(frame), "more_body": True}
            )
            return
        if not self.closing.done():
            self.closing.set_result(None)
        code = int(message.get("code", 1000))
        body = b""
        if code >= 3000 and code != 3008:
            push = self._encoding.encode_push(
                "", "disconnect", {"code": code, "reason": message.get("reason", "")}
            )
            body = self._format.frame(push)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})
        self.ended = True


class StreamConnection:
    """A streaming session's inbox: command frames handled one at a time, in order, as
    the WebSocket front ends handle theirs."""

    __slots__ = ("session", "accepts_commands", "_inbox", "_task", "_open")

    def __init__(self, session: Session, accepts_commands: bool = True) -> None:
        self.session = session
        #: Bidirectional emulation: ``feed`` takes frames (a unidirectional stream's does not).
        self.accepts_commands = accepts_commands
        self._inbox: deque[str | bytes] = deque()
        self._task: asyncio.Task[None] | None = None
        self._open = True

    def feed(self, frame: str | bytes) -> bool:
        """Queue a frame of commands; False (not queued) when the inbox is full or closed,
        or the stream takes no commands."""
        return self.accepts_commands and self.queue(frame)

    def queue(self, frame: str | bytes) -> bool:
        """``feed`` for the server's own frames (the connect command of the request)."""
        if not self._open or self.session.closing:
            return False
        if len(self._inbox) >= INBOX_LIMIT:
            return False
        self._inbox.append(frame)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._handle())
        return True

    async def _handle(self) -> None:
        session = self.session
        try:
            while self._inbox and not session.closing:
                await session.handle_frame(self._inbox.popleft())
        finally:
            self._inbox.clear()
            self._task = None

    async def stop(self) -> None:
        """Take no more frames; wait for the one being handled (cancelling it midway
        could leave the engine half told)."""
        self._open = False
        self._inbox.clear()
        task = self._task
        if task is not None:
            with contextlib.suppress(Exception):
                await task


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def serve_session(
    node: Node,
    scope: dict[str, Any],
    receive: Receive,
    send: Send,
    *,
    fmt: StreamFormat,
    encoding: Encoding,
    frame: str | bytes,
    credentials: Credentials | Error | Disconnect | None = None,
    emulated: bool = True,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer 200 with a stream and run a Session on it until the client goes away or the
    session closes; ``frame`` (commands, the connect first) is handled first. The request
    body must have been read already. See the module's docstring."""
    headers = [(b"content-type", fmt.content_type), *STREAM_HEADERS, *(extra_headers or [])]
    if scope.get("http_version") == "1.1":
        headers.append((b"connection", b"keep-alive"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if fmt.preamble:
        await send({"type": "http.response.body", "body": fmt.preamble, "more_body": True})
    stream_send = StreamSend(send, fmt, encoding)
    transport = ASGITransport(stream_send)
    session = Session(
        node,
        transport,
        credentials,
        scope,
        encoding=encoding,
        transport_name=str(scope.get("livehub.transport") or "http_stream"),
    )
    connection = StreamConnection(session, accepts_commands=emulated)
    stream_id = session.stream_session = str(uuid.uuid4())
    node.stream_sessions[stream_id] = connection
    gone = asyncio.ensure_future(_client_gone(receive))
    closed: asyncio.Future[None] = asyncio.ensure_future(session.outbox.wait_closed())
    try:
        session.start()
        connection.queue(frame)
        await asyncio.wait((gone, closed, stream_send.closing), return_when=asyncio.FIRST_COMPLETED)
        if not gone.done() and not closed.done():
            # the body's end may wait for a client that does not read: not for long
            await asyncio.wait((gone, closed), timeout=CLOSE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    finally:
        node.stream_sessions.pop(stream_id, None)
        gone.cancel()
        closed.cancel()
        session.outbox.abort()
        transport.stop()
        await connection.stop()
        await session.cleanup()


__all__ = [
    "DELIMITED",
    "NDJSON",
    "SSE",
    "STREAM_HEADERS",
    "StreamConnection",
    "StreamFormat",
    "StreamSend",
    "read_body",
    "respond",
    "serve_session",
]
