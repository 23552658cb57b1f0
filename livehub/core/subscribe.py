"""The subscribe result: stream position and recovery of missed publications.

Recovery follows Centrifuge (research/centrifugo-protocol.md §6.3): the client says
where it was (offset, epoch); if the stream still holds every publication after that
offset, they go back in the reply with ``recovered: true`` and ``offset`` set to where
the client was, so the SDK advances through them itself. Otherwise the client is told
(``recovered`` absent, offset at the top) or, if it asked with flag bit 2, refused
with 112. The session is registered in the channel *before* the history is read, and
publications arriving meanwhile are held by the subscription (SUBSCRIBING,
``livehub.core.subscription``): nothing is lost between the two, and duplicates are dropped by
offset when the held ones are released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from livehub.engines.base import HistoryOptions
from livehub.models import StreamPosition
from livehub.protocol import codes
from livehub.protocol.codec import publication_dict
from livehub.settings import NamespaceOptions

if TYPE_CHECKING:
    from livehub.core.node import Node
    from livehub.core.subscription import Subscription


@dataclass(slots=True)
class SubscribeOptions:
    recover: bool = False
    offset: int = 0
    epoch: str = ""
    positioned: bool = False
    recoverable: bool = False
    join_leave: bool = False
    delta: str = ""
    reject_unrecovered: bool = False
    info: bytes | None = None
    data: bytes | None = None
    expires_at: int = 0


async def subscribe(
    node: Node,
    channel: str,
    opts: NamespaceOptions,
    params: SubscribeOptions,
    sub: Subscription,
    history_access: bool,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if params.data is not None:
        result["data"] = orjson.Fragment(params.data)
    if sub.delta:
        result["delta"] = True
    recoverable = opts.history_enabled and (
        opts.force_recovery or (params.recoverable and (opts.allow_recovery or history_access))
    )
    positioned = opts.history_enabled and (
        recoverable
        or opts.force_positioning
        or (params.positioned and (opts.allow_positioning or history_access))
    )
    if params.recover:
        result["was_recovering"] = True
    if not positioned:
        return result
    if params.recover and recoverable:
        limit = node.settings.client.recovery_max_publication_limit
        since = StreamPosition(params.offset, params.epoch)
        pubs, top = await node.broker.history(
            channel, HistoryOptions(limit, since, history_meta_ttl=opts.history_meta_ttl)
        )
        recovered = _is_recovered(
            params,
            pubs_first=pubs[0].offset if pubs else 0,
            pubs_last=pubs[-1].offset if pubs else 0,
            top=top,
        )
        if recovered:
            result["recovered"] = True
            if pubs:
                if sub.delta and not sub.binary:  # JSON delta clients read data as a string
                    as_text = [publication_dict(p, p.data.decode("utf-8", "replace")) for p in pubs]
                    result["publications"] = as_text
                else:
                    result["publications"] = [publication_dict(p) for p in pubs]
            result.update(recoverable=True, positioned=True, epoch=top.epoch, offset=params.offset)
            at = pubs[-1].offset if pubs else top.offset
            sub.position_at(StreamPosition(at, top.epoch), delta_ready=sub.delta and bool(pubs))
            return result
        if params.reject_unrecovered:
            raise codes.error_unrecoverable_position()
    else:
        top = await node.stream_top(channel, opts)
    if recoverable:
        result["recoverable"] = True
    result.update(positioned=True, epoch=top.epoch, offset=top.offset)
    sub.position_at(top)
    return result


def _is_recovered(params: SubscribeOptions, pubs_first: int, pubs_last: int, top: StreamPosition) -> bool:
    """An empty epoch matches any; otherwise the stream must still hold every missed offset."""
    if params.epoch and params.epoch != top.epoch:
        return False
    if not pubs_first:
        return top.offset == params.offset
    return pubs_first == params.offset + 1 and pubs_last == top.offset
