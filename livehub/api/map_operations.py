"""The server API's map methods, with Centrifugo's names: ``map_publish``, ``map_remove``,
``map_read_state``, ``map_read_stream``, ``map_stats``, ``map_clear``.

The work is done by the node's :class:`~livehub.core.maps.Maps` (which the app reaches as
``hub.maps``); a channel outside a map namespace is refused with 108.
"""

from __future__ import annotations

from typing import Any

import orjson

from livehub.api.models import (
    ChannelRequest,
    MapPublishRequest,
    MapReadStateRequest,
    MapReadStreamRequest,
    MapRemoveRequest,
)
from livehub.api.payloads import _channel, _payload, _position
from livehub.core.node import Node
from livehub.engines.base import KEY_MODES, MapUpdate
from livehub.models import Publication, StreamPosition
from livehub.protocol import codes


def _update(update: MapUpdate) -> dict[str, Any]:
    out = _position(update.position)
    if update.suppressed:
        out.update(suppressed=True, suppress_reason=update.suppressed)
    return out


def _entry(pub: Publication) -> dict[str, Any]:
    out: dict[str, Any] = {"key": pub.key}
    if pub.data:
        out["data"] = orjson.Fragment(pub.data)
    if pub.tags:
        out["tags"] = pub.tags
    if pub.offset:
        out["offset"] = pub.offset
    if pub.removed:
        out["removed"] = True
    if pub.time:
        out["time"] = pub.time
    return out


async def map_publish(node: Node, req: MapPublishRequest) -> dict[str, Any]:
    channel = _channel(node, req.channel)
    if req.idempotency_key or req.version or req.version_epoch or req.score:
        raise codes.error_not_available()
    if req.stream_data is not None or req.b64stream_data:
        raise codes.error_not_available()
    if req.key_mode not in KEY_MODES:
        raise codes.error_bad_request()
    data = _payload(req, "data", "b64data")
    if data is None:
        raise codes.error_bad_request()
    update = await node.maps.publish(channel, req.key, data, tags=req.tags, key_mode=req.key_mode)
    return _update(update)


async def map_remove(node: Node, req: MapRemoveRequest) -> dict[str, Any]:
    channel = _channel(node, req.channel)
    if req.idempotency_key:
        raise codes.error_not_available()
    return _update(await node.maps.remove(channel, req.key))


async def map_read_state(node: Node, req: MapReadStateRequest) -> dict[str, Any]:
    channel = _channel(node, req.channel)
    if req.asc:  # ordered maps are not served: every map is in key order
        raise codes.error_not_available()
    page = await node.maps.state(channel, req.cursor, max(req.limit, 0), req.key)
    entries = page.entries
    if req.revision_epoch:
        if req.revision_epoch != page.position.epoch:
            raise codes.error_unrecoverable_position()
        entries = [e for e in entries if e.offset <= req.revision_offset]
    out: dict[str, Any] = {"entries": [_entry(e) for e in entries], **_position(page.position)}
    if page.cursor:
        out["cursor"] = page.cursor
    return out


async def map_read_stream(node: Node, req: MapReadStreamRequest) -> dict[str, Any]:
    channel = _channel(node, req.channel)
    since = StreamPosition(req.since_offset, req.since_epoch) if req.since_offset or req.since_epoch else None
    pubs, top = await node.maps.stream(channel, since, req.limit)
    if req.reverse:
        pubs.reverse()
    return {"entries": [_entry(p) for p in pubs], **_position(top)}


async def map_stats(node: Node, req: ChannelRequest) -> dict[str, Any]:
    channel = _channel(node, req.channel)
    n = await node.maps.stats(channel)
    return {"num_keys": n} if n else {}


async def map_clear(node: Node, req: ChannelRequest) -> dict[str, Any]:
    await node.maps.clear(_channel(node, req.channel))
    return {}


MAP_OPERATIONS: dict[str, Any] = {
    "map_publish": map_publish,
    "map_remove": map_remove,
    "map_read_state": map_read_state,
    "map_read_stream": map_read_stream,
    "map_stats": map_stats,
    "map_clear": map_clear,
}
