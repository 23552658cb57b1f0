"""Centrifugo's server HTTP API: ``POST {http_api.handler_prefix}/<method>`` (default ``/api``).

What the backend calls to publish, manage connections and read state; the ``cent`` client
(PyPI) and Centrifugo's other API libraries work against it unchanged
(research/centrifugo-protocol.md §10):

* Auth: ``X-API-Key: <key>``; if that header is absent, ``Authorization: apikey <key>``;
  then ``?api_key=<key>``. None valid, or no key configured: 401 with an empty body.
  ``http_api.insecure`` turns the check off.
* Replies are HTTP 200 with ``{"result": {...}}`` or ``{"error": {"code", "message"}}``;
  with the header ``X-Centrifugo-Error-Mode: transport`` an error is an HTTP status
  instead (102/104 → 404, 107/108 → 400, 112 → 416, 100 → 500) with the bare error as
  body. ``batch`` answers ``{"replies": [...]}`` and ``broadcast`` reports each channel
  in its ``responses``, in either mode.
* A body that is not a JSON object of the method's fields is 400 ``Bad Request``
  (whatever its Content-Type: ``curl -d`` sends a form type); a missing channel is 107,
  an unknown namespace 102, history or presence switched off 108.

The request models are Pydantic, so each method appears in the app's OpenAPI schema. The
handlers only translate: the work is done by :class:`~livehub.node.Node` methods, which
the app can call directly too.

In a cluster (several nodes on a Redis or NATS engine) any node answers for all:
``subscribe``, ``unsubscribe``, ``disconnect`` and ``refresh`` reach the user's
connections on every node, ``info`` lists every live node, and ``presence``,
``presence_stats`` and ``history`` read the shared engine (with NATS, presence is per
node). ``channels`` lists this node's channels only. When the engine cannot be reached,
methods that need it answer error 100 within the engine's timeouts.

``rpc`` calls the server-side methods registered with ``@node.api_rpc("name")`` (they get
the request's ``params`` as raw JSON, and no client); they are kept apart from client RPC
handlers, which are given the calling connection. No method registered at all is 108,
an unknown one 104.

Not supported: ``presence`` and ``join_leave`` in ``subscribe``'s ``override`` (accepted,
not applied); ``label_filter``; the publish options ``delta`` (the namespace's
``allowed_delta_types`` decide), ``version`` and ``version_epoch``; binary payloads: a
``b64data``/``b64info`` must decode to JSON, as every client of this server speaks JSON.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import orjson
from fastapi import APIRouter, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, model_validator

from livehub import control
from livehub.engines.base import EngineUnavailable
from livehub.models import Publication, StreamPosition
from livehub.node import Node
from livehub.protocol.codec import info_dict
from livehub.protocol.codes import Disconnect, Error, error_bad_request
from livehub.settings import HttpApiSettings

log = logging.getLogger("livehub.http_api")


def api_error_internal() -> Error:
    """The server API's 100 is not temporary (the client SDKs' is)."""
    return Error(100, "internal server error")


def api_error_not_found() -> Error:
    return Error(104, "not found")


#: ``X-Centrifugo-Error-Mode: transport``: error code -> HTTP status (anything else: 500).
HTTP_STATUS = {100: 500, 102: 404, 104: 404, 107: 400, 108: 400, 112: 416, 113: 409}

#: Fields holding raw JSON, where ``null`` is a value; elsewhere ``null`` means "not set".
_RAW_FIELDS = frozenset({"data", "info", "params"})


# -- requests


class APIRequest(BaseModel):
    """Unknown fields are ignored and ``null`` is taken as absent, as Centrifugo's decoder does."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None or k in _RAW_FIELDS}
        return value


class Position(APIRequest):
    offset: int = Field(default=0, ge=0)
    epoch: str = ""


class PublishRequest(APIRequest):
    channel: str = ""
    data: Any = Field(default=None, description="JSON to publish (required unless b64data is set)")
    b64data: str = Field(default="", description="base64 of JSON to publish; wins over data")
    skip_history: bool = False
    tags: dict[str, str] = {}
    idempotency_key: str = Field(default="", description="a repeat within 5 minutes returns the first result")


class BroadcastRequest(APIRequest):
    channels: list[str] = []
    data: Any = None
    b64data: str = ""
    skip_history: bool = False
    tags: dict[str, str] = {}
    idempotency_key: str = ""


class BoolValue(APIRequest):
    value: bool = False


class SubscribeOverride(APIRequest):
    presence: BoolValue | None = Field(default=None, description="accepted, not applied")
    join_leave: BoolValue | None = Field(default=None, description="accepted, not applied")
    force_push_join_leave: BoolValue | None = None
    force_positioning: BoolValue | None = None
    force_recovery: BoolValue | None = None


class Target(APIRequest):
    """Which connections: the user's ("" = anonymous ones), narrowed to one ``client``."""

    user: str = ""
    client: str = ""
    session: str = Field(default="", description="only unidirectional transports have one: matches nothing")
    all_users: bool = Field(default=False, description="with an empty user: every connection")


class SubscribeRequest(Target):
    channel: str = ""
    info: Any = Field(default=None, description="channel info for presence and join/leave")
    b64info: str = ""
    data: Any = Field(default=None, description="sent to the client in the subscribe push")
    b64data: str = ""
    expire_at: int = Field(default=0, description="unix time the subscription expires at (0: never)")
    recover_since: Position | None = None
    override: SubscribeOverride | None = None


class UnsubscribeRequest(Target):
    channel: str = Field(default="", description='"" leaves every channel')


class DisconnectCode(APIRequest):
    code: int = 0
    reason: str = ""


class DisconnectRequest(Target):
    whitelist: list[str] = Field(default=[], description="client ids to keep")
    disconnect: DisconnectCode | None = Field(default=None, description='default: 3503 "force disconnect"')


class RefreshRequest(Target):
    expired: bool = False
    expire_at: int = 0
    info: Any = None


class ChannelRequest(APIRequest):
    channel: str = ""


class HistoryRequest(APIRequest):
    channel: str = ""
    limit: int = Field(default=0, description="0: only the stream top; -1: everything")
    since: Position | None = None
    reverse: bool = False


class ChannelsRequest(APIRequest):
    pattern: str = Field(default="", description="glob: * ? [a-z] [!a] {a,b}")


class InfoRequest(APIRequest):
    pass


class RPCRequest(APIRequest):
    method: str = ""
    params: Any = None


class Command(APIRequest):
    """One command of a batch: exactly one field set."""

    publish: PublishRequest | None = None
    broadcast: BroadcastRequest | None = None
    subscribe: SubscribeRequest | None = None
    unsubscribe: UnsubscribeRequest | None = None
    disconnect: DisconnectRequest | None = None
    history: HistoryRequest | None = None
    history_remove: ChannelRequest | None = None
    presence: ChannelRequest | None = None
    presence_stats: ChannelRequest | None = None
    info: InfoRequest | None = None
    rpc: RPCRequest | None = None
    refresh: RefreshRequest | None = None
    channels: ChannelsRequest | None = None


class BatchRequest(APIRequest):
    commands: list[Command | None] = []
    parallel: bool = False


# -- results (for the OpenAPI document; replies are written as Centrifugo writes them:
# -- zero values left out except where noted)

T = TypeVar("T")


class APIError(BaseModel):
    code: int
    message: str


class Reply(BaseModel, Generic[T]):
    result: T | None = None
    error: APIError | None = None


class Empty(BaseModel):
    pass


class PublishResult(BaseModel):
    offset: int | None = Field(default=None, description="absent without history")
    epoch: str | None = None


class BroadcastResult(BaseModel):
    responses: list[Reply[PublishResult]]


class ClientInfoResult(BaseModel):
    user: str
    client: str
    conn_info: Any = None
    chan_info: Any = None


class PresenceResult(BaseModel):
    presence: dict[str, ClientInfoResult]


class PresenceStatsResult(BaseModel):
    num_clients: int
    num_users: int


class PublicationResult(BaseModel):
    data: Any
    info: ClientInfoResult | None = None
    offset: int | None = None
    tags: dict[str, str] | None = None


class HistoryResult(BaseModel):
    publications: list[PublicationResult]
    epoch: str
    offset: int


class ChannelInfo(BaseModel):
    num_clients: int


class ChannelsResult(BaseModel):
    channels: dict[str, ChannelInfo]


class NodeResult(BaseModel):
    uid: str
    name: str
    version: str
    num_clients: int
    num_users: int
    num_subs: int
    num_channels: int
    uptime: int | None = None


class InfoResult(BaseModel):
    nodes: list[NodeResult]


class RPCResult(BaseModel):
    data: Any = None


class BatchResponse(BaseModel):
    replies: list[dict[str, Any]] = Field(description='{"<method>": result} or {"error": ...}, in order')


# -- operations: request model -> result dict, raising Error


def _error(exc: Error) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message}


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits
        raise error_bad_request() from None


def _payload(req: BaseModel, field: str, b64_field: str) -> bytes | None:
    """Raw JSON from ``field``, or from base64 in ``b64_field`` (which wins); None if neither."""
    b64: str = getattr(req, b64_field)
    if b64:
        try:
            return _json(orjson.loads(base64.b64decode(b64, validate=True)))
        except (binascii.Error, ValueError):
            raise error_bad_request() from None
    if field in req.model_fields_set:
        return _json(getattr(req, field))
    return None


def _position(sp: StreamPosition) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sp.offset:
        out["offset"] = sp.offset
    if sp.epoch:
        out["epoch"] = sp.epoch
    return out


def _publication(pub: Publication) -> dict[str, Any]:
    out: dict[str, Any] = {"data": orjson.Fragment(pub.data)}
    if pub.info is not None:
        out["info"] = info_dict(pub.info)
    if pub.offset:
        out["offset"] = pub.offset
    if pub.tags:
        out["tags"] = pub.tags
    return out


def _channel(node: Node, channel: str) -> str:
    """A required channel: 107 if missing, 102 if its namespace is unknown."""
    if not channel:
        raise error_bad_request()
    node.options(channel)
    return channel


async def _guard(op: Awaitable[dict[str, Any]]) -> tuple[dict[str, Any] | None, Error | None]:
    try:
        return await op, None
    except Error as exc:
        return None, exc
    except EngineUnavailable as exc:  # Redis/NATS down: a temporary internal error, no traceback
        log.warning("server API call failed, engine unavailable: %s", exc)
        return None, api_error_internal()
    except Exception:
        log.exception("server API call failed")
        return None, api_error_internal()


async def publish(node: Node, req: PublishRequest) -> dict[str, Any]:
    channel = _channel(node, req.channel)
    data = _payload(req, "data", "b64data")
    if data is None:
        raise error_bad_request()
    sp = await node.publish(
        channel, data, tags=req.tags, idempotency_key=req.idempotency_key, skip_history=req.skip_history
    )
    return _position(sp)


async def broadcast(node: Node, req: BroadcastRequest) -> dict[str, Any]:
    if not req.channels:
        raise error_bad_request()
    data = _payload(req, "data", "b64data")
    if data is None:
        raise error_bad_request()

    async def one(channel: str) -> dict[str, Any]:
        async def op() -> dict[str, Any]:
            sp = await node.publish(
                _channel(node, channel),
                data,
                tags=req.tags,
                idempotency_key=req.idempotency_key,
                skip_history=req.skip_history,
            )
            return _position(sp)

        result, error = await _guard(op())
        return {"error": _error(error)} if error is not None else {"result": result}

    return {"responses": list(await asyncio.gather(*(one(ch) for ch in req.channels)))}


def _target(req: Target) -> control.Target:
    return control.Target(req.user, req.client, req.session, req.all_users)


async def subscribe(node: Node, req: SubscribeRequest) -> dict[str, Any]:
    channel = _channel(node, req.channel)
    override = req.override or SubscribeOverride()
    since = req.recover_since
    values: dict[str, BoolValue | None] = {name: getattr(override, name) for name in control.OVERRIDES}
    await node.command(
        control.Subscribe(
            _target(req),
            channel,
            info=_payload(req, "info", "b64info"),
            data=_payload(req, "data", "b64data"),
            expire_at=req.expire_at,
            recover_since=None if since is None else StreamPosition(since.offset, since.epoch),
            overrides={name: value.value for name, value in values.items() if value is not None},
        )
    )
    return {}


async def unsubscribe(node: Node, req: UnsubscribeRequest) -> dict[str, Any]:
    await node.command(control.Unsubscribe(_target(req), req.channel))
    return {}


async def disconnect(node: Node, req: DisconnectRequest) -> dict[str, Any]:
    custom = None
    if req.disconnect is not None and req.disconnect.code:
        code, reason = req.disconnect.code, req.disconnect.reason
        if not 3000 <= code <= 4999 or len(reason.encode()) > 123:  # a valid WebSocket close
            raise error_bad_request()
        custom = Disconnect(code, reason)
    await node.command(control.DisconnectUser(_target(req), custom, frozenset(req.whitelist)))
    return {}


async def refresh(node: Node, req: RefreshRequest) -> dict[str, Any]:
    info = _json(req.info) if "info" in req.model_fields_set else None
    await node.command(control.Refresh(_target(req), req.expired, req.expire_at, info))
    return {}


async def presence(node: Node, req: ChannelRequest) -> dict[str, Any]:
    clients = await node.presence(_channel(node, req.channel))
    return {"presence": {cid: info_dict(info) for cid, info in clients.items()}}


async def presence_stats(node: Node, req: ChannelRequest) -> dict[str, Any]:
    stats = await node.presence_stats(_channel(node, req.channel))
    return {"num_clients": stats.num_clients, "num_users": stats.num_users}


async def history(node: Node, req: HistoryRequest) -> dict[str, Any]:
    since = None if req.since is None else StreamPosition(req.since.offset, req.since.epoch)
    pubs, sp = await node.server_history(_channel(node, req.channel), req.limit, since, req.reverse)
    return {"publications": [_publication(p) for p in pubs], "epoch": sp.epoch, "offset": sp.offset}


async def history_remove(node: Node, req: ChannelRequest) -> dict[str, Any]:
    await node.remove_history(_channel(node, req.channel))
    return {}


async def channels(node: Node, req: ChannelsRequest) -> dict[str, Any]:
    found = node.channels_matching(req.pattern)
    return {"channels": {name: {"num_clients": n} for name, n in found.items()}}


async def info(node: Node, req: InfoRequest) -> dict[str, Any]:
    return {"nodes": node.nodes_info()}


async def rpc(node: Node, req: RPCRequest) -> dict[str, Any]:
    if not req.method:
        raise error_bad_request()
    params = _json(req.params) if "params" in req.model_fields_set else None
    result = await node.call_api_rpc(req.method, params)
    if result is None:
        return {}
    return {"data": orjson.Fragment(result if isinstance(result, bytes) else orjson.dumps(result))}


Operation = Callable[[Node, Any], Coroutine[Any, Any, dict[str, Any]]]

#: Every method a batch may carry, under its command field name.
OPERATIONS: dict[str, Operation] = {
    "publish": publish,
    "broadcast": broadcast,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "disconnect": disconnect,
    "history": history,
    "history_remove": history_remove,
    "presence": presence,
    "presence_stats": presence_stats,
    "info": info,
    "rpc": rpc,
    "refresh": refresh,
    "channels": channels,
}


async def batch(node: Node, req: BatchRequest) -> dict[str, Any]:
    async def one(command: Command | None) -> dict[str, Any]:
        if command is None:
            return {"error": _error(error_bad_request())}
        for name in Command.model_fields:
            request = getattr(command, name)
            if request is not None:
                result, error = await _guard(OPERATIONS[name](node, request))
                return {"error": _error(error)} if error is not None else {name: result}
        return {"error": _error(api_error_not_found())}

    if req.parallel:
        replies = list(await asyncio.gather(*(one(c) for c in req.commands)))
    else:
        replies = [await one(c) for c in req.commands]
    return {"replies": replies}


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
        return Response(orjson.dumps(_error(error)), status, media_type="application/json")
    else:
        body = orjson.dumps({"error": _error(error)})
    return Response(body, media_type="application/json")


def _docs(result: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"model": Reply[result]},  # type: ignore[valid-type]
        400: {"description": "the body is not a JSON object of this method's fields"},
        401: {"description": "no valid API key (empty body)"},
    }


def api_router(node: Node) -> APIRouter:
    """The server API's routes, bound to ``node``: ``app.include_router(api_router(node))``."""
    cfg = node.settings.http_api

    class APIKeyRoute(APIRoute):
        """Checks the key before the body is read, and answers a bad body with a plain 400."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()

            async def route(request: Request) -> Response:
                if not authorized(request, cfg):
                    return Response(status_code=401)
                # The body is JSON whatever the Content-Type says (``curl -d`` says a form).
                headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
                headers.append((b"content-type", b"application/json"))
                request = Request({**request.scope, "headers": headers}, request.receive)
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
        result, error = await _guard(op)
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

    @router.post("/batch", responses={200: {"model": BatchResponse}})
    async def batch_(req: BatchRequest, request: Request) -> Response:
        """Several commands in one request, in order or (``parallel``) concurrently."""
        result, error = await _guard(batch(node, req))
        if result is None:
            return _reply(request, None, error)
        return Response(orjson.dumps(result), media_type="application/json")

    return router
