"""The client endpoint served straight from the socket: an asyncio Protocol per connection.

uvicorn creates one HTTP protocol object per accepted connection. Given :func:`http_protocol`
(``uvicorn app:app --http livehub.transports.websocket:http_protocol``, ``livehub run``) or
:func:`client_protocol` (``livehub serve``), a connection looks at its first request: a
WebSocket upgrade to the client endpoint of the app's hub is answered here
(``livehub.protocol.websocket`` does the handshake and the framing); anything else is
handed, bytes included, to the HTTP protocol uvicorn would have used, so the app's routes,
its own WebSocket routes and keep-alive behave as they always do. An app without a hub
gets uvicorn's protocol for every connection.

Why: behind ASGI, every idle connection keeps a task, its coroutine chain, a receive
queue and the request objects alive, and every message crosses a queue and a context
switch. Here an idle connection is this object, its parser and its Session; frames go
from ``data_received`` to the Session, and the Session's outbox writes to the transport
synchronously (an encoded publication is framed once and the same bytes go to every
recipient). A task exists only while commands are being handled or the app's connect
hook decides who the client is.

What a peer cannot do: make the server buffer without bound. Nothing more is read from a
peer whose socket does not take what is written to it (a read while the transport's buffer
is over its high-water mark pauses reading until it drains), pings in one read are answered by one
pong (RFC 6455 allows answering the latest only), commands waiting to be handled are
bounded (``INBOX_LIMIT``), and an upgrade must be complete within
``websocket.handshake_timeout``. A client that stays behind on what it is sent is closed
with 3008 by its outbox, as on every other path.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import weakref
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote

from livehub.core.node import ConnectHook, Node
from livehub.core.session import Session
from livehub.models import Credentials
from livehub.protocol.codes import (
    Disconnect,
    Error,
    disconnect_inappropriate_protocol,
    disconnect_no_pong,
    disconnect_shutdown,
)
from livehub.protocol.encoding import JSON, Encoding, negotiate
from livehub.protocol.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    HandshakeError,
    Request,
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
from livehub.transports import unidirectional
from livehub.transports.asgi import admission

log = logging.getLogger("livehub.connection")

#: How long to wait for the client's close frame after sending ours before dropping the socket.
CLOSE_TIMEOUT = 2.0
#: When the server stops: how long a client asked to reconnect (3001) may take to be told.
SHUTDOWN_GRACE = 5.0
#: Frames received while commands are still being handled, before reading pauses.
INBOX_LIMIT = 64
#: Closed with this code (too many requests: a flood), a client is not read any more.
CLOSE_FLOODING = 3013
#: The longest request head looked at; a longer one is left to uvicorn (which refuses it).
MAX_HEAD = 16384
#: uni_websocket's WebSocket pings when ``client.ping_interval`` / ``pong_timeout`` are 0.
FRAME_PING_INTERVAL = 25.0
FRAME_PONG_TIMEOUT = 8.0
_PING_FRAME = encode_frame(OP_PING, b"")

# Why reading is paused (bits of ``ClientConnection._paused``); it resumes when none is left.
_HOOK = 1  # the app's connect hook is deciding: nothing is read before the answer
_INBOX = 2  # INBOX_LIMIT frames wait to be handled
_WRITE = 4  # the peer sent while it takes nothing we write: reading it would only pile up replies
_FLOODED = 16  # closed for flooding (3013): never read again
_READING = _HOOK | _INBOX | _WRITE | _FLOODED
# Not a reason to pause reading by itself (a subscriber whose buffer fills up sends nothing, and
# pausing it would cost two system calls per fill), but what makes the next read pause it.
_BLOCKED = 8  # the transport's buffer is over its high-water mark


class State(enum.Enum):
    """Where a connection is in its life; each step only goes forward."""

    #: Reading the upgrade request, or waiting for the app's connect hook.
    HANDSHAKE = "handshake"
    #: Upgraded: frames both ways.
    OPEN = "open"
    #: Our close frame (or an HTTP refusal) is out: nothing more is written.
    CLOSING = "closing"
    #: The socket is gone.
    CLOSED = "closed"


# The states as module globals: an Enum member looked up on its class costs ~8 times as much
# (Python 3.11), and ``write`` checks the state for every delivery.
_HANDSHAKE, _OPEN, _CLOSING, _CLOSED = State.HANDSHAKE, State.OPEN, State.CLOSING, State.CLOSED
# uni_websocket connections (``ClientConnection._uni``): waiting for the connect request; past it.
_UNI_WAITING, _UNI_DONE = 1, 2

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


# Likewise for the binary frames of Protobuf connections.
_last_binary = b""
_last_binary_frame = encode_frame(OP_BINARY, b"")


def _binary_frame(data: bytes) -> bytes:
    global _last_binary, _last_binary_frame
    if data is not _last_binary:
        _last_binary_frame = encode_frame(OP_BINARY, data)
        _last_binary = data
    return _last_binary_frame


def _fallback_protocol() -> Callable[..., asyncio.Protocol]:
    """The HTTP protocol uvicorn would have used (httptools when installed, else h11)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return AutoHTTPProtocol


class ClientConnection(asyncio.Protocol):
    """One connection, from its first request to the socket's end; the client endpoint's
    connections are also their Session's transport (``write``/``drained``/``close``)."""

    __slots__ = (
        "_node", "_args", "_head", "_transport", "_connections", "_state", "_paused", "_parser",
        "_session", "_inbox", "_task", "_drained", "_timer", "_pong", "_admitted", "_uni", "_ping_timer",
    )  # fmt: skip

    def __init__(self, node: Node, config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> None:
        self._node = node
        # uvicorn's arguments, kept only until the request is known (for the fallback protocol)
        self._args: tuple[Any, Any, Any, Any] | None = (config, server_state, app_state, _loop)
        self._head = b""
        self._transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self._connections: set[Any] = server_state.connections
        self._state = _HANDSHAKE
        self._paused = 0
        self._parser: FrameParser | None = None
        self._session: Session | None = None
        self._inbox: list[str | bytes] | None = None
        #: The connect hook's task during the handshake; then the task handling commands.
        self._task: asyncio.Task[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        #: The handshake's deadline, then (once closing) the wait for the client's close frame.
        self._timer: asyncio.TimerHandle | None = None
        #: A pong owed while the peer does not take writes (the latest ping's payload).
        self._pong: bytes | None = None
        #: The client address the node's gate counted this connection under, until it ends.
        self._admitted: str | None = None
        #: uni_websocket (``livehub.transports.unidirectional``): _UNI_WAITING for its connect
        #: request, _UNI_DONE once it has it (what it sends later is dropped); 0: bidirectional.
        self._uni = 0
        #: uni_websocket only: the next WebSocket ping, or the deadline of its pong.
        self._ping_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        timeout = self._node.settings.websocket.handshake_timeout
        if timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        if self._state is _HANDSHAKE:
            if self._task is None:
                self._on_request(self._head + data if self._head else data)
            elif len(self._head) + len(data) <= MAX_HEAD:  # read before the pause took effect
                self._head += data
            else:
                self._transport.abort()
            return
        parser = self._parser
        if parser is None:  # refused, or the peer broke the protocol: nothing more is read
            return
        try:
            messages = parser.feed(data)
        except WebSocketError as exc:
            log.info("client broke the WebSocket protocol: %s", exc.reason)
            self._protocol_error(exc.code, exc.reason)
            return
        if self._paused & _BLOCKED:  # a peer that sends but does not read: this read is the last
            self._pause(_WRITE)
        pong = None
        for opcode, payload in messages:
            if opcode == OP_PING:
                pong = payload  # one pong for the pings of one read: the latest's
            else:
                self._on_message(opcode, payload)
        if pong is not None and self._state is _OPEN:
            if self._paused & _BLOCKED:
                self._pong = pong  # sent once the peer reads again
            else:
                self._transport.write(encode_frame(OP_PONG, pong))

    def connection_lost(self, exc: Exception | None) -> None:
        previous, self._state = self._state, _CLOSED
        self._connections.discard(self)
        self._cancel_timer()
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if self._admitted is not None:
            self._node.gate.release(self._admitted)
            self._admitted = None
        if previous is _HANDSHAKE:
            if self._task is not None:  # the connect hook's answer is no longer needed
                self._task.cancel()
                self._task = None
            return
        self._wake_writer()
        session = self._session
        if session is not None:
            session.outbox.abort()
            self._inbox = None
            if self._task is None:  # else the handler cleans up once its command is done
                self._task = asyncio.get_running_loop().create_task(session.cleanup())

    def pause_writing(self) -> None:
        self._paused |= _BLOCKED

    def resume_writing(self) -> None:
        self._paused &= ~_BLOCKED
        self._resume(_WRITE)
        if self._pong is not None:
            pong, self._pong = self._pong, None
            if self._state is _OPEN:
                self._transport.write(encode_frame(OP_PONG, pong))
        self._wake_writer()

    def shutdown(self) -> None:
        """uvicorn is stopping: ask the client to reconnect (3001) after what is queued for
        it, and drop it if that has not gone out within ``SHUTDOWN_GRACE``."""
        session = self._session
        if self._state is not _OPEN or session is None:
            return
        if session.closing:  # asked already (``DrainingServer``) and still not out: stuck
            self._transport.abort()
            return
        session.disconnect(disconnect_shutdown())
        self._set_timer(SHUTDOWN_GRACE, self._transport.abort)

    def _pause(self, reason: int) -> None:
        if not self._paused & _READING and self._state is not _CLOSED:
            self._transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        was = self._paused & _READING
        self._paused &= ~reason
        if was and not self._paused & _READING and self._state is not _CLOSED:
            self._transport.resume_reading()

    def _set_timer(self, delay: float, callback: Callable[[], object]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the opening handshake

    def _on_request(self, head: bytes) -> None:
        """Answer an upgrade to the client endpoint (or uni_websocket's, when enabled); hand
        anything else to uvicorn."""
        settings = self._node.settings
        starts = [b"GET " + settings.websocket.handler_prefix.encode()]
        if settings.uni_websocket.enabled:
            starts.append(b"GET " + settings.uni_websocket.handler_prefix.encode())
        for uni, start in enumerate(starts):
            if head[: len(start)] == start and head[len(start) : len(start) + 1] in (b" ", b"?"):
                self._uni = _UNI_WAITING if uni else 0
                break
        else:
            if any(len(head) <= len(start) and start.startswith(head) for start in starts):
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
        node = self._node
        hook = node.upgrade_hook
        if "upgrade" not in request.headers:
            # a plain GET of the endpoint's URL; or an app whose on_connect runs only in its
            # route (until the Hub sets ``connect_hook``)
            self._hand_over(head)
            return
        self._head = head[end + 4 :]  # frames sent right behind the request
        try:
            key = check_upgrade(request)
        except HandshakeError as exc:
            self._refuse(exc)
            return
        peer = self._transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else ""
        refused = admission(node, request.headers, ip)  # before any app code
        if refused is not None:
            self._refuse(HandshakeError(*refused))
            return
        self._admitted = ip
        offered = offered_subprotocols(request)
        query = request.target.partition("?")[2]
        encoding, subprotocol = negotiate(offered, query)
        if self._uni:  # JSON only, as in Centrifugo
            subprotocol = subprotocol if subprotocol == JSON.subprotocol else None
            try:  # a connect request in the URL (Centrifugo's cf_connect) is the first message
                frame = unidirectional.query_connect_frame(query)
            except Disconnect:
                self._refuse(HandshakeError(400, "invalid connect request"))
                return
            if frame is not None:
                self._uni = _UNI_DONE
                self._inbox = [frame]  # handled once the session exists (_accept)
        if hook is None:  # the handshake's scope if proxies may forward its headers, or the hook awaits
            wanted = node.proxy_hooks is not None or node.connect_hook is not None
            scope = self._scope(request, offered) if wanted else None
            self._accept(key, subprotocol, encoding, None, scope)
            return
        self._pause(_HOOK)
        scope = self._scope(request, offered)
        self._task = asyncio.get_running_loop().create_task(
            self._resolve(hook, scope, key, subprotocol, encoding)
        )

    async def _resolve(
        self, hook: ConnectHook, scope: dict[str, Any], key: str, subprotocol: str | None, encoding: Encoding
    ) -> None:
        """Ask the app's connect hook who the client is, then upgrade (a refusal by Error or
        Disconnect is the reply to the client's ``connect``, as the protocol says it)."""
        try:
            credentials = await hook(scope)
        except (Error, Disconnect) as exc:
            credentials = exc
        except Exception:
            log.exception("connect hook failed for %s", scope.get("client"))
            self._task = None
            if self._state is _HANDSHAKE:
                self._refuse(HandshakeError(500, "connect hook failed"))
            return
        self._task = None
        if self._state is _HANDSHAKE:
            self._accept(key, subprotocol, encoding, credentials, scope)

    def _accept(
        self,
        key: str,
        subprotocol: str | None,
        encoding: Encoding,
        credentials: Credentials | Error | Disconnect | None,
        scope: dict[str, Any] | None,
    ) -> None:
        self._cancel_timer()
        self._args = None
        self._transport.write(accept_response(key, subprotocol))
        self._state = _OPEN
        self._connections.add(self)
        settings = self._node.settings
        if self._uni:
            self._parser = FrameParser(settings.uni_websocket.message_size_limit)
            self._session = unidirectional.websocket_session(self._node, self, credentials, scope)
            self._frame_ping_in(settings.client.ping_interval or FRAME_PING_INTERVAL)
            if self._inbox:  # the connect request came in the URL
                self._task = asyncio.get_running_loop().create_task(self._handle_inbox(self._session))
        else:
            self._parser = FrameParser(settings.websocket.message_size_limit)
            self._session = Session(self._node, self, credentials, scope, encoding=encoding)
            self._session.start()
        rest, self._head = self._head, b""
        self._resume(_HOOK)
        if rest:
            self.data_received(rest)

    def _refuse(self, error: HandshakeError) -> None:
        self._cancel_timer()
        self._args = None
        self._head = b""
        self._state = _CLOSING
        self._transport.write(reject_response(error))
        self._transport.close()

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._state is not _HANDSHAKE:
            return
        if self._task is not None:
            log.warning("connect hook did not answer in time: refusing the connection")
            self._task.cancel()
            self._task = None
            self._refuse(HandshakeError(503, "connect hook timed out"))
        else:
            log.info("upgrade request not complete in time: dropping the connection")
            self._refuse(HandshakeError(408, "request not complete in time"))

    def _scope(self, request: Request, subprotocols: list[str]) -> dict[str, Any]:
        """The handshake as an ASGI ``websocket`` scope, for the app's connect hook."""
        transport = self._transport
        server = transport.get_extra_info("sockname")
        client = transport.get_extra_info("peername")
        path, _, query = request.target.partition("?")
        return {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if transport.get_extra_info("sslcontext") else "ws",
            "server": tuple(server[:2]) if isinstance(server, tuple) else None,
            "client": tuple(client[:2]) if isinstance(client, tuple) else None,
            "root_path": "",
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": list(request.raw_headers),
            "subprotocols": subprotocols,
            "state": {},
        }

    def _hand_over(self, data: bytes) -> None:
        """Not the client endpoint: uvicorn's HTTP protocol takes the connection as it is."""
        assert self._args is not None
        self._cancel_timer()
        config, server_state, app_state, loop = self._args
        self._args = None
        self._head = b""
        self._state = _CLOSED  # for this object: the connection is no longer its
        protocol = _fallback_protocol()(
            config=config, server_state=server_state, app_state=app_state, _loop=loop
        )
        self._transport.set_protocol(protocol)
        protocol.connection_made(self._transport)
        protocol.data_received(data)

    # -- incoming messages

    def _on_message(self, opcode: int, payload: bytes) -> None:
        session = self._session
        assert session is not None
        if opcode == OP_TEXT or opcode == OP_BINARY:
            if session.closing or self._state is not _OPEN:
                return
            if self._uni:  # its first message is its connect request; the rest is not read
                if self._uni == _UNI_DONE:
                    return
                self._uni = _UNI_DONE
            if (opcode == OP_BINARY) is not session.encoding.binary:  # JSON is text, Protobuf binary
                session.disconnect(disconnect_inappropriate_protocol())
                return
            frame: str | bytes = payload
            if opcode == OP_TEXT:
                try:
                    frame = payload.decode()
                except UnicodeDecodeError:
                    session.disconnect(Disconnect(1007, "text frame is not UTF-8"))
                    return
            if self._inbox is None:
                self._inbox = [frame]
            else:
                self._inbox.append(frame)
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._handle_inbox(session))
            elif len(self._inbox) >= INBOX_LIMIT:
                self._pause(_INBOX)
        elif opcode == OP_CLOSE:
            try:
                code, _reason = parse_close(payload)
            except WebSocketError as exc:
                self._protocol_error(exc.code, exc.reason)
                return
            if self._state is _OPEN:  # the client closes: answer with its code, stop writing
                self._state = _CLOSING
                self._transport.write(encode_close(code))
            session.outbox.abort()
            self._transport.close()
        elif self._uni:  # OP_PONG: the peer is there; its next ping in ping_interval
            self._frame_ping_in(self._node.settings.client.ping_interval or FRAME_PING_INTERVAL)
        # a bidirectional client's OP_PONG: nothing to do (its protocol pings are messages)

    # -- uni_websocket's frame pings

    def _frame_ping_in(self, delay: float) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        self._ping_timer = asyncio.get_running_loop().call_later(delay, self._frame_ping)

    def _frame_ping(self) -> None:
        """A WebSocket ping to a uni_websocket client, which answers no protocol ping: no
        pong within ``client.pong_timeout`` closes it with 3012, as Centrifugo does."""
        self._ping_timer = None
        if self._state is not _OPEN or self._session is None:
            return
        self._transport.write(_PING_FRAME)
        timeout = self._node.settings.client.pong_timeout or FRAME_PONG_TIMEOUT
        self._ping_timer = asyncio.get_running_loop().call_later(timeout, self._no_frame_pong)

    def _no_frame_pong(self) -> None:
        self._ping_timer = None
        if self._session is not None and self._state is _OPEN:
            self._session.disconnect(disconnect_no_pong())

    async def _handle_inbox(self, session: Session) -> None:
        """Handle the received frames in order, one at a time; ends when none is left."""
        try:
            while self._inbox and not session.closing:
                frame = self._inbox.pop(0)
                if self._paused & _INBOX and len(self._inbox) < INBOX_LIMIT // 2:
                    self._resume(_INBOX)
                await session.handle_frame(frame)
        finally:
            self._task = None
            if self._state is _CLOSED:
                await session.cleanup()

    def _protocol_error(self, code: int, reason: str) -> None:
        """Close with the WebSocket close code after what is queued (the frames stop here)."""
        self._parser = None
        if self._session is not None:
            self._session.disconnect(Disconnect(code, reason))

    # -- the Session's transport

    def write(self, frame: str | bytes) -> bool:
        if self._state is _OPEN:
            self._transport.write(_text_frame(frame) if isinstance(frame, str) else _binary_frame(frame))
        return not self._paused & _BLOCKED

    def write_raw(self, data: bytes) -> bool:
        """Write WebSocket frames made already (uni_websocket's: one per message)."""
        if self._state is _OPEN:
            self._transport.write(data)
        return not self._paused & _BLOCKED

    async def drained(self) -> None:
        if self._paused & _BLOCKED and self._state is not _CLOSED:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self._state is _CLOSED:  # a paused transport is never resumed once lost
            raise ConnectionResetError("connection lost")

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame (once: the only write besides text frames and pongs, all of
        them bounded) and give the client ``CLOSE_TIMEOUT`` to answer it."""
        if self._state is not _OPEN:
            return
        self._state = _CLOSING
        self._transport.write(encode_close(code, reason))
        if code == CLOSE_FLOODING:
            # a flooder is not read any more: what it keeps sending would be read and unmasked
            # for nothing. Its socket stays open until CLOSE_TIMEOUT, so it cannot reconnect
            # (and flood again) sooner unless it drops the connection itself.
            self._parser = None
            self._pause(_FLOODED)
        self._set_timer(CLOSE_TIMEOUT, self._transport.abort)

    def limit_send_buffer(self, size: int) -> None:
        """Keep at most about ``size`` bytes in the kernel's send buffer (its autotuning
        off) and in the transport's, so that a slow client's socket pushes back before a
        backlog builds there (a conflating channel's subscriber: ``Outbox.put_latest``)."""
        if self._transport is None:
            return
        self._transport.set_write_buffer_limits(high=size)
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def write_buffer_size(self) -> int:
        """Bytes written to this connection that its socket has not taken yet."""
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    def _wake_writer(self) -> None:
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None


# -- giving uvicorn the protocol


def client_protocol(node: Node) -> Callable[..., asyncio.Protocol]:
    """What to give uvicorn as ``http=`` to serve ``node``'s client endpoint (``livehub
    serve``); every other request goes to the protocol uvicorn would have used."""

    def create(config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> asyncio.Protocol:
        return ClientConnection(node, config, server_state, app_state, _loop)

    return create


#: ``http_protocol`` as an import string: uvicorn's ``--http``, gunicorn's worker, ``livehub run``.
HTTP_PROTOCOL = f"{__name__}:http_protocol"


def http_protocol(config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> asyncio.Protocol:
    """uvicorn's ``--http`` for any app: the client endpoint of the app's hub (found by
    :func:`app_node` at the first connection) from the socket, everything else through
    uvicorn's own protocol::

        uvicorn module:app --http livehub.transports.websocket:http_protocol
    """
    node = config_node(config)
    if node is None:
        return _fallback_protocol()(
            config=config, server_state=server_state, app_state=app_state, _loop=_loop
        )
    return ClientConnection(node, config, server_state, app_state, _loop)


#: The hub found for each running uvicorn config (one per server; several in tests).
_nodes: weakref.WeakKeyDictionary[Any, Node] = weakref.WeakKeyDictionary()


def config_node(config: Any) -> Node | None:
    """The node of the hub of the app a uvicorn config serves, once the app has started."""
    node = _nodes.get(config)
    if node is None:
        node = app_node(getattr(config, "loaded_app", None))
        if node is not None:
            _nodes[config] = node
    return node


def app_node(app: Any) -> Node | None:
    """The node of an app's hub: ``app.state.livehub_node``, which ``Hub``'s lifespan sets,
    looked for through the ``.app`` chain of ASGI middleware wrapping the app."""
    for _ in range(32):  # a chain of wrappers, bounded
        if app is None:
            return None
        state = getattr(app, "state", None)
        node = getattr(state, "livehub_node", None) if state is not None else None
        if isinstance(node, Node):
            return node
        app = getattr(app, "app", None)
    return None
