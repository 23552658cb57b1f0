"""The node: the engine's owner and the local index of who is subscribed to what.

A publication reaches the node once (from its broker) and is encoded once per form it
is sent in — plain, or a fossil delta for subscribers that negotiated it — and the same
string is queued to every local subscriber (``livehub.core.subscription.fan_out``, which also
decides, from each one's stream position, whether it gets it). Fan-out never awaits a
subscriber.

Several nodes on one shared engine (processes, machines) behave as one hub: a command
for a user's connections (``livehub.core.control``, given with ``command``) acts on those of
this node and, through the broker's control channel, of every other (``livehub.core.cluster``);
``info`` lists every live node.
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
from livehub.core.auth import TokenVerifier
from livehub.core.channels import ChannelRules, glob
from livehub.core.cluster import Cluster
from livehub.core.control import ControlCommand, InstantControlCommand, StreamSession
from livehub.core.limits import CommandLimits, ConnectionGate, LocalTokenStore, TokenStore, UserCommandLimits
from livehub.core.maps import MapPresence, Maps
from livehub.core.outbox import Flusher
from livehub.core.shared_poll import SharedPoll, SharedPollHook
from livehub.core.subscription import Subscription, fan_out
from livehub.engines import engine_from_url
from livehub.engines.base import Broker, HistoryOptions, PresenceManager, PublishOptions
from livehub.models import (
    ClientInfo,
    Credentials,
    PresenceStats,
    Prolongation,
    Publication,
    PublishGrant,
    StreamPosition,
    SubscribeGrant,
)
from livehub.protocol import protobuf
from livehub.protocol.codec import encode_push, info_dict
from livehub.protocol.codes import (
    Disconnect,
    Error,
    disconnect_shutdown,
    error_bad_request,
    error_not_available,
    error_unrecoverable_position,
)
from livehub.settings import NamespaceOptions, Settings

if TYPE_CHECKING:
    from livehub.core.proxy_hooks import ProxyHooks
    from livehub.core.session import Session
    from livehub.protocol.commands import ConnectParams

log = logging.getLogger("livehub.core.node")

#: ``handler(session, data) -> result data`` for one RPC method; data is raw JSON bytes.
RPCHandler = Callable[["Session", bytes | None], Awaitable[Any]]
APIRPCHandler = Callable[[bytes | None], Awaitable[Any]]
#: ``hook(session, channel, data) -> True/False`` (or a grant: True with what a subscription
#: token would carry), or None when no app rule covers the channel.
SubscribeHook = Callable[["Session", str, bytes | None], Awaitable[bool | SubscribeGrant | None]]
#: ``hook(session, channel, data) -> data to publish`` (or a grant: the data and how to publish
#: it), or None when no app rule covers it.
PublishHook = Callable[["Session", str, bytes], Awaitable[bytes | PublishGrant | None]]
DisconnectHook = Callable[["Session"], Awaitable[None]]
#: ``hook(scope) -> who the connection is``: resolves a connection from its opening handshake,
#: given as an ASGI ``websocket`` scope (every transport builds one). Credentials let it in;
#: an Error or Disconnect refuses it through the protocol (the reply to ``connect``); None
#: leaves the decision to tokens and the config.
ConnectHook = Callable[[dict[str, Any]], Awaitable["Credentials | Error | Disconnect | None"]]
#: ``hook(session, connect command) -> Credentials``, asked at ``connect`` when the client sent
#: no token and the handshake decided nothing (the connect proxy); raises Error or Disconnect.
ConnectCommandHook = Callable[["Session", "ConnectParams"], Awaitable[Credentials]]
#: ``hook(session) -> Prolongation`` for an expiring connection (the refresh proxy).
RefreshHook = Callable[["Session"], Awaitable[Prolongation]]
#: ``hook(session, channel) -> Prolongation`` for an expiring subscription (sub_refresh proxy).
SubRefreshHook = Callable[["Session", str], Awaitable[Prolongation]]
#: ``handler(session, method, data) -> result data`` for RPC methods no handler serves (the RPC proxy).
RPCFallback = Callable[["Session", str, bytes | None], Awaitable[Any]]


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
        #: Sessions of streaming transports by their stream session id (``Session.stream_session``):
        #: where ``/emulation`` requests and control commands aimed at a session find them.
        self.stream_sessions: dict[str, StreamSession] = {}
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
        #: Set by ``Hub.on_connect``; every transport awaits it (:attr:`upgrade_hook`) before
        #: the session starts, or the session at the ``connect`` command.
        self.connect_hook: ConnectHook | None = None
        #: Hooks the proxies implement (``livehub.core.proxy_hooks``, installed at start).
        self.connect_command_hook: ConnectCommandHook | None = None
        self.refresh_hook: RefreshHook | None = None
        self.sub_refresh_hook: SubRefreshHook | None = None
        self.sub_refresh_enabled: Callable[[str], bool] = lambda channel: False
        self.rpc_proxy: RPCFallback | None = None
        #: Polls the backend for shared poll channels (``Hub.shared_poll`` or the proxy).
        self.shared_poll_hook: SharedPollHook | None = None
        self.shared_poll = SharedPoll(self.settings.shared_poll, lambda: self.shared_poll_hook)
        self.proxy_hooks: ProxyHooks | None = None
        #: Counters for dashboards: publications made through this node, and messages queued to clients.
        self.publications = 0
        self.deliveries = 0
        #: Writes what fan-out and replies queued, once per loop turn, for every session.
        self.flusher = Flusher(self.settings.client.write_delay)
        self.cluster = Cluster(self)
        client = self.settings.client
        #: Admits new connections (``client.connection_limit`` and friends): both transports
        #: ask it at the upgrade, before any app code runs.
        self.gate = ConnectionGate(
            client.connection_limit,
            client.connection_limit_per_ip,
            client.connection_rate_limit,
            time.monotonic(),
        )
        #: ``client.rate_limit.client_command``: each session makes its limiter from it.
        self.command_limits = CommandLimits.from_settings(client.rate_limit.client_command)
        #: Map channels (``livehub.core.maps``): their operations, and presence kept as maps.
        self.maps = Maps(self)
        self.map_presence = MapPresence(self)
        #: ``client.rate_limit.user_command``: buckets per user, in the engine when it keeps them.
        store = self.broker if isinstance(self.broker, TokenStore) else LocalTokenStore()
        self.user_limits = UserCommandLimits.from_settings(client.rate_limit.user_command, store)

    # -- lifecycle

    async def start(self) -> None:
        from livehub.core import proxy_hooks  # the proxies import the node's types

        if self.proxy_hooks is None:
            self.proxy_hooks = proxy_hooks.install(self)
        await self.broker.start(self)
        self.cluster.start()
        self.map_presence.start(self.settings.client.presence_update_interval)

    async def drain(self, grace: float = 5.0) -> None:
        """Ask every client to reconnect (3001) and wait a little for the close frames to go."""
        sessions = list(self.sessions.values())
        for session in sessions:
            session.disconnect(disconnect_shutdown())
        if sessions:
            waiters = [asyncio.ensure_future(s.outbox.wait_closed()) for s in sessions]
            _, late = await asyncio.wait(waiters, timeout=grace)
            for waiter in late:  # stuck sockets: stop waiting for them
                waiter.cancel()

    async def stop(self, grace: float = 5.0) -> None:
        await self.drain(grace)
        await self.shared_poll.close()
        if self.proxy_hooks is not None:
            await self.proxy_hooks.close()
        await self.map_presence.stop()
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

    @property
    def upgrade_hook(self) -> ConnectHook | None:
        """The connect hook a transport awaits at the upgrade: none when the app has none, or
        when it is to see emulated headers (``client.emulated_headers``), which only the
        ``connect`` command brings: the session awaits it then."""
        return None if self.settings.client.emulated_headers else self.connect_hook

    # -- BrokerEventHandler

    def handle_publication(
        self, channel: str, pub: Publication, sp: StreamPosition, prev: Publication | None
    ) -> None:
        subs = self._hub.get(channel)
        if not subs:
            return
        self.flusher.fan_out(lambda: fan_out(channel, subs.items(), pub, sp.epoch, prev))
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
        body = {"info": info_dict(info)}
        text: str | None = None  # each encoding's push made once, when a subscriber needs it
        binary: bytes | None = None
        for session, sub in subs.items():
            if sub.join_leave:
                if sub.binary:
                    if binary is None:
                        binary = protobuf.encode_push(channel, kind, body)
                    session.outbox.put(binary)
                else:
                    if text is None:
                        text = encode_push(channel, kind, body)
                    session.outbox.put(text)

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
        key: str = "",
        idempotent_result_ttl: float = 300.0,
    ) -> StreamPosition:
        """Publish raw JSON ``data``; returns the stream position (0, "" without history).
        ``key`` says what the publication is a value of (see the ``conflate`` channel option)."""
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
                idempotent_result_ttl=idempotent_result_ttl,
                use_delta=bool(opts.allowed_delta_types),
                key=key,
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
            raise error_not_available()
        return await self.broker.history(
            channel, HistoryOptions(limit, since, reverse, history_meta_ttl=opts.history_meta_ttl)
        )

    async def stream_top(self, channel: str, opts: NamespaceOptions) -> StreamPosition:
        if opts.is_map:
            return await self.maps.top(channel)
        _, sp = await self.broker.history(channel, HistoryOptions(0, history_meta_ttl=opts.history_meta_ttl))
        return sp

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        if not self.options(channel).presence:
            raise error_not_available()
        return await self.presence_manager.presence(channel)

    async def presence_stats(self, channel: str) -> PresenceStats:
        if not self.options(channel).presence:
            raise error_not_available()
        return await self.presence_manager.presence_stats(channel)

    def rpc(self, method: str) -> Callable[[RPCHandler], RPCHandler]:
        """Register an RPC handler: ``@node.rpc("name") async def f(session, data): ...``."""

        def register(handler: RPCHandler) -> RPCHandler:
            self.rpc_handlers[method] = handler
            return handler

        return register

    async def call_rpc(self, session: Session, method: str, data: bytes | None) -> Any:
        handler = self.rpc_handlers.get(method)
        if handler is not None:
            return await handler(session, data)
        if self.rpc_proxy is not None:
            return await self.rpc_proxy(session, method, data)
        if not self.rpc_handlers:
            raise error_not_available()
        raise Error(104, "method not found")

    # -- commands for connections on any node (used by the HTTP API and the Hub)

    async def command(self, cmd: ControlCommand) -> int:
        """Apply ``cmd`` to this node's connections, then send it to every other node unless
        it was aimed at one client found here. Waits until it is sent, so the caller knows it
        went (EngineUnavailable if it cannot go); returns how many connections were here."""
        found = await cmd.apply(self)
        if cmd.target.elsewhere(found):
            await self.cluster.send(cmd.kind, **cmd.to_wire())
        return found

    def command_soon(self, cmd: InstantControlCommand) -> int:
        """``command`` for callers that cannot wait: here at once, on the other nodes soon
        after (sent in the background; a failure is logged); returns how many were here."""
        found = cmd.apply_now(self)
        if cmd.target.elsewhere(found):
            self.cluster.send_soon(cmd.kind, **cmd.to_wire())
        return found

    # -- reads and registrations of the server API

    async def server_history(
        self, channel: str, limit: int = 0, since: StreamPosition | None = None, reverse: bool = False
    ) -> tuple[list[Publication], StreamPosition]:
        """History as the server API reads it: no publication cap, a stale ``since.epoch`` is 112."""
        if reverse and since is not None and since.offset == 0:
            self.options(channel)
            raise error_bad_request()
        pubs, sp = await self.history(channel, limit, since, reverse)
        if since is not None and since.epoch and since.epoch != sp.epoch:
            raise error_unrecoverable_position()
        return pubs, sp

    async def remove_history(self, channel: str) -> None:
        if not self.options(channel).history_enabled:
            raise error_not_available()
        await self.broker.remove_history(channel)

    def channels_matching(self, pattern: str = "") -> dict[str, int]:
        """Channels with subscribers on this node and how many, filtered by a glob pattern
        (Centrifugo's syntax: ``livehub.core.channels.glob``)."""
        channels = self.channels()
        if not pattern:
            return channels
        matches = glob(pattern)
        return {name: n for name, n in channels.items() if matches(name)}

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
            raise error_not_available()
        handler = handlers.get(method)
        if handler is None:
            raise Error(104, "not found")
        return await handler(params)
