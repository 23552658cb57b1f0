"""The server API's methods: a request model in, a result dict out (``Error`` raised for a refusal).

The handlers only translate: the work is done by :class:`~livehub.core.node.Node` methods,
which the app can call directly too. ``OPERATIONS`` names them as a ``batch`` names its
commands.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson

from livehub.api.map_operations import MAP_OPERATIONS
from livehub.api.models import (
    BatchCommand,
    BatchRequest,
    BoolValue,
    BroadcastRequest,
    ChannelRequest,
    ChannelsRequest,
    DisconnectRequest,
    HistoryRequest,
    InfoRequest,
    PublishRequest,
    RefreshRequest,
    RPCRequest,
    SubscribeOverride,
    SubscribeRequest,
    UnsubscribeRequest,
    UserRequest,
)
from livehub.api.payloads import _channel, _json, _payload, _position
from livehub.core import control
from livehub.core.node import Node
from livehub.engines.base import EngineUnavailable
from livehub.models import Publication, StreamPosition
from livehub.protocol.codec import info_dict
from livehub.protocol.codes import Disconnect, Error, error_bad_request

log = logging.getLogger("livehub.api")


def api_error_internal() -> Error:
    """The server API's 100 is not temporary (the client SDKs' is)."""
    return Error(100, "internal server error")


def api_error_not_found() -> Error:
    return Error(104, "not found")


# -- operations: request model -> result dict, raising Error


def error_body(exc: Error) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message}


def _publication(pub: Publication) -> dict[str, Any]:
    out: dict[str, Any] = {"data": orjson.Fragment(pub.data)}
    if pub.info is not None:
        out["info"] = info_dict(pub.info)
    if pub.offset:
        out["offset"] = pub.offset
    if pub.tags:
        out["tags"] = pub.tags
    if pub.key:
        out["key"] = pub.key
    return out


async def run_guarded(op: Awaitable[dict[str, Any]]) -> tuple[dict[str, Any] | None, Error | None]:
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
        channel,
        data,
        tags=req.tags,
        idempotency_key=req.idempotency_key,
        skip_history=req.skip_history,
        key=req.key,
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
                key=req.key,
            )
            return _position(sp)

        result, error = await run_guarded(op())
        return {"error": error_body(error)} if error is not None else {"result": result}

    return {"responses": list(await asyncio.gather(*(one(ch) for ch in req.channels)))}


def _target(req: UserRequest) -> control.Target:
    return control.Target(req.user, req.client, req.session, req.all_users)


async def subscribe(node: Node, req: SubscribeRequest) -> dict[str, Any]:
    channel = _channel(node, req.channel)
    override = req.override or SubscribeOverride()
    since = req.recover_since
    values: dict[str, BoolValue | None] = {name: getattr(override, name) for name in control.OVERRIDES}
    await node.command(
        control.SubscribeUser(
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
    await node.command(control.UnsubscribeUser(_target(req), req.channel))
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
    await node.command(control.RefreshUser(_target(req), req.expired, req.expire_at, info))
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
    try:
        found = node.channels_matching(req.pattern)
    except re.error:  # e.g. "[z-a]": the caller's mistake, not the server's
        raise error_bad_request() from None
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
    **MAP_OPERATIONS,
}


async def batch(node: Node, req: BatchRequest) -> dict[str, Any]:
    async def one(command: BatchCommand | None) -> dict[str, Any]:
        if command is None:
            return {"error": error_body(error_bad_request())}
        for name in BatchCommand.model_fields:
            request = getattr(command, name)
            if request is not None:
                result, error = await run_guarded(OPERATIONS[name](node, request))
                return {"error": error_body(error)} if error is not None else {name: result}
        return {"error": error_body(api_error_not_found())}

    if req.parallel:
        replies = list(await asyncio.gather(*(one(c) for c in req.commands)))
    else:
        replies = [await one(c) for c in req.commands]
    return {"replies": replies}
