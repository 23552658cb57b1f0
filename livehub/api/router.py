"""The server API over HTTP: ``POST {http_api.handler_prefix}/<method>``, key checked first.

See :mod:`livehub.api` for the contract.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from livehub.api.map_operations import (
    map_clear,
    map_publish,
    map_read_state,
    map_read_stream,
    map_remove,
    map_stats,
)
from livehub.api.models import (
    BatchRequest,
    BatchResponse,
    BroadcastRequest,
    BroadcastResult,
    ChannelRequest,
    ChannelsRequest,
    ChannelsResult,
    DisconnectRequest,
    Empty,
    HistoryRequest,
    HistoryResult,
    InfoRequest,
    InfoResult,
    MapPublishRequest,
    MapReadStateRequest,
    MapReadStateResult,
    MapReadStreamRequest,
    MapReadStreamResult,
    MapRemoveRequest,
    MapStatsResult,
    MapUpdateResult,
    PresenceResult,
    PresenceStatsResult,
    PublishRequest,
    PublishResult,
    RefreshRequest,
    Reply,
    RPCRequest,
    RPCResult,
    SubscribeRequest,
    UnsubscribeRequest,
)
from livehub.api.operations import (
    batch,
    broadcast,
    channels,
    disconnect,
    error_body,
    history,
    history_remove,
    info,
    presence,
    presence_stats,
    publish,
    refresh,
    rpc,
    run_guarded,
    subscribe,
    unsubscribe,
)
from livehub.core.node import Node
from livehub.protocol.codes import Error
from livehub.settings import HttpApiSettings

#: ``X-Centrifugo-Error-Mode: transport``: error code -> HTTP status (anything else: 500).
HTTP_STATUS = {100: 500, 102: 404, 104: 404, 107: 400, 108: 400, 112: 416, 113: 409}


# -- HTTP


def authorized(request: Request, cfg: HttpApiSettings) -> bool:
    """Centrifugo's order: X-API-Key, else Authorization: apikey; then ?api_key=."""
    if cfg.insecure:
        return True
    if not cfg.key:
        return False
    key = cfg.key.encode()

    def same(given: str) -> bool:
        return hmac.compare_digest(given.encode(), key)

    ok = False
    header = request.headers.get("x-api-key")
    if header:
        ok = same(header)
    else:
        parts = request.headers.get("authorization", "").split()
        ok = len(parts) == 2 and parts[0].lower() == "apikey" and same(parts[1])
    if not ok and request.url.query:
        ok = same(request.query_params.get("api_key", ""))
    return ok


def _reply(request: Request, result: dict[str, Any] | None, error: Error | None) -> Response:
    if error is None:
        body = orjson.dumps({"result": result})
    elif request.headers.get("x-centrifugo-error-mode") == "transport":
        status = HTTP_STATUS.get(error.code, 500)
        return Response(orjson.dumps(error_body(error)), status, media_type="application/json")
    else:
        body = orjson.dumps({"error": error_body(error)})
    return Response(body, media_type="application/json")


def _docs(result: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"model": Reply[result]},  # type: ignore[valid-type]
        400: {"description": "the body is not a JSON object of this method's fields"},
        401: {"description": "no valid API key (empty body)"},
    }


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it passes ``limit`` bytes (nothing more is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _replay(body: bytes) -> Callable[[], Coroutine[Any, Any, dict[str, Any]]]:
    """An ASGI ``receive`` giving the body that was already read."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


_API_KEY_IN_QUERY = re.compile(r"((?:^|[?&])api_key=)[^&]*")


class RedactAPIKey(logging.Filter):
    """Access logs print the request's path with its query: hide ``?api_key=`` there."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "api_key=" in a for a in args):
            record.args = tuple(
                _API_KEY_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in args
            )
        return True


def redact_api_key_in_access_log() -> None:
    """Install :class:`RedactAPIKey` on uvicorn's access logger (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactAPIKey) for f in access.filters):
        access.addFilter(RedactAPIKey())


def api_router(node: Node) -> APIRouter:
    """The server API's routes, bound to ``node``: ``app.include_router(api_router(node))``."""
    cfg = node.settings.http_api
    redact_api_key_in_access_log()

    class APIKeyRoute(APIRoute):
        """Checks the key before the body is read, and answers a bad body with a plain 400."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()

            async def route(request: Request) -> Response:
                if not authorized(request, cfg):
                    return Response(status_code=401)
                body = await read_body(request, cfg.max_body_size)
                if body is None:
                    return PlainTextResponse("Request Entity Too Large", status_code=413)
                if body:
                    try:  # strict JSON: NaN and Infinity (which json.loads takes) are refused
                        orjson.loads(body)
                    except orjson.JSONDecodeError:
                        return PlainTextResponse("Bad Request", status_code=400)
                # The body is JSON whatever the Content-Type says (``curl -d`` says a form).
                headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
                headers.append((b"content-type", b"application/json"))
                request = Request({**request.scope, "headers": headers}, _replay(body))
                try:
                    return await handle(request)
                except RequestValidationError:
                    return PlainTextResponse("Bad Request", status_code=400)

            return route

    router = APIRouter(
        prefix=cfg.handler_prefix.rstrip("/"),
        route_class=APIKeyRoute,
        tags=["server API"],
        dependencies=[Security(APIKeyHeader(name="X-API-Key", auto_error=False))],
    )

    async def call(request: Request, op: Coroutine[Any, Any, dict[str, Any]]) -> Response:
        result, error = await run_guarded(op)
        return _reply(request, result, error)

    @router.post("/publish", responses=_docs(PublishResult))
    async def publish_(req: PublishRequest, request: Request) -> Response:
        """Publish data into a channel; offset and epoch come back when it keeps history."""
        return await call(request, publish(node, req))

    @router.post("/broadcast", responses=_docs(BroadcastResult))
    async def broadcast_(req: BroadcastRequest, request: Request) -> Response:
        """Publish the same data into many channels; one response per channel, in order."""
        return await call(request, broadcast(node, req))

    @router.post("/subscribe", responses=_docs(Empty))
    async def subscribe_(req: SubscribeRequest, request: Request) -> Response:
        """Subscribe a user's connections to a channel (they get a ``subscribe`` push)."""
        return await call(request, subscribe(node, req))

    @router.post("/unsubscribe", responses=_docs(Empty))
    async def unsubscribe_(req: UnsubscribeRequest, request: Request) -> Response:
        """Unsubscribe a user's connections from a channel (``unsubscribe`` push, code 2000)."""
        return await call(request, unsubscribe(node, req))

    @router.post("/disconnect", responses=_docs(Empty))
    async def disconnect_(req: DisconnectRequest, request: Request) -> Response:
        """Close a user's connections (default code 3503: the SDKs do not reconnect)."""
        return await call(request, disconnect(node, req))

    @router.post("/refresh", responses=_docs(Empty))
    async def refresh_(req: RefreshRequest, request: Request) -> Response:
        """Set when a user's connections expire, or expire them now."""
        return await call(request, refresh(node, req))

    @router.post("/presence", responses=_docs(PresenceResult))
    async def presence_(req: ChannelRequest, request: Request) -> Response:
        """Who is in a channel, by client id."""
        return await call(request, presence(node, req))

    @router.post("/presence_stats", responses=_docs(PresenceStatsResult))
    async def presence_stats_(req: ChannelRequest, request: Request) -> Response:
        """How many clients and distinct users are in a channel."""
        return await call(request, presence_stats(node, req))

    @router.post("/history", responses=_docs(HistoryResult))
    async def history_(req: HistoryRequest, request: Request) -> Response:
        """A channel's publications and stream position."""
        return await call(request, history(node, req))

    @router.post("/history_remove", responses=_docs(Empty))
    async def history_remove_(req: ChannelRequest, request: Request) -> Response:
        """Drop a channel's publications (its stream position stays)."""
        return await call(request, history_remove(node, req))

    @router.post("/channels", responses=_docs(ChannelsResult))
    async def channels_(req: ChannelsRequest, request: Request) -> Response:
        """Channels with subscribers, optionally filtered by a glob pattern."""
        return await call(request, channels(node, req))

    @router.post("/info", responses=_docs(InfoResult))
    async def info_(req: InfoRequest, request: Request) -> Response:
        """Every live node: connections, users, subscriptions, channels, uptime."""
        return await call(request, info(node, req))

    @router.post("/rpc", responses=_docs(RPCResult))
    async def rpc_(req: RPCRequest, request: Request) -> Response:
        """Call a method registered with ``@node.api_rpc``."""
        return await call(request, rpc(node, req))

    @router.post("/map_publish", responses=_docs(MapUpdateResult))
    async def map_publish_(req: MapPublishRequest, request: Request) -> Response:
        """Set a key of a map channel (its subscribers get the change)."""
        return await call(request, map_publish(node, req))

    @router.post("/map_remove", responses=_docs(MapUpdateResult))
    async def map_remove_(req: MapRemoveRequest, request: Request) -> Response:
        """Remove a key of a map channel."""
        return await call(request, map_remove(node, req))

    @router.post("/map_read_state", responses=_docs(MapReadStateResult))
    async def map_read_state_(req: MapReadStateRequest, request: Request) -> Response:
        """A page of a map channel's state, in key order (``cursor`` for the next one)."""
        return await call(request, map_read_state(node, req))

    @router.post("/map_read_stream", responses=_docs(MapReadStreamResult))
    async def map_read_stream_(req: MapReadStreamRequest, request: Request) -> Response:
        """A map channel's changes after a position, and its stream position."""
        return await call(request, map_read_stream(node, req))

    @router.post("/map_stats", responses=_docs(MapStatsResult))
    async def map_stats_(req: ChannelRequest, request: Request) -> Response:
        """How many keys a map channel holds."""
        return await call(request, map_stats(node, req))

    @router.post("/map_clear", responses=_docs(Empty))
    async def map_clear_(req: ChannelRequest, request: Request) -> Response:
        """Forget a map channel: state, stream and epoch."""
        return await call(request, map_clear(node, req))

    @router.post("/batch", responses={200: {"model": BatchResponse}})
    async def batch_(req: BatchRequest, request: Request) -> Response:
        """Several commands in one request, in order or (``parallel``) concurrently."""
        result, error = await run_guarded(batch(node, req))
        if result is None:
            return _reply(request, None, error)
        return Response(orjson.dumps(result), media_type="application/json")

    return router
