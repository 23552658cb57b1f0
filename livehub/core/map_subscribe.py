"""Subscribing to a map channel: the state, then the stream, then live (Centrifugo 6.8).

The client drives it with one ``subscribe`` command per page, ``phase`` saying which:

* STATE (2) pages through the state (``cursor``, ``limit``). The first page fixes the
  stream position the load starts from (later pages carry it back as ``offset``/``epoch``
  and drop entries changed since: those come from the stream). On the last page the
  server goes LIVE at once if the map has no stream, or if the stream is within one page
  of that position; otherwise it answers ``phase`` 2 without cursor and the client turns
  to the stream.
* STREAM (1) pages through the changes after ``offset`` (each answer's ``offset`` is the
  last change it holds) until the client is within one page of the stream top as it was
  on its first stream page, when the server goes LIVE. A reconnecting client that knows
  its position starts here with ``recover``.
* LIVE (0): the answer has ``phase`` 0 (omitted in JSON): the subscription is registered
  in the node first (publications arriving meanwhile are held: ``livehub.core.subscription``),
  then the changes since the client's position are read and returned with the state of
  the last page, and the held ones are released after the reply, duplicates dropped by
  offset. A gap (the stream no longer holds every change, a new epoch, more than the
  live transition limit) is error 112: the SDK loads the state again.

A load in progress is kept in ``Session.map_loading`` (authorised once, on its first
command), counts against the connection's channel limit, and is dropped when it takes
longer than ``map.subscribe_catch_up_timeout`` (5 s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from livehub.core.maps import map_options
from livehub.core.subscription import Subscription
from livehub.models import Publication, StreamPosition
from livehub.protocol import codes, tags_filter
from livehub.protocol.codec import publication_dict
from livehub.protocol.commands import PHASE_LIVE, PHASE_STATE, PHASE_STREAM, SubscribeParams
from livehub.settings import NamespaceOptions

if TYPE_CHECKING:
    from livehub.core.session import Session

#: ``SubscribeResult.type`` of a map subscription.
RESULT_TYPE_MAP = 1


@dataclass(slots=True)
class MapLoading:
    """A map subscription being loaded: authorised, not yet live."""

    started: float
    info: bytes | None = None
    data: bytes | None = None
    expires_at: int = 0
    filter: tags_filter.FilterNode | None = None
    #: The position the first state page was read at.
    epoch: str = ""
    offset: int = 0
    #: The stream top when the stream phase began (-1: not yet).
    stream_start: int = -1


def _timeout(opts: NamespaceOptions) -> float:
    return opts.map.subscribe_catch_up_timeout or 5.0


def _entries(pubs: list[Publication], session: Session, delta: bool) -> list[dict[str, Any]]:
    """Entries or changes as the reply carries them: data as a string for a JSON client
    that negotiated deltas (what it keeps as each key's base)."""
    if delta and not session.encoding.binary:
        return [publication_dict(p, p.data.decode("utf-8", "replace") if p.data else None) for p in pubs]
    return [publication_dict(p) for p in pubs]


def _filtered(pubs: list[Publication], flt: tags_filter.FilterNode | None) -> list[Publication]:
    return pubs if flt is None else [p for p in pubs if flt.match(p.tags)]


async def map_subscribe(
    session: Session, req: SubscribeParams, opts: NamespaceOptions
) -> tuple[dict[str, Any], bool]:
    """One page of a map subscribe; returns the result and whether the subscription is live."""
    channel = req.channel
    loading = session.map_loading.get(channel)
    now = time.monotonic()
    for other, load in list(session.map_loading.items()):
        if other != channel and now - load.started > _timeout(opts):
            del session.map_loading[other]
    if loading is not None and now - loading.started > _timeout(opts):
        del session.map_loading[channel]
        raise codes.disconnect_slow()
    if loading is None or (req.phase == PHASE_STATE and not req.cursor):
        if loading is not None:
            raise codes.error_already_subscribed()
        if req.cursor or (req.phase == PHASE_STREAM and not req.recover):
            raise codes.error_permission_denied()
        if len(session.subs) + len(session.map_loading) >= session.cfg.channel_limit:
            raise codes.error_limit_exceeded()
        params = await session.authorize_subscribe(req, opts)
        flt = None
        if req.tf is not None:
            if not opts.allow_tags_filter:
                raise codes.error_bad_request()
            try:
                flt = tags_filter.parse(req.tf)
            except tags_filter.InvalidFilter:
                raise codes.error_bad_request() from None
        loading = MapLoading(now, params.info, params.data, params.expires_at, flt)
        session.map_loading[channel] = loading
    try:
        if req.phase == PHASE_STATE:
            return await _state_page(session, req, opts, loading)
        if req.phase == PHASE_STREAM:
            return await _stream_page(session, req, opts, loading)
        if req.phase == PHASE_LIVE:
            since = StreamPosition(req.offset, req.epoch)
            return await _go_live(session, req, opts, loading, since, [], recovery=True)
        raise codes.error_bad_request()
    except BaseException:
        if session.map_loading.get(channel) is loading:
            del session.map_loading[channel]
        raise


async def _state_page(
    session: Session, req: SubscribeParams, opts: NamespaceOptions, loading: MapLoading
) -> tuple[dict[str, Any], bool]:
    maps, channel = session.node.maps, req.channel
    limit = opts.map.page_size(req.limit)
    page = await maps.state(channel, req.cursor, limit)
    if req.epoch and req.epoch != page.position.epoch:
        raise codes.error_unrecoverable_position()
    entries = page.entries
    if not req.cursor:
        loading.epoch, loading.offset = page.position.epoch, page.position.offset
    elif req.offset or req.epoch:
        entries = [e for e in entries if e.offset <= req.offset]  # newer ones come from the stream
    entries = _filtered(entries, loading.filter)
    start = StreamPosition(loading.offset, loading.epoch)
    if not page.cursor:
        if map_options(opts).stream_size == 0:
            return await _go_live(session, req, opts, loading, start, entries, recovery=False)
        top = await maps.top(channel)
        if start.offset + limit >= top.offset:
            return await _go_live(session, req, opts, loading, start, entries, recovery=False)
    result = {
        "type": RESULT_TYPE_MAP,
        "phase": PHASE_STATE,
        "cursor": page.cursor,
        "epoch": start.epoch,
        "offset": start.offset,
        "state": _entries(entries, session, _delta(req, opts)),
    }
    return result, False


async def _stream_page(
    session: Session, req: SubscribeParams, opts: NamespaceOptions, loading: MapLoading
) -> tuple[dict[str, Any], bool]:
    maps, channel = session.node.maps, req.channel
    if map_options(opts).stream_size == 0:
        raise codes.error_bad_request()
    if req.epoch and loading.epoch and req.epoch != loading.epoch:
        raise codes.error_unrecoverable_position()
    limit = opts.map.page_size(req.limit)
    if loading.stream_start < 0:
        top = await maps.top(channel)
        if req.epoch and req.epoch != top.epoch:
            raise codes.error_unrecoverable_position()
        loading.stream_start = top.offset
    since = StreamPosition(req.offset, req.epoch)
    if req.offset + limit >= loading.stream_start:
        return await _go_live(session, req, opts, loading, since, [], recovery=True)
    pubs, top = await maps.stream(channel, since, limit)
    offset = pubs[-1].offset if pubs else req.offset
    result = {
        "type": RESULT_TYPE_MAP,
        "phase": PHASE_STREAM,
        "epoch": top.epoch,
        "offset": offset,
        "publications": _entries(_filtered(pubs, loading.filter), session, _delta(req, opts)),
    }
    return result, False


def _delta(req: SubscribeParams, opts: NamespaceOptions) -> bool:
    return req.delta == "fossil" and "fossil" in opts.allowed_delta_types


async def _go_live(
    session: Session,
    req: SubscribeParams,
    opts: NamespaceOptions,
    loading: MapLoading,
    since: StreamPosition,
    state: list[Publication],
    recovery: bool,
) -> tuple[dict[str, Any], bool]:
    node, channel = session.node, req.channel
    delta = _delta(req, opts)
    positioned = map_options(opts).stream_size > 0
    sub = Subscription(
        channel, loading.info, opts.force_push_join_leave or req.join_leave, delta, session.encoding.binary
    )
    sub.tags_filter = loading.filter
    session.subs[channel] = sub
    try:
        await node.add_subscriber(channel, session, sub)
        pubs: list[Publication] = []
        position = since
        if positioned:
            live_limit = opts.map.live_transition_max_publication_limit or opts.map.max_page_size or 1000
            if not since.epoch and (recovery or since.offset):
                raise codes.error_unrecoverable_position()
            pubs, top = await node.maps.stream(channel, since, live_limit + 1)
            if len(pubs) > live_limit:
                raise codes.error_unrecoverable_position()
            position = top
            sub.position_at(top, delta_ready=False)
        elif not position.epoch:
            position = await node.maps.top(channel)
    except BaseException:
        if session.subs.get(channel) is sub:
            del session.subs[channel]
        await node.remove_subscriber(channel, session)
        raise
    session.map_loading.pop(channel, None)
    result: dict[str, Any] = {
        "type": RESULT_TYPE_MAP,
        "phase": PHASE_LIVE,
        "epoch": position.epoch,
        "offset": position.offset,
    }
    if state:
        result["state"] = _entries(state, session, delta)
    pubs = _filtered(pubs, loading.filter)
    if pubs:
        result["publications"] = _entries(pubs, session, delta)
    if delta:
        result["delta"] = True
    if positioned:
        result["recoverable"] = True
        result["positioned"] = True
    if recovery and req.recover:
        result["was_recovering"] = True
        result["recovered"] = True
    if opts.client_publish_debounce_interval:
        result["publish_debounce"] = round(opts.client_publish_debounce_interval * 1000)
    if loading.data is not None:
        result["data"] = orjson.Fragment(loading.data)
    result.update(session.set_sub_expiry(sub, loading.expires_at))
    return result, True
