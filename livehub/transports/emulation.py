"""HTTP-streaming and SSE with bidirectional emulation, at Centrifugo's paths.

* ``POST /connection/http_stream``: the body is the connect command (JSON; Protobuf,
  varint-delimited, when ``Content-Type: application/octet-stream``); the response streams
  the replies (``livehub.transports.streaming``: newline-delimited JSON or delimited Protobuf).
* ``GET /connection/sse?cf_connect=<JSON connect command>`` (EventSource), or ``POST`` with
  the command as the body: one SSE event per reply. JSON only.
* ``POST /emulation``: ``EmulationRequest`` ``{node, session, data}`` (JSON, ``data`` the
  commands as a string; or Protobuf) carries a streaming session's further commands. The
  connect reply told the client its ``session`` and ``node``. A request that reaches
  another node than the session's is forwarded to it on the engine's control channel
  (``livehub.core.control.Emulate``), so no sticky sessions are needed. Answers: 204
  (queued, or forwarded), 400 (malformed), 404 (no such node, or no such session on this
  node), 413 (body over ``emulation.max_request_body_size``), 503 (the session's inbox is
  full, or the engine is unavailable).

Each stream is admitted like a WebSocket (``admission``: origin, connection limits) and
the app's connect hook resolves who it is from the request, before the session starts.
Browsers' CORS requests get ``Access-Control-Allow-Origin`` when the origin is allowed.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter
from starlette.datastructures import Headers
from starlette.routing import Route

from livehub.core.control import Emulate, Target
from livehub.core.node import Node
from livehub.engines.base import EngineUnavailable
from livehub.protocol import protobuf
from livehub.protocol.codes import Disconnect, Error
from livehub.protocol.encoding import JSON, PROTOBUF, Encoding
from livehub.transports.asgi import admission, origin_allowed
from livehub.transports.streaming import (
    DELIMITED,
    NDJSON,
    SSE,
    Receive,
    Send,
    StreamFormat,
    read_body,
    respond,
    serve_session,
)

log = logging.getLogger("livehub.transport.emulation")

PROTOBUF_TYPE = "application/octet-stream"


def _cors(node: Node, headers: Headers) -> list[tuple[bytes, bytes]]:
    """CORS headers for a browser's cross-origin request from an allowed origin."""
    origin = headers.get("origin")
    if not origin or not origin_allowed(headers, node.settings.client.allowed_origins):
        return []
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]


async def _preflight(send: Send, cors: list[tuple[bytes, bytes]], methods: bytes) -> None:
    extra = [
        (b"access-control-max-age", b"300"),
        (b"access-control-allow-methods", methods),
        (b"access-control-allow-headers", b"content-type, authorization"),
    ]
    await respond(send, 204, headers=cors + extra if cors else extra)


def _client_ip(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


async def _stream(
    node: Node,
    scope: dict[str, Any],
    receive: Receive,
    send: Send,
    *,
    transport: str,
    fmt: StreamFormat,
    encoding: Encoding,
    frame: str | bytes,
    cors: list[tuple[bytes, bytes]],
) -> None:
    """Admit the stream, resolve the connect hook, then run its session."""
    headers = Headers(scope=scope)
    ip = _client_ip(scope)
    refused = admission(node, headers, ip)
    if refused is not None:
        await respond(send, refused[0], refused[1], cors)
        return
    try:
        scope = {**scope, "livehub.transport": transport}
        hook = node.connect_hook
        credentials = None
        if hook is not None:
            try:
                credentials = await hook(scope)
            except (Error, Disconnect) as exc:
                credentials = exc
        await serve_session(
            node,
            scope,
            receive,
            send,
            fmt=fmt,
            encoding=encoding,
            frame=frame,
            credentials=credentials,
            emulated=True,
            extra_headers=cors,
        )
    finally:
        node.gate.release(ip)


async def _posted(
    node: Node, scope: dict[str, Any], receive: Receive, send: Send, limit: int
) -> tuple[Headers, list[tuple[bytes, bytes]], bytes] | None:
    """A POST endpoint's request: its headers, the CORS headers its answers carry, and its
    body; None when it was answered already (preflight, 405, 413 past ``limit``)."""
    headers = Headers(scope=scope)
    cors = _cors(node, headers)
    method = scope["method"]
    if method == "OPTIONS":
        await _preflight(send, cors, b"POST, OPTIONS")
        return None
    if method != "POST":
        await respond(send, 405, "method not allowed", cors)
        return None
    body = await read_body(receive, limit)
    if body is None:
        await respond(send, 413, "request body too large", cors)
        return None
    return headers, cors, body


class HttpStreamEndpoint:
    """``POST /connection/http_stream`` as a raw ASGI app."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        node = self.node
        posted = await _posted(node, scope, receive, send, node.settings.http_stream.max_request_body_size)
        if posted is None:
            return
        headers, cors, body = posted
        if not body.strip():
            await respond(send, 400, "no connect command", cors)
            return
        frame: str | bytes
        if headers.get("content-type") == PROTOBUF_TYPE:
            fmt, encoding, frame = DELIMITED, PROTOBUF, body
        else:
            try:
                fmt, encoding, frame = NDJSON, JSON, body.decode()
            except UnicodeDecodeError:
                await respond(send, 400, "body is not UTF-8", cors)
                return
        await _stream(
            node,
            scope,
            receive,
            send,
            transport="http_stream",
            fmt=fmt,
            encoding=encoding,
            frame=frame,
            cors=cors,
        )


class SseEndpoint:
    """``GET /connection/sse?cf_connect=...`` (or ``POST`` with the command) as a raw ASGI app."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        node = self.node
        limit = node.settings.sse.max_request_body_size
        cors = _cors(node, Headers(scope=scope))
        method = scope["method"]
        if method == "OPTIONS":
            await _preflight(send, cors, b"GET, POST, OPTIONS")
            return
        if method == "GET":
            query = scope.get("query_string", b"")
            if len(query) > 3 * limit:  # percent-encoded, at most 3 bytes per byte
                await respond(send, 413, "connect command too large", cors)
                return
            values = parse_qs(query.decode("latin-1")).get("cf_connect")
            text: str = values[0] if values else ""
            if len(text.encode()) > limit:
                await respond(send, 413, "connect command too large", cors)
                return
        elif method == "POST":
            body = await read_body(receive, limit)
            if body is None:
                await respond(send, 413, "request body too large", cors)
                return
            try:
                text = body.decode()
            except UnicodeDecodeError:
                await respond(send, 400, "body is not UTF-8", cors)
                return
        else:
            await respond(send, 405, "method not allowed", cors)
            return
        if not text.strip():
            await respond(send, 400, "no connect command", cors)
            return
        await _stream(
            node, scope, receive, send, transport="sse", fmt=SSE, encoding=JSON, frame=text, cors=cors
        )


def decode_request(body: bytes, binary: bool) -> tuple[str, str, str | bytes] | None:
    """An EmulationRequest as (node, session, command frame), or None if malformed: JSON
    (``data`` the commands as a string) or Protobuf (``data`` the delimited commands)."""
    if binary:
        try:
            return protobuf.decode_emulation_request(body)
        except Disconnect:
            return None
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(request, dict):
        return None
    node, session, data = request.get("node"), request.get("session"), request.get("data")
    if not (isinstance(node, str) and isinstance(session, str) and isinstance(data, str)):
        return None
    return node, session, data


class EmulationEndpoint:
    """``POST /emulation`` as a raw ASGI app (see the module's docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        node = self.node
        posted = await _posted(node, scope, receive, send, node.settings.emulation.max_request_body_size)
        if posted is None:
            return
        headers, cors, body = posted
        request = decode_request(body, headers.get("content-type") == PROTOBUF_TYPE)
        if request is None or not request[0] or not request[1] or not request[2]:
            await respond(send, 400, "malformed emulation request", cors)
            return
        target, session, frame = request
        if target == node.id:
            stream = node.stream_sessions.get(session)
            if stream is None:
                await respond(send, 404, "session not found", cors)
            elif not stream.feed(frame):
                await respond(send, 503, "session busy", cors)
            else:
                await respond(send, 204, headers=cors)
            return
        if target not in node.cluster.peers:
            await respond(send, 404, "node not found", cors)
            return
        command = Emulate(Target("", session=session), node=target, frame=frame)
        try:
            await node.cluster.send(command.kind, **command.to_wire())
        except EngineUnavailable as exc:
            log.warning("emulation request for node %s not forwarded: %s", target, exc)
            await respond(send, 503, "engine unavailable", cors)
            return
        await respond(send, 204, headers=cors)


def add_stream_routes(router: APIRouter, node: Node) -> None:
    """The routes of the enabled streaming transports and, with either, ``/emulation``."""
    settings = node.settings
    routes: list[tuple[str, Any, list[str]]] = []
    if settings.http_stream.enabled:
        routes.append((settings.http_stream.handler_prefix, HttpStreamEndpoint(node), ["POST", "OPTIONS"]))
    if settings.sse.enabled:
        routes.append((settings.sse.handler_prefix, SseEndpoint(node), ["GET", "POST", "OPTIONS"]))
    if routes:
        routes.append((settings.emulation.handler_prefix, EmulationEndpoint(node), ["POST", "OPTIONS"]))
    for path, app, methods in routes:  # raw ASGI apps: Starlette's Route takes a class instance so
        router.routes.append(Route(path, app, methods=methods, include_in_schema=False))


__all__ = ["EmulationEndpoint", "HttpStreamEndpoint", "SseEndpoint", "add_stream_routes", "decode_request"]
