"""Map channels on the node: a namespace's ``map`` options as the engine takes them, the
operations the server API, the Hub and clients share, and presence kept as maps.

A map namespace (``subscription_type`` ``map``) keeps, per channel, a key -> value state
and (modes ``recoverable`` and ``persistent``) a stream of its changes in the engine
(``livehub.engines.base``, the map part). Its presence can be kept as maps too, as
Centrifugo does: with ``map_clients_presence_channel_prefix: "p:"`` a subscriber of ``ch``
is the entry (key: client id, ``info`` its ClientInfo) of the ``map_clients`` channel
``p:ch`` while it is subscribed; ``map_users_presence_channel_prefix`` keeps one entry
per user (key: user id) that expires ``key_ttl`` after the user's last subscriber left.
Present entries are refreshed every ``client.presence_update_interval`` (:class:`MapPresence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from livehub.engines.base import (
    EngineUnavailable,
    MapKeyLimit,
    MapOptions,
    MapPublish,
    MapStatePage,
    MapUnsupported,
    MapUpdate,
)
from livehub.models import ClientInfo, Publication, StreamPosition
from livehub.protocol import codes
from livehub.protocol.codes import Error
from livehub.settings import NamespaceOptions

if TYPE_CHECKING:
    from livehub.core.node import Node
    from livehub.core.session import Session

log = logging.getLogger("livehub.core.maps")


def map_options(opts: NamespaceOptions) -> MapOptions:
    """The engine's options for a map namespace, with Centrifugo's defaults: a stream of
    100 changes kept a minute for the modes that have one; metadata kept ten stream TTLs
    (at least two key TTLs: it must outlive the keys, whose expiry is a change) when keys
    expire, forever otherwise."""
    m = opts.map
    if m.mode == "ephemeral" or not m.mode:
        return MapOptions(key_ttl=m.key_ttl, stream_size=0, meta_ttl=2 * m.key_ttl, max_keys=m.max_keys)
    stream_ttl = m.stream_ttl or 60.0
    meta_ttl = m.meta_ttl
    if not meta_ttl and m.key_ttl:
        meta_ttl = max(stream_ttl * 10, 2 * m.key_ttl)
    return MapOptions(
        key_ttl=m.key_ttl,
        stream_size=m.stream_size or 100,
        stream_ttl=stream_ttl,
        meta_ttl=meta_ttl,
        max_keys=m.max_keys,
    )


def _engine_error(exc: Exception) -> Error:
    if isinstance(exc, MapKeyLimit):
        return codes.error_limit_exceeded()
    return Error(108, "not available")  # MapUnsupported: the engine keeps no maps


class Maps:
    """The node's map operations: each checks that the channel is in a map namespace."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def options(self, channel: str) -> tuple[NamespaceOptions, MapOptions]:
        opts = self.node.options(channel)
        if not opts.is_map:
            raise codes.error_not_available()
        return opts, map_options(opts)

    async def publish(
        self,
        channel: str,
        key: str,
        data: bytes,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        key_mode: str = "",
        refresh_ttl_on_suppress: bool = False,
    ) -> MapUpdate:
        if not key:
            raise codes.error_bad_request()
        opts, mopts = self.options(channel)
        use_delta = bool(opts.allowed_delta_types) or opts.delta_publish
        pub = MapPublish(data, info, tags or {}, key_mode, refresh_ttl_on_suppress, use_delta)
        try:
            return await self.node.broker.map_publish(channel, key, mopts, pub)
        except (MapKeyLimit, MapUnsupported) as exc:
            raise _engine_error(exc) from None

    async def remove(self, channel: str, key: str) -> MapUpdate:
        if not key:
            raise codes.error_bad_request()
        _, mopts = self.options(channel)
        try:
            return await self.node.broker.map_remove(channel, key, mopts)
        except MapUnsupported as exc:
            raise _engine_error(exc) from None

    async def state(self, channel: str, cursor: str = "", limit: int = 0, key: str = "") -> MapStatePage:
        _, mopts = self.options(channel)
        try:
            return await self.node.broker.map_state(channel, mopts, cursor, limit, key)
        except MapUnsupported as exc:
            raise _engine_error(exc) from None

    async def stream(
        self, channel: str, since: StreamPosition | None = None, limit: int = 0
    ) -> tuple[list[Publication], StreamPosition]:
        """Changes after ``since``; 112 when the stream no longer holds all of them (or has
        a new epoch)."""
        _, mopts = self.options(channel)
        try:
            pubs, top = await self.node.broker.map_stream(channel, mopts, since, limit)
        except MapUnsupported as exc:
            raise _engine_error(exc) from None
        if since is not None:
            if since.epoch and since.epoch != top.epoch:
                raise codes.error_unrecoverable_position()
            first = pubs[0].offset if pubs else top.offset + 1
            if limit != 0 and top.offset > since.offset and first != since.offset + 1:
                raise codes.error_unrecoverable_position()
        return pubs, top

    async def top(self, channel: str) -> StreamPosition:
        _, mopts = self.options(channel)
        try:
            return (await self.node.broker.map_stream(channel, mopts, None, 0))[1]
        except MapUnsupported as exc:
            raise _engine_error(exc) from None

    async def stats(self, channel: str) -> int:
        _, mopts = self.options(channel)
        try:
            return await self.node.broker.map_stats(channel, mopts)
        except MapUnsupported as exc:
            raise _engine_error(exc) from None

    async def clear(self, channel: str) -> None:
        self.options(channel)
        try:
            await self.node.broker.map_clear(channel)
        except MapUnsupported as exc:
            raise _engine_error(exc) from None


class MapPresence:
    """Presence kept as map entries (see the module docstring), for the sessions of a node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._task: asyncio.Task[None] | None = None

    def targets(self, channel: str, opts: NamespaceOptions) -> tuple[str, str]:
        """The clients and users presence channels of ``channel`` ("" for none)."""
        clients = opts.map_clients_presence_channel_prefix
        users = opts.map_users_presence_channel_prefix
        return (clients + channel if clients else "", users + channel if users else "")

    async def add(self, session: Session, channel: str, opts: NamespaceOptions, info: ClientInfo) -> None:
        clients, users = self.targets(channel, opts)
        maps = self.node.maps
        try:
            if clients:
                await maps.publish(
                    clients, session.id, b"", info, key_mode="if_new", refresh_ttl_on_suppress=True
                )
            if users and session.user:
                await maps.publish(users, session.user, b"", key_mode="if_new", refresh_ttl_on_suppress=True)
        except (Error, EngineUnavailable) as exc:
            log.warning("client %s: map presence of %s not added: %s", session.id, channel, exc)

    async def remove(self, session: Session, channel: str, opts: NamespaceOptions) -> None:
        """The client's entry goes at once; the user's expires (a quick reconnect keeps it)."""
        clients, _ = self.targets(channel, opts)
        try:
            if clients:
                await self.node.maps.remove(clients, session.id)
            if opts.is_map and opts.map.remove_client_on_unsubscribe:
                await self.node.maps.remove(channel, session.id)
        except (Error, EngineUnavailable) as exc:
            log.warning("client %s: map presence of %s not removed: %s", session.id, channel, exc)

    async def refresh(self) -> None:
        """Keep every present subscriber's entries alive one more ``key_ttl``."""
        node = self.node
        for channel, subs in node.subscribers():
            try:
                opts = node.options(channel)
            except Error:
                continue
            if not (opts.map_clients_presence_channel_prefix or opts.map_users_presence_channel_prefix):
                continue
            for session, sub in subs:
                if not session.closed:
                    await self.add(session, channel, opts, session.info(sub))

    def start(self, interval: float) -> None:
        if self._task is None and interval > 0:
            self._task = asyncio.create_task(self._loop(interval), name="livehub-map-presence")

    async def _loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("map presence refresh failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
