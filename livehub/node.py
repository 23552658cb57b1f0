"""The node: the engine's owner and the local index of who is subscribed to what.

A publication reaches the node once (from its broker) and is encoded once per form it
is sent in — plain, or a fossil delta for subscribers that negotiated it — and the same
string is queued to every local subscriber. Fan-out never awaits a subscriber.

Several nodes on one shared engine (processes, machines) behave as one hub: the
``server_*`` operations act on the connections of this node and, through the broker's
control channel, of every other (``livehub.cluster``); ``info`` lists every live node.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from livehub import __version__
from livehub.auth import TokenVerifier
from livehub.channels import ChannelRules
from livehub.cluster import Cluster
from livehub.engines import engine_from_url
from livehub.engines.base import Broker, HistoryOptions, PresenceManager, PublishOptions
from livehub.models import ClientInfo, PresenceStats, Publication, StreamPosition
from livehub.protocol import fossil
from livehub.protocol.codec import encode_publication, encode_push, info_dict
from livehub.protocol.codes import DISCONNECT_SHUTDOWN, ERROR_NOT_AVAILABLE, Disconnect, Error
from livehub.settings import NamespaceOptions, Settings

if TYPE_CHECKING:
    from livehub.session import Session, Subscription

log = logging.getLogger("livehub.node")

#: ``handler(session, data) -> result data`` for one RPC method; data is raw JSON bytes.
RPCHandler = Callable[["Session", bytes | None], Awaitable[Any]]
APIRPCHandler = Callable[[bytes | None], Awaitable[Any]]
#: ``hook(session, channel, data) -> True/False``, or None when no app rule covers the channel.
SubscribeHook = Callable[["Session", str, bytes | None], Awaitable[bool | None]]
#: ``hook(session, channel, data) -> data to publish``, or None when no app rule covers it.
PublishHook = Callable[["Session", str, bytes], Awaitable[bytes | None]]
DisconnectHook = Callable[["Session"], Awaitable[None]]


def _delta_frame(channel: str, prev: Publication, pub: Publication) -> str:
    """The publication as a fossil delta against the previous one, or "" if that does not pay.

    In JSON mode the SDKs read ``data`` as a string and UTF-8-encode it before applying
    the delta, so a delta whose literal parts split a multi-byte character cannot be sent.
    """
    patch = fossil.create_delta(prev.data, pub.data)
    if len(patch) >= len(pub.data):
        return ""
    try:
        text = patch.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return encode_publication(channel, pub, text, delta=True)


class Node:
    def __init__(
        self,
        settings: Settings | None = None,
        broker: Broker | None = None,
        presence: PresenceManager | None = None,
    ) -> None:
        self.settings = settings or Settings()
        if broker is None or presence is None:
            default_broker, default_presence = engine_from_url(self.settings.engine.url)
            broker = broker or default_broker
            presence = presence or default_presence
        self.broker: Broker = broker
        self.presence_manager: PresenceManager = presence
        self.rules = ChannelRules(self.settings)
        token = self.settings.client.token
        self.connect_verifier = TokenVerifier(token, token.audience, token.issuer)
        sub_token = self.settings.client.subscription_token
        self.subscribe_verifier = (
            TokenVerifier(sub_token, token.audience, token.issuer)
            if sub_token.enabled
            else self.connect_verifier
        )
        self.id = str(uuid.uuid4())
        #: How ``info`` names this node; ``livehub serve`` makes it ``host_port``.
        self.name = socket.gethostname()
        self.version = __version__
        self.started_at = time.time()
        self.sessions: dict[str, Session] = {}
        self.users: dict[str, set[Session]] = {}
        self._hub: dict[str, dict[Session, Subscription]] = {}
        self.rpc_handlers: dict[str, RPCHandler] = {}
        #: Server API RPC methods (``POST /api/rpc``): ``handler(params) -> result``, no client
        #: involved, kept apart from client RPC as Centrifugo keeps its API extensions apart.
        self.api_rpc_handlers: dict[str, APIRPCHandler] = {}
        #: Checks (and may normalise) data published to a channel, from clients and the server
        #: alike; set by ``livehub.Hub`` for typed channels. Raises Error for bad data.
        self.data_validator: Callable[[str, bytes], bytes] | None = None
        #: App callbacks (set by ``livehub.Hub``); a hook answering None leaves the decision
        #: to the configuration, so apps only decide for the channels they care about.
        self.subscribe_hook: SubscribeHook | None = None
        self.publish_hook: PublishHook | None = None
        self.disconnect_hook: DisconnectHook | None = None
        #: Counters for dashboards: publications made through this node, and messages queued to clients.
        self.publications = 0
        self.deliveries = 0
        self.cluster = Cluster(self)

    # -- lifecycle

    async def start(self) -> None:
        await self.broker.start(self)
        self.cluster.start()

    async def drain(self, grace: float = 5.0) -> None:
        """Ask every client to reconnect (3001) and wait a little for the close frames to go."""
        sessions = list(self.sessions.values())
        for session in sessions:
            session.disconnect(DISCONNECT_SHUTDOWN)
        if sessions:
            await asyncio.wait(
                [asyncio.ensure_future(s.outbox.wait_closed()) for s in sessions], timeout=grace
            )

    async def stop(self, grace: float = 5.0) -> None:
        await self.drain(grace)
        await self.cluster.stop()
        await self.broker.close()
        await self.presence_manager.close()

    # -- sessions

    def add_session(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.users.setdefault(session.user, set()).add(session)

    def remove_session(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        same_user = self.users.get(session.user)
        if same_user is not None:
            same_user.discard(session)
            if not same_user:
                del self.users[session.user]

    # -- local subscriptions

    async def add_subscriber(self, channel: str, session: Session, sub: Subscription) -> None:
        subs = self._hub.get(channel)
        if subs is None:
            subs = self._hub[channel] = {}
            subs[session] = sub
            await self.broker.subscribe(channel)
        else:
            subs[session] = sub

    async def remove_subscriber(self, channel: str, session: Session) -> None:
        subs = self._hub.get(channel)
        if subs is None or subs.pop(session, None) is None:
            return
        if not subs:
            del self._hub[channel]
            await self.broker.unsubscribe(channel)

    def channels(self) -> dict[str, int]:
        """Channels with local subscribers, and how many."""
        return {channel: len(subs) for channel, subs in self._hub.items()}

    def subscribers(self) -> list[tuple[str, list[tuple[Session, Subscription]]]]:
        """A snapshot of every channel's local subscribers."""
        return [(channel, list(subs.items())) for channel, subs in self._hub.items()]

    def channel_subscribers(self, channel: str) -> list[tuple[Session, Subscription]]:
        return list(self._hub.get(channel, {}).items())

    # -- BrokerEventHandler

    def handle_publication(
        self, channel: str, pub: Publication, sp: StreamPosition, prev: Publication | None
    ) -> None:
        subs = self._hub.get(channel)
        if not subs:
            return
        plain = full_string = delta = None
        for session, sub in list(subs.items()):
            if sub.pending is not None:
                sub.pending.append((pub, sp.epoch))
                continue
            if sub.lost:
                continue  # being unsubscribed with 2500
            if pub.offset and sub.positioned:
                if sub.epoch and sp.epoch != sub.epoch:  # the stream was lost and began again
                    session.lost_position(channel)
                    continue
                if pub.offset != sub.offset + 1:
                    if pub.offset <= sub.offset:
                        continue  # already delivered through recovery
                    session.lost_position(channel)
                    continue
            if sub.delta:
                if sub.delta_ready and prev is not None and prev.offset == sub.offset:
                    if delta is None:
                        delta = _delta_frame(channel, prev, pub)
                    if delta:
                        session.outbox.put(delta)
                        sub.offset = pub.offset
                        continue
                if full_string is None:
                    full_string = encode_publication(channel, pub, pub.data.decode())
                session.outbox.put(full_string)
                sub.delta_ready = True
            else:
                if plain is None:
                    plain = encode_publication(channel, pub)
                session.outbox.put(plain)
            if pub.offset or not sub.positioned:
                sub.offset = pub.offset
            else:  # published without history: outside the stream, so no position, and not a delta base
                sub.delta_ready = False
        self.deliveries += len(subs)

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        self._push_join_leave(channel, "join", info)

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        self._push_join_leave(channel, "leave", info)

    def handle_control(self, data: bytes) -> None:
        self.cluster.handle(data)

    def _push_join_leave(self, channel: str, kind: str, info: ClientInfo) -> None:
        subs = self._hub.get(channel)
        if not subs:
            return
        message = encode_push(channel, kind, {"info": info_dict(info)})
        for session, sub in subs.items():
            if sub.join_leave:
                session.outbox.put(message)

    # -- operations shared by clients, the server API and the app

    def options(self, channel: str) -> NamespaceOptions:
        return self.rules.options(channel)

    async def publish(
        self,
        channel: str,
        data: bytes,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str = "",
        skip_history: bool = False,
    ) -> StreamPosition:
        """Publish raw JSON ``data``; returns the stream position (0, "" without history)."""
        opts = self.options(channel)
        if self.data_validator is not None:
            data = self.data_validator(channel, data)
        history = opts.history_enabled and not skip_history
        self.publications += 1
        sp, _ = await self.broker.publish(
            channel,
            data,
            PublishOptions(
                history_size=opts.history_size if history else 0,
                history_ttl=opts.history_ttl if history else 0.0,
                history_meta_ttl=opts.history_meta_ttl,
                info=info,
                tags=tags or {},
                idempotency_key=idempotency_key,
                use_delta=bool(opts.allowed_delta_types),
            ),
        )
        return sp

    async def publish_json(self, channel: str, value: Any, **kwargs: Any) -> StreamPosition:
        return await self.publish(channel, orjson.dumps(value), **kwargs)

    async def history(
        self, channel: str, limit: int = 0, since: StreamPosition | None = None, reverse: bool = False
    ) -> tuple[list[Publication], StreamPosition]:
        opts = self.options(channel)
        if not opts.history_enabled:
            raise ERROR_NOT_AVAILABLE
        return await self.broker.history(
            channel, HistoryOptions(limit, since, reverse, history_meta_ttl=opts.history_meta_ttl)
        )

    async def stream_top(self, channel: str, opts: NamespaceOptions) -> StreamPosition:
        _, sp = await self.broker.history(channel, HistoryOptions(0, history_meta_ttl=opts.history_meta_ttl))
        return sp

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        if not self.options(channel).presence:
            raise ERROR_NOT_AVAILABLE
        return await self.presence_manager.presence(channel)

    async def presence_stats(self, channel: str) -> PresenceStats:
        if not self.options(channel).presence:
            raise ERROR_NOT_AVAILABLE
        return await self.presence_manager.presence_stats(channel)

    def rpc(self, method: str) -> Callable[[RPCHandler], RPCHandler]:
        """Register an RPC handler: ``@node.rpc("name") async def f(session, data): ...``."""

        def register(handler: RPCHandler) -> RPCHandler:
            self.rpc_handlers[method] = handler
            return handler

        return register

    async def call_rpc(self, session: Session, method: str, data: bytes | None) -> Any:
        if not self.rpc_handlers:
            raise ERROR_NOT_AVAILABLE
        handler = self.rpc_handlers.get(method)
        if handler is None:
            raise Error(104, "method not found")
        return await handler(session, data)

    # -- server API operations (used by the HTTP API and the Hub)
    #
    # Connections are picked as Centrifuge's hub does: every connection of ``user`` ("" is
    # the anonymous ones), narrowed by ``client`` id; ``session`` ids exist only for
    # unidirectional transports, so over WebSocket a non-empty ``session`` matches nothing.
    # ``all_users`` with an empty user picks every connection.
    #
    # Each operation acts on this node's connections (``local_*``), then asks every other
    # node to do the same through the control channel, unless it was aimed at one
    # ``client`` found here. The async ones wait until the request is sent (and raise
    # EngineUnavailable if it cannot be); the sync ones send it in the background.

    def select_sessions(
        self, user: str, client: str = "", session: str = "", all_users: bool = False
    ) -> list[Session]:
        if session:
            return []
        if client:
            found = self.sessions.get(client)
            matches = found is not None and (found.user == user or (all_users and not user))
            return [found] if found is not None and matches else []
        if all_users and not user:
            return list(self.sessions.values())
        return list(self.users.get(user, ()))

    @staticmethod
    def _elsewhere(client: str, session: str, found: int) -> bool:
        """May other nodes hold more of the targeted connections?"""
        return not session and not (client and found)

    async def server_subscribe(
        self,
        user: str,
        channel: str,
        *,
        client: str = "",
        session: str = "",
        all_users: bool = False,
        info: bytes | None = None,
        data: bytes | None = None,
        expire_at: int = 0,
        recover_since: StreamPosition | None = None,
        push_join_leave: bool | None = None,
        force_recovery: bool | None = None,
        force_positioning: bool | None = None,
    ) -> None:
        """Subscribe the user's connections server-side, on every node; each gets a
        ``subscribe`` push. Connections already in the channel are left as they are. The
        override flags replace the namespace's ``force_push_join_leave``,
        ``force_recovery``, ``force_positioning``."""
        found = await self.local_subscribe(
            user,
            channel,
            client=client,
            session=session,
            all_users=all_users,
            info=info,
            data=data,
            expire_at=expire_at,
            recover_since=recover_since,
            push_join_leave=push_join_leave,
            force_recovery=force_recovery,
            force_positioning=force_positioning,
        )
        if self._elsewhere(client, session, found):
            overrides = {
                "force_push_join_leave": push_join_leave,
                "force_recovery": force_recovery,
                "force_positioning": force_positioning,
            }
            await self.cluster.send(
                "subscribe",
                user=user,
                channel=channel,
                client=client,
                all_users=all_users,
                info=None if info is None else info.decode(),
                data=None if data is None else data.decode(),
                expire_at=expire_at,
                since=None if recover_since is None else [recover_since.offset, recover_since.epoch],
                overrides={k: v for k, v in overrides.items() if v is not None},
            )

    async def local_subscribe(
        self,
        user: str,
        channel: str,
        *,
        client: str = "",
        session: str = "",
        all_users: bool = False,
        info: bytes | None = None,
        data: bytes | None = None,
        expire_at: int = 0,
        recover_since: StreamPosition | None = None,
        push_join_leave: bool | None = None,
        force_recovery: bool | None = None,
        force_positioning: bool | None = None,
    ) -> int:
        """``server_subscribe`` on this node only; returns how many connections it targeted."""
        opts = self.options(channel)
        overrides = {
            "force_push_join_leave": push_join_leave,
            "force_recovery": force_recovery,
            "force_positioning": force_positioning,
        }
        update = {name: value for name, value in overrides.items() if value is not None}
        if update:
            opts = opts.model_copy(update=update)
        targets = self.select_sessions(user, client, session, all_users)
        await asyncio.gather(
            *(
                s.server_subscribe(
                    channel, opts, info=info, data=data, expire_at=expire_at, recover_since=recover_since
                )
                for s in targets
            )
        )
        return len(targets)

    async def server_unsubscribe(
        self, user: str, channel: str, client: str = "", session: str = "", all_users: bool = False
    ) -> None:
        """Unsubscribe the user's connections on every node (``unsubscribe`` push, code
        2000); "" is every channel."""
        found = await self.local_unsubscribe(user, channel, client, session, all_users)
        if self._elsewhere(client, session, found):
            await self.cluster.send(
                "unsubscribe", user=user, channel=channel, client=client, all_users=all_users
            )

    async def local_unsubscribe(
        self, user: str, channel: str, client: str = "", session: str = "", all_users: bool = False
    ) -> int:
        if channel:
            self.options(channel)
        targets = self.select_sessions(user, client, session, all_users)
        for s in targets:
            for name in [channel] if channel else list(s.subs):
                await s.server_unsubscribe(name)
        return len(targets)

    def server_disconnect(
        self,
        user: str,
        disconnect: Disconnect | None = None,
        client: str = "",
        session: str = "",
        whitelist: list[str] | None = None,
        all_users: bool = False,
    ) -> int:
        """Close the user's connections (but those in ``whitelist``) on this node at once
        and on the others soon after; returns how many there were on this node.

        The default is 3503 "force disconnect": the SDKs do not reconnect.
        """
        found = self.local_disconnect(user, disconnect, client, session, whitelist, all_users)
        if self._elsewhere(client, session, found):
            self.cluster.send_soon(
                "disconnect", **self._disconnect_fields(user, disconnect, client, whitelist, all_users)
            )
        return found

    async def disconnect_user(
        self,
        user: str,
        disconnect: Disconnect | None = None,
        client: str = "",
        session: str = "",
        whitelist: list[str] | None = None,
        all_users: bool = False,
    ) -> int:
        """``server_disconnect`` that waits until the other nodes were told (raises
        EngineUnavailable if they cannot be); returns how many were on this node."""
        found = self.local_disconnect(user, disconnect, client, session, whitelist, all_users)
        if self._elsewhere(client, session, found):
            await self.cluster.send(
                "disconnect", **self._disconnect_fields(user, disconnect, client, whitelist, all_users)
            )
        return found

    @staticmethod
    def _disconnect_fields(
        user: str, disconnect: Disconnect | None, client: str, whitelist: list[str] | None, all_users: bool
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"user": user, "client": client, "all_users": all_users}
        if whitelist:
            fields["whitelist"] = whitelist
        if disconnect is not None:
            fields.update(code=disconnect.code, reason=disconnect.reason)
        return fields

    def local_disconnect(
        self,
        user: str,
        disconnect: Disconnect | None = None,
        client: str = "",
        session: str = "",
        whitelist: list[str] | None = None,
        all_users: bool = False,
    ) -> int:
        from livehub.protocol.codes import DISCONNECT_FORCE_NO_RECONNECT

        disconnect = disconnect or DISCONNECT_FORCE_NO_RECONNECT
        keep = set(whitelist or ())
        targets = [s for s in self.select_sessions(user, client, session, all_users) if s.id not in keep]
        for s in targets:
            s.disconnect(disconnect)
        return len(targets)

    def server_refresh(
        self,
        user: str,
        client: str = "",
        session: str = "",
        expired: bool = False,
        expire_at: int = 0,
        info: bytes | None = None,
        all_users: bool = False,
    ) -> None:
        """Extend (``expire_at``), end (``expired``) or lift (neither) the connections'
        expiry, here at once and on the other nodes soon after."""
        found = self.local_refresh(user, client, session, expired, expire_at, info, all_users)
        if self._elsewhere(client, session, found):
            self.cluster.send_soon(
                "refresh", **self._refresh_fields(user, client, expired, expire_at, info, all_users)
            )

    async def refresh_user(
        self,
        user: str,
        client: str = "",
        session: str = "",
        expired: bool = False,
        expire_at: int = 0,
        info: bytes | None = None,
        all_users: bool = False,
    ) -> None:
        """``server_refresh`` that waits until the other nodes were told."""
        found = self.local_refresh(user, client, session, expired, expire_at, info, all_users)
        if self._elsewhere(client, session, found):
            await self.cluster.send(
                "refresh", **self._refresh_fields(user, client, expired, expire_at, info, all_users)
            )

    @staticmethod
    def _refresh_fields(
        user: str, client: str, expired: bool, expire_at: int, info: bytes | None, all_users: bool
    ) -> dict[str, Any]:
        return {
            "user": user,
            "client": client,
            "all_users": all_users,
            "expired": expired,
            "expire_at": expire_at,
            "info": None if info is None else info.decode(),
        }

    def local_refresh(
        self,
        user: str,
        client: str = "",
        session: str = "",
        expired: bool = False,
        expire_at: int = 0,
        info: bytes | None = None,
        all_users: bool = False,
    ) -> int:
        targets = self.select_sessions(user, client, session, all_users)
        for s in targets:
            s.server_refresh(expired=expired, expire_at=expire_at, info=info)
        return len(targets)

    async def server_history(
        self, channel: str, limit: int = 0, since: StreamPosition | None = None, reverse: bool = False
    ) -> tuple[list[Publication], StreamPosition]:
        """History as the server API reads it: no publication cap, a stale ``since.epoch`` is 112."""
        from livehub.protocol.codes import ERROR_BAD_REQUEST, ERROR_UNRECOVERABLE_POSITION

        if reverse and since is not None and since.offset == 0:
            self.options(channel)
            raise ERROR_BAD_REQUEST
        pubs, sp = await self.history(channel, limit, since, reverse)
        if since is not None and since.epoch and since.epoch != sp.epoch:
            raise ERROR_UNRECOVERABLE_POSITION
        return pubs, sp

    async def remove_history(self, channel: str) -> None:
        if not self.options(channel).history_enabled:
            raise ERROR_NOT_AVAILABLE
        await self.broker.remove_history(channel)

    def channels_matching(self, pattern: str = "") -> dict[str, int]:
        """Channels with subscribers on this node and how many, filtered by a glob pattern.

        The pattern syntax is Centrifugo's (gobwas/glob): ``*``, ``?``, ``[a-z]``, ``[!a]``,
        ``{a,b}`` and ``\\`` to escape; ``*`` also matches ``:`` and ``#``.
        """
        channels = self.channels()
        if not pattern:
            return channels
        matches = self._glob(pattern)
        return {name: n for name, n in channels.items() if matches(name)}

    @staticmethod
    def _glob(pattern: str) -> Callable[[str], bool]:
        import re

        out: list[str] = []
        depth = 0
        i = 0
        while i < len(pattern):
            c = pattern[i]
            if c == "\\" and i + 1 < len(pattern):
                i += 1
                out.append(re.escape(pattern[i]))
            elif c == "*":
                out.append(".*")
            elif c == "?":
                out.append(".")
            elif c == "[" and "]" in pattern[i + 2 :]:
                end = pattern.index("]", i + 2)
                body = pattern[i + 1 : end]
                negate = body.startswith("!")
                body = body[1:] if negate else body
                out.append(
                    "[" + ("^" if negate else "") + body.replace("\\", "\\\\").replace("[", "\\[") + "]"
                )
                i = end
            elif c == "{":
                depth += 1
                out.append("(?:")
            elif c == "}" and depth:
                depth -= 1
                out.append(")")
            elif c == "," and depth:
                out.append("|")
            else:
                out.append(re.escape(c))
            i += 1
        regex = re.compile(re.escape(pattern) if depth else "".join(out), re.DOTALL)  # unclosed "{": literal
        return lambda name: regex.fullmatch(name) is not None

    def node_info(self) -> dict[str, Any]:
        """This node as the server API's ``info`` lists it (Centrifugo field names)."""
        channels = self.channels()
        out: dict[str, Any] = {
            "uid": self.id,
            "name": self.name,
            "version": self.version,
            "num_clients": len(self.sessions),
            "num_users": len(self.users),
            "num_subs": sum(channels.values()),
            "num_channels": len(channels),
        }
        uptime = int(time.time() - self.started_at)
        if uptime:
            out["uptime"] = uptime
        return out

    def nodes_info(self) -> list[dict[str, Any]]:
        """Every live node of the cluster (this one included), as ``info`` lists them."""
        return self.cluster.nodes()

    def api_rpc(self, method: str) -> Callable[[APIRPCHandler], APIRPCHandler]:
        """Register a server API RPC method: ``@node.api_rpc("name") async def f(params): ...``.

        ``params`` is raw JSON bytes (None if absent); the result is JSON-serialisable, raw
        JSON bytes, or None. Raise :class:`Error` to answer with an error.
        """

        def register(handler: APIRPCHandler) -> APIRPCHandler:
            self.api_rpc_handlers[method] = handler
            return handler

        return register

    async def call_api_rpc(self, method: str, params: bytes | None) -> Any:
        """108 if no API RPC method is registered at all, 104 for an unknown one."""
        handlers = self.api_rpc_handlers
        if not handlers:
            raise ERROR_NOT_AVAILABLE
        handler = handlers.get(method)
        if handler is None:
            raise Error(104, "not found")
        return await handler(params)
