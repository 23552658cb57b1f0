"""uni_sse and uni_http_stream: a unidirectional connection as one streaming HTTP response.

``GET /connection/uni_sse?cf_connect={"token":"..."}`` (an EventSource; or ``POST`` with the
connect request as the body) answers ``text/event-stream``, one ``data: <json>`` event per
message; ``POST /connection/uni_http_stream`` with the connect request as the body answers
one JSON message per line (``curl -N -d '{"token":"..."}' .../connection/uni_http_stream``).
What the messages are: ``livehub.transports.unidirectional``.

The routes are the Hub's (``hub.router``), so they serve ``livehub serve``, ``livehub run``
and an app under any ASGI server alike. Before any app code runs, the origin and the
node's connection limits are checked (``admission``, as for WebSocket upgrades); a body
over ``max_request_body_size`` is answered 413 without being read whole, a malformed
connect request 400. The app's ``on_connect`` sees the request (its headers, cookies, query).

A client that does not read is bounded like any other: the response writer holds at most
``MAX_QUEUED`` bytes beyond the frame being sent, the session's outbox closes the
connection as slow (3008) past ``client.queue_max_size``, and the end of the response is
given ``CLOSE_TIMEOUT`` to go out before the connection is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NoReturn

from fastapi import APIRouter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from livehub.core.node import Node
from livehub.core.session import Session
from livehub.models import Credentials
from livehub.protocol.codes import Disconnect, Error
from livehub.protocol.commands import ConnectParams
from livehub.settings import UniStreamSettings
from livehub.transports import unidirectional
from livehub.transports.asgi import admission, origin_allowed

log = logging.getLogger("livehub.transport")

#: Bytes the response writer may hold beyond the frame being sent before it reports
#: push-back (the outbox keeps the rest, up to ``client.queue_max_size``).
MAX_QUEUED = 64 * 1024
#: How long the end of a response may take to go out (a client not reading) before the
#: connection is dropped.
CLOSE_TIMEOUT = 2.0

_NO_CACHE = "private, no-cache, no-store, must-revalidate, max-age=0"


def _sse_frame(messages: list[str]) -> str:
    return "".join(f"data: {unidirectional.unwrap(m)}\n\n" for m in messages)


def _stream_frame(messages: list[str]) -> str:
    return "".join(unidirectional.unwrap(m) + "\n" for m in messages)


SSE = unidirectional.encoding(_sse_frame)
STREAM = unidirectional.encoding(_stream_frame)


class ResponseWriter:
    """A session's transport over a streaming HTTP response: one writer task sends the
    queued frames as body chunks, in order (the design of ``livehub.transports.asgi``'s
    ``ASGITransport``, for ``http.response.body`` messages)."""

    __slots__ = ("_send", "_frames", "_queued", "_wakeup", "_idle", "_closed", "_failure", "_writer", "_sse")

    def __init__(self, send: Send, sse: bool) -> None:
        self._send = send
        self._sse = sse
        self._frames: deque[bytes] = deque()
        self._queued = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._closed = False
        self._failure: Exception | None = None
        self._writer: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._write_queued())

    def write(self, frame: str | bytes) -> bool:
        if self._closed:
            self._raise_closed()
        data = frame.encode() if isinstance(frame, str) else frame
        self._frames.append(data)
        self._queued += len(data)
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        return self._queued <= MAX_QUEUED

    async def drained(self) -> None:
        if self._frames and not self._closed:
            self._idle = idle = asyncio.get_running_loop().create_future()
            await idle
        if self._closed:
            self._raise_closed()

    async def close(self, code: int, reason: str) -> None:
        """What is queued, the ``disconnect`` push (not for a slow client: nothing more is
        sent to it), then the end of the response."""
        try:  # bounded: a client that stopped reading takes nothing more
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if code != 3008 and not self._closed:
                    if code != 3000:
                        push = unidirectional.disconnect_push(Disconnect(code, reason))
                        self.write(_sse_frame([push]) if self._sse else _stream_frame([push]))
                    await self.drained()
        except (TimeoutError, ConnectionError):
            pass
        self.stop()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            log.info("response end not taken within %gs: dropping the connection", CLOSE_TIMEOUT)

    def stop(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
        self._closed = True
        self._frames.clear()
        self._queued = 0
        self._wake_idle()

    async def _write_queued(self) -> None:
        frames, send = self._frames, self._send
        loop = asyncio.get_running_loop()
        try:
            while True:
                while frames:
                    frame = frames[0]
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                    frames.popleft()
                    self._queued -= len(frame)
                self._wake_idle()
                self._wakeup = wakeup = loop.create_future()
                await wakeup
        except Exception as exc:  # the client went away: the next write or drained() raises
            log.debug("send failed: %r", exc)
            self._writer = None
            self._failure = exc
            self.stop()

    def _wake_idle(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

    def _raise_closed(self) -> NoReturn:
        if self._failure is not None:
            raise ConnectionResetError("send failed") from self._failure
        raise ConnectionResetError("connection closed")


class StreamResponse(Response):
    """The streaming response of one unidirectional connection: its Session from the
    ``connect`` to the end of either side."""

    def __init__(
        self,
        node: Node,
        params: ConnectParams,
        credentials: Credentials | Error | Disconnect | None,
        transport_name: str,
        headers: dict[str, str],
        release: Callable[[], None],
    ) -> None:
        # no Content-Length: the body is the stream (Response.__init__ would set one)
        self.status_code = 200
        self.background = None
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self._node = node
        self._params = params
        self._credentials = credentials
        self._transport_name = transport_name
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            sse = self._transport_name == "uni_sse"
            if sse:  # as Centrifugo: a first line, so that proxies and browsers open the stream
                await send({"type": "http.response.body", "body": b"\r\n", "more_body": True})
            writer = ResponseWriter(send, sse)
            session = Session(
                self._node,
                writer,
                self._credentials,
                dict(scope),
                encoding=SSE if sse else STREAM,
                unidirectional=True,
                transport_name=self._transport_name,
            )
            await _run(session, writer, receive, self._params)
        finally:
            self._release()


async def _run(session: Session, writer: ResponseWriter, receive: Receive, params: ConnectParams) -> None:
    """Connect, then stream until the session closes or the client goes away."""

    async def client_gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        session.outbox.abort()

    watcher = asyncio.get_running_loop().create_task(client_gone())
    try:
        session.start()
        await session.handle_command(unidirectional.connect_command(params))
        await session.outbox.wait_closed()
    finally:
        watcher.cancel()
        session.outbox.abort()
        writer.stop()
        await session.cleanup()


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None if it is over ``limit`` bytes (not read beyond it)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _cors(node: Node, request: Request) -> dict[str, str]:
    """CORS answer headers for an allowed browser origin (none without an Origin)."""
    origin = request.headers.get("origin")
    if not origin or not origin_allowed(request.headers, node.settings.client.allowed_origins):
        return {}
    headers = {"access-control-allow-origin": origin, "access-control-allow-credentials": "true"}
    asked = request.headers.get("access-control-request-headers", "")
    if asked and asked != "null":
        headers["access-control-allow-headers"] = asked
    return headers


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(node: Node, cfg: UniStreamSettings, transport_name: str) -> Endpoint:
    sse = transport_name == "uni_sse"
    methods = ("GET", "POST") if sse else ("POST",)

    async def connect(request: Request) -> Response:
        cors = _cors(node, request)
        if request.method == "OPTIONS":  # a browser's preflight
            allow = ", ".join((*methods, "OPTIONS"))
            return Response(
                status_code=204,
                headers={**cors, "access-control-max-age": "300", "access-control-allow-methods": allow},
            )
        if request.method not in methods:
            return Response(status_code=405, headers={"allow": ", ".join(methods)})
        ip = request.client.host if request.client is not None else ""
        refused = admission(node, request.headers, ip)
        if refused is not None:
            status, reason = refused
            return PlainTextResponse(reason + "\n", status_code=status)
        admitted = True

        def release() -> None:
            nonlocal admitted
            if admitted:
                admitted = False
                node.gate.release(ip)

        try:
            return await _open(request, release)
        except BaseException:
            release()
            raise

    async def _open(request: Request, release: Callable[[], None]) -> Response:
        ip = request.client.host if request.client is not None else ""
        try:
            if request.method == "GET":
                frame: str | bytes | None = unidirectional.query_connect_frame(request.url.query)
            else:
                try:
                    frame = await _read_body(request, cfg.max_request_body_size)
                except ClientDisconnect:
                    release()
                    return Response(status_code=400)
                if frame is None:
                    release()
                    return PlainTextResponse("request body too large\n", status_code=413)
            params = unidirectional.connect_request(frame or b"")
        except Disconnect:
            release()
            return PlainTextResponse("invalid connect request\n", status_code=400)
        cors = _cors(node, request)
        credentials: Credentials | Error | Disconnect | None = None
        hook = node.upgrade_hook
        if hook is not None:
            try:
                credentials = await hook(dict(request.scope))
            except (Error, Disconnect) as exc:
                credentials = exc
            except Exception:
                log.exception("connect hook failed for %s", ip)
                release()
                return PlainTextResponse("connect hook failed\n", status_code=500)
        headers = {
            **cors,
            "cache-control": _NO_CACHE,
            "pragma": "no-cache",
            "expire": "0",
            "x-accel-buffering": "no",
            "content-type": "text/event-stream; charset=utf-8" if sse else "text/plain; charset=utf-8",
        }
        return StreamResponse(node, params, credentials, transport_name, headers, release)

    return connect


def add_routes(router: APIRouter, node: Node) -> None:
    """uni_sse and uni_http_stream on ``router``, as far as the settings enable them."""
    settings = node.settings
    for name, cfg in (("uni_sse", settings.uni_sse), ("uni_http_stream", settings.uni_http_stream)):
        if cfg.enabled:
            router.add_api_route(
                cfg.handler_prefix,
                endpoint(node, cfg, name),
                methods=["GET", "POST", "OPTIONS", "PUT", "DELETE", "PATCH"],
                include_in_schema=False,
                response_model=None,
            )
