"""One client connection: its identity, subscriptions, timers and command handling.

The session owns its socket through an :class:`Outbox`, so nothing else ever writes to
the socket directly, and the order of replies and pushes on the wire is the order in
which they were queued. Commands of one connection are handled one at a time, in order.
Protocol errors become error replies or close codes; they never escape as exceptions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import orjson

from livehub import metrics
from livehub.core.auth import InvalidToken, SubscribeToken, TokenExpired
from livehub.core.clock import Clock, LoopClock, Timer
from livehub.core.headers import emulated_scope
from livehub.core.limits import FloodGuard
from livehub.core.map_subscribe import MapLoading, map_subscribe
from livehub.core.node import Node
from livehub.core.outbox import Outbox, Transport
from livehub.core.subscribe import SubscribeOptions, subscribe
from livehub.core.subscription import Subscription, release
from livehub.engines.base import EngineUnavailable, HistoryOptions
from livehub.models import (
    ClientInfo,
    Credentials,
    Prolongation,
    PublishGrant,
    StreamPosition,
    SubscribeGrant,
)
from livehub.protocol import codes
from livehub.protocol.codec import info_dict
from livehub.protocol.codec import publication_dict as pub_dict
from livehub.protocol.codes import Disconnect, Error
from livehub.protocol.commands import (
    FLAG_REJECT_UNRECOVERED,
    PUBLISH_TYPE_MAP,
    SUB_REFRESH_TRACK,
    SUB_REFRESH_UNTRACK,
    SUBSCRIPTION_TYPE_SHARED_POLL,
    ChannelParams,
    ClientCommand,
    ConnectParams,
    HistoryParams,
    PublishParams,
    Recovery,
    RefreshParams,
    RPCParams,
    SendParams,
    SubRefreshParams,
    SubscribeParams,
)
from livehub.protocol.encoding import JSON, Encoding
from livehub.settings import NamespaceOptions

if TYPE_CHECKING:
    from livehub.client import Client

log = logging.getLogger("livehub.core.session")

#: Commands answered by a ``_cmd_<name>`` method once connected.
_HANDLED = frozenset(
    {"unsubscribe", "publish", "presence", "presence_stats", "history", "rpc", "refresh", "sub_refresh"}
)


class SessionState(enum.Enum):
    """Where a connection is in its life. Closing is the outbox's to know (it closes itself
    when the client is too slow): see :attr:`Session.closing`."""

    #: Waiting for the ``connect`` command.
    CONNECTING = "connecting"
    #: ``connect`` was answered with an error: the next command closes the connection (3501).
    REFUSED = "refused"
    CONNECTED = "connected"
    #: :meth:`Session.cleanup` ran: out of every channel, forgotten by the node.
    CLOSED = "closed"


class Session:
    __slots__ = (
        "node", "cfg", "id", "user", "conn_info", "name", "subs", "outbox", "state",
        "credentials", "scope", "handle", "encoding", "_expires_at", "_clock", "_timers", "_tasks", "_joins",
        "_limiter", "_user_flood", "meta", "map_loading", "stream_session",
        "unidirectional", "transport_name",
    )  # fmt: skip

    def __init__(
        self,
        node: Node,
        transport: Transport,
        credentials: Credentials | Error | Disconnect | None = None,
        scope: dict[str, Any] | None = None,
        clock: Clock | None = None,
        encoding: Encoding = JSON,
        *,
        unidirectional: bool = False,
        transport_name: str = "websocket",
    ) -> None:
        cfg = node.settings.client
        self.node = node
        self.cfg = cfg
        self.id = str(uuid.uuid4())
        self.user = ""
        self.conn_info: bytes | None = None
        #: The server's data about the connection, never sent to it (the connect proxy's ``meta``).
        self.meta: bytes | None = None
        self.name = ""
        self.subs: dict[str, Subscription] = {}
        #: JSON or Protobuf, negotiated at the handshake: every reply and push is encoded with it.
        self.encoding = encoding
        self.outbox = Outbox(
            transport, cfg.queue_max_size, cfg.write_batch_size, node.flusher, encoding.join_frame
        )
        self.state = SessionState.CONNECTING
        self._expires_at = 0
        #: Time and timers (ping, pong, stale, expiry): the loop's, unless a test drives them.
        self._clock = clock or LoopClock()
        self._timers: dict[str, Timer] = {}
        #: Tasks this session started (unsubscribe pushes), until they are done.
        self._tasks: set[asyncio.Task[None]] = set()
        self._joins: list[str] = []
        #: From the app's connect hook, resolved at the HTTP upgrade; a JWT in ``connect`` wins.
        self.credentials = credentials
        #: The opening handshake as an ASGI ``websocket`` scope (headers, cookies, query, client
        #: address), when the transport has one: what the app's dependencies read.
        self.scope = scope
        #: The app's handle on this connection (``livehub.client.Client``), made on first use.
        self.handle: Client | None = None
        #: Command rate limits (``client.rate_limit.client_command``); None when not configured.
        self._limiter = node.command_limits.limiter(time.monotonic())
        #: Map subscriptions being loaded (state and stream pages): ``livehub.core.map_subscribe``.
        self.map_loading: dict[str, MapLoading] = {}
        #: Refusals by ``client.rate_limit.user_command`` (per second, for the 3013 close).
        self._user_flood = FloodGuard(node.user_limits.limits.flood_limit, time.monotonic())
        #: The id a streaming transport's further commands (``/emulation``) name this session
        #: by, secret unlike ``id``; sent with the node's id in the connect reply. "": none.
        self.stream_session = ""
        #: The client only receives (uni_websocket, uni_sse, uni_http_stream): its one command
        #: is ``connect``, answered by a ``connect`` push; a refusal closes the connection with
        #: the matching disconnect code, server pings need no pong, and a server-side
        #: subscription that loses its position closes it (3010): it cannot resubscribe.
        self.unidirectional = unidirectional
        #: How the client came ("websocket", "uni_sse", ...): ``Client.transport``.
        self.transport_name = transport_name

    # -- lifecycle

    def start(self) -> None:
        self._timer("stale", self.cfg.stale_close_delay, self._on_stale)

    def _timer(self, name: str, delay: float, callback: Callable[[], object] | None) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        if delay > 0 and callback is not None and not self.closed:
            self._timers[name] = self._clock.call_later(delay, callback)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in a task this session owns (see :meth:`cleanup`)."""
        if self.closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("client %s: a background task failed", self.id, exc_info=exc)

    def disconnect(self, disconnect: Disconnect) -> None:
        """Close after what is already queued has gone out (a slow client gets nothing more)."""
        metrics.server_disconnect(disconnect.code)
        self.outbox.close(disconnect)

    @property
    def connected(self) -> bool:
        """The connect command succeeded (and the session is not closed yet)."""
        return self.state is SessionState.CONNECTED

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    @property
    def closing(self) -> bool:
        """Nothing more is read: a close is queued (by the session, or by the outbox of a
        slow client), or the session is closed."""
        return self.outbox.close_with is not None or self.state is SessionState.CLOSED

    async def cleanup(self) -> None:
        """The connection is over: leave every channel and forget the session. Runs once.

        Its tasks that have not begun are cancelled (their channels are left here); one in
        the middle of leaving a channel is waited for, since cancelling it there would leave
        the engine half told (a broker subscription, a presence entry).
        """
        if self.closed:
            return
        was_connected = self.connected
        self.state = SessionState.CLOSED
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for sub in self.subs.values():
            sub.set_expiry(None)
        running = []
        for task in list(self._tasks):
            coro = task.get_coro()
            if isinstance(coro, Coroutine) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                task.cancel()
            else:
                running.append(task)
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        self.map_loading.clear()
        for channel in list(self.subs):
            await self._unsubscribe(channel)
        self.node.remove_session(self)
        hook = self.node.disconnect_hook
        if hook is not None and was_connected:
            try:
                await hook(self)
            except Exception:
                log.exception("disconnect hook failed for client %s", self.id)

    def info(self, sub: Subscription | None = None) -> ClientInfo:
        return ClientInfo(self.user, self.id, self.conn_info, sub.info if sub is not None else None)

    # -- timers

    def _on_stale(self) -> None:
        if not self.connected:
            self.disconnect(codes.disconnect_stale())

    def _on_ping(self) -> None:
        self.outbox.put(self.encoding.ping)
        if not self.unidirectional:
            self._timer("pong", self.cfg.pong_timeout, self._on_no_pong)
        self._timer("ping", self.cfg.ping_interval, self._on_ping)

    def _on_no_pong(self) -> None:
        self.disconnect(codes.disconnect_no_pong())

    def _on_expired(self) -> None:
        if not self._expires_at:
            return
        remaining = self._expires_at - self._clock.time()
        if self.node.refresh_hook is not None:  # the refresh proxy is asked at the expiry itself
            if remaining > 0:
                self._timer("expire", remaining, self._on_expired)
            else:
                self._spawn(self._refresh_by_hook())
            return
        if remaining <= 0:
            self.disconnect(codes.disconnect_expired())

    async def _refresh_by_hook(self) -> None:
        """The refresh proxy decides whether an expiring connection goes on (the client is not asked)."""
        hook = self.node.refresh_hook
        assert hook is not None
        try:
            answer = await hook(self)
        except Disconnect as exc:
            self.disconnect(exc)
            return
        except Error as exc:
            log.info("client %s: refresh hook failed (%d): retrying later", self.id, exc.code)
            self._timer("expire", 10.0, self._on_expired)
            return
        if answer.expired or 0 < answer.expire_at <= self._clock.time():
            self.disconnect(codes.disconnect_expired())
            return
        if answer.info is not None:
            self.conn_info = answer.info
        self._set_expiry(answer.expire_at, grace=False)

    def _set_expiry(self, expires_at: int, grace: bool = True) -> dict[str, Any]:
        self._expires_at = expires_at
        if not expires_at:
            self._timer("expire", 0, None)
            return {}
        ttl = max(0, expires_at - int(self._clock.time()))
        if self.node.refresh_hook is not None:  # the server refreshes: nothing for the client to do
            self._timer("expire", ttl, self._on_expired)
            return {}
        self._timer("expire", ttl + (self.cfg.expired_close_delay if grace else 0), self._on_expired)
        return {"expires": True, "ttl": ttl}

    def lost_position(self, channel: str) -> None:
        """A gap in the channel's offsets, or a new epoch: make the client resubscribe and
        recover (or learn that it cannot)."""
        sub = self.subs.get(channel)
        if sub is not None and sub.lose():
            if self.unidirectional:
                self.disconnect(codes.disconnect_insufficient_state())
                return
            self._spawn(self._unsubscribe_push(channel, codes.unsubscribe_insufficient_state()))

    # -- commands

    async def handle_frame(self, frame: str | bytes) -> None:
        """Handle every command of one incoming frame, in order."""
        try:
            commands = self.encoding.decode_frame(frame)
        except Disconnect as exc:
            log.info("client %s sent a malformed frame: closing with %d", self.id, exc.code)
            self.disconnect(exc)
            return
        for command in commands:
            if self.closing:
                return
            await self.handle_command(command)

    @metrics.timed_command
    async def handle_command(self, command: ClientCommand) -> None:
        try:
            await self._dispatch(command)
        except Disconnect as exc:
            log.info("client %s: %s -> disconnect %d %s", self.id, command.method, exc.code, exc.reason)
            self.disconnect(exc)
        except Error as exc:
            if command.method == "connect":
                self.state = SessionState.REFUSED
            metrics.reply_error(command.method, exc.code)
            self._reply_error(command.id, exc)
        except EngineUnavailable as exc:  # temporary: the SDKs retry
            log.warning("client %s: %s failed, engine unavailable: %s", self.id, command.method, exc)
            metrics.reply_error(command.method, 100)
            self._reply_error(command.id, codes.error_internal())
            if command.method == "connect":  # half connected: start over on a new connection
                self.disconnect(codes.disconnect_server_error())
        except Exception:
            log.exception("client %s: %s failed", self.id, command.method)
            metrics.reply_error(command.method, 100)
            self._reply_error(command.id, codes.error_internal())

    def _reply_error(self, command_id: int, error: Error) -> None:
        if self.unidirectional:  # nothing to reply to: the connection ends, as Centrifuge does
            mapping = self.cfg.connect_code_to_unidirectional_disconnect
            to = next((t.to for t in mapping.transforms if t.code == error.code), None)
            if mapping.enabled and to is not None:
                self.disconnect(Disconnect(to.code, to.reason))
            else:
                self.disconnect(codes.unidirectional_disconnect(error))
        else:
            self.outbox.put(self.encoding.encode_error(command_id, error))

    async def _dispatch(self, command: ClientCommand) -> None:
        method, request = command.method, command.request
        if not method:  # pong
            self._timer("pong", 0, None)
            return
        if self.state is SessionState.REFUSED:
            raise codes.disconnect_bad_request()
        if self.state is SessionState.CONNECTING:
            if not isinstance(request, ConnectParams):
                raise codes.disconnect_bad_request()
            result = await self._connect(request)
            self.outbox.put(self.encoding.encode_reply(command.id, "connect", result))
            await self._after_connect()
            return
        if isinstance(request, ConnectParams):
            raise codes.disconnect_bad_request()
        limiter = self._limiter
        if limiter is not None:
            now = time.monotonic()
            if not limiter.allow(method, now, request.method if isinstance(request, RPCParams) else ""):
                if limiter.flooding(now):
                    log.info("client %s keeps sending past its command rate limit: closing", self.id)
                    metrics.limit_refusal("command_flood")
                    raise codes.disconnect_too_many_requests()
                metrics.limit_refusal("command_rate_limit")
                # a refusal takes no await otherwise: without this turn, a frame of refused
                # commands would hold the event loop (every other client waits) until it ends
                await asyncio.sleep(0)
                raise codes.error_too_many_requests()
        if self.node.user_limits.enabled and self.user:
            rpc_method = request.method if isinstance(request, RPCParams) else ""
            if not await self.node.user_limits.allow(self.user, method, rpc_method):
                if self._user_flood.flooding(time.monotonic()):
                    log.info("client %s keeps sending past its user's command rate limit: closing", self.id)
                    metrics.limit_refusal("user_command_flood")
                    raise codes.disconnect_too_many_requests()
                metrics.limit_refusal("user_command_rate_limit")
                await asyncio.sleep(0)  # as above: a frame of refusals must not hold the loop
                raise codes.error_too_many_requests()
        if isinstance(request, SubscribeParams) and request.is_map:
            result, live = await self._subscribe_map(request)
            self.outbox.put(self.encoding.encode_reply(command.id, method, result))
            if live:
                self._release(request.channel)
                await self._after_map_live(request.channel)
            return
        if isinstance(request, SubscribeParams):
            result, joined = await self._subscribe_client(request)
            self.outbox.put(self.encoding.encode_reply(command.id, method, result))
            self._release(request.channel)
            if joined:
                await self._publish_join(request.channel)
            return
        if isinstance(request, SendParams):
            return  # no message handler: fire-and-forget data is dropped, as Centrifugo does
        if method not in _HANDLED:  # "ping" exists in the schema; Centrifuge answers 108
            raise codes.error_not_available()
        handler: Callable[[Any], Awaitable[dict[str, Any]]] = getattr(self, "_cmd_" + method)
        result = await handler(request)
        self.outbox.put(self.encoding.encode_reply(command.id, method, result))

    # -- connect

    async def _connect(self, req: ConnectParams) -> dict[str, Any]:
        node, cfg = self.node, self.cfg
        expires_at = 0
        channels: list[str] = []
        if cfg.emulated_headers and req.headers:
            self.scope = emulated_scope(self.scope, req.headers, cfg.emulated_headers)
        hook = node.connect_hook
        if hook is not None and cfg.emulated_headers and self.credentials is None and not req.token:
            # the hook waited for the connect command: its emulated headers are known now
            try:
                self.credentials = await hook(self.scope or {})
            except (Error, Disconnect) as exc:
                self.credentials = exc
        creds: Credentials | None = None
        if req.token:
            if not node.connect_verifier.enabled:
                raise codes.disconnect_invalid_token()
            try:
                await node.connect_verifier.prepare(req.token)
                token = node.connect_verifier.connect_token(req.token)
            except TokenExpired:
                raise codes.error_token_expired() from None
            except InvalidToken as exc:
                log.info("invalid connection token: %s", exc)
                raise codes.disconnect_invalid_token() from None
            if token.exp and token.exp <= self._clock.time():
                raise codes.error_token_expired()
            self.user, self.conn_info, expires_at, channels = (
                token.user,
                token.info,
                token.exp,
                token.channels,
            )
        elif isinstance(self.credentials, Error | Disconnect):
            raise dataclasses.replace(self.credentials)  # a fresh instance: no traceback kept
        elif self.credentials is not None or node.connect_command_hook is not None:
            creds = self.credentials
            if creds is None and node.connect_command_hook is not None:
                creds = self.credentials = await node.connect_command_hook(self, req)
            assert creds is not None
            self.user, self.conn_info, expires_at = creds.user, creds.info, creds.expire_at
            self.meta = creds.meta
            channels = list(creds.channels)
        elif not (cfg.insecure or cfg.allow_anonymous_connect_without_token):
            raise codes.disconnect_bad_request()
        limit = cfg.user_connection_limit
        if limit and self.user and len(node.users.get(self.user, ())) >= limit:
            raise codes.disconnect_connection_limit()
        if self.user and cfg.subscribe_to_user_personal_channel.enabled:
            channels = [node.rules.personal_channel(self.user), *channels]
        channels = list(dict.fromkeys(channels))
        if len(channels) > cfg.channel_limit:  # as Centrifuge: the whole connection is refused
            log.info("client %s: %d channels at connect, over channel_limit", self.id, len(channels))
            metrics.limit_refusal("channel_limit")
            raise codes.disconnect_channel_limit()
        self.name = req.name
        self.state = SessionState.CONNECTED
        self._timer("stale", 0, None)
        node.add_session(self)
        result: dict[str, Any] = {"client": self.id, "version": node.version}
        if self.stream_session:
            result["session"], result["node"] = self.stream_session, node.id
        if cfg.ping_interval > 0:
            result["ping"] = max(1, round(cfg.ping_interval))
            if not self.unidirectional:
                result["pong"] = True
        if self.unidirectional:
            result["session"] = str(uuid.uuid4())
        result.update(self._set_expiry(expires_at))
        if isinstance(self.credentials, Credentials) and self.credentials.data is not None:
            result["data"] = orjson.Fragment(self.credentials.data)
        subs: dict[str, Any] = {}
        for channel in channels:
            opts = node.rules.options(channel)
            recovery = req.subs.get(channel, Recovery(False, 0, ""))
            params = SubscribeOptions(
                recover=recovery.recover, offset=recovery.offset, epoch=recovery.epoch, join_leave=True
            )
            grant = creds.grants.get(channel) if creds is not None else None
            if grant is not None:
                params.info, params.data, params.expires_at = grant.info, grant.data, grant.expire_at
            subs[channel] = await self._subscribe(channel, opts, params)
            if opts.join_leave:
                self._joins.append(channel)
        if subs:
            result["subs"] = subs
        return result

    async def _after_connect(self) -> None:
        for channel in list(self.subs):
            self._release(channel)
        if self.cfg.ping_interval > 0:
            self._timer("ping", self.cfg.ping_interval, self._on_ping)
        for channel in self._joins:
            await self._publish_join(channel)
        self._joins = []

    # -- subscribe

    async def _subscribe_client(self, req: SubscribeParams) -> tuple[dict[str, Any], bool]:
        node, channel = self.node, req.channel
        if not channel:
            raise codes.error_bad_request()
        opts = node.rules.options(channel)
        if (refusal := req.type_refusal(opts.subscription_type)) is not None:
            raise refusal
        if channel in self.subs or channel in self.map_loading:
            raise codes.error_already_subscribed()
        if len(self.subs) + len(self.map_loading) >= self.cfg.channel_limit:
            raise codes.error_limit_exceeded()
        params = await self.authorize_subscribe(req, opts)
        if opts.subscription_type == "shared_poll":
            return self._subscribe_shared_poll(channel, opts, params), False
        result = await self._subscribe(channel, opts, params)
        return result, opts.join_leave

    async def authorize_subscribe(self, req: SubscribeParams, opts: NamespaceOptions) -> SubscribeOptions:
        """Check that this connection may subscribe (token, app hook or config); the options
        the subscription gets (channel info, data and expiry from its token)."""
        channel = req.channel
        params = SubscribeOptions(
            recover=req.recover,
            offset=req.offset,
            epoch=req.epoch,
            positioned=req.positioned,
            recoverable=req.recoverable,
            join_leave=req.join_leave,
            delta=req.delta,
            reject_unrecovered=bool(req.flag & FLAG_REJECT_UNRECOVERED),
        )
        if req.token:
            await self.node.subscribe_verifier.prepare(req.token)
            token = self._subscribe_token(channel, req.token, invalid=codes.error_permission_denied())
            if token.exp and token.exp <= self._clock.time():
                raise codes.error_token_expired()
            params.info, params.data, params.expires_at = token.info, token.data, token.exp
        else:
            hook = self.node.subscribe_hook
            allowed = await hook(self, channel, req.data) if hook is not None else None
            if not (allowed or (allowed is None and self._may_subscribe(channel, opts))):
                raise codes.error_permission_denied()
            if isinstance(allowed, SubscribeGrant):
                params.info, params.data, params.expires_at = allowed.info, allowed.data, allowed.expire_at
        return params

    async def _subscribe_map(self, req: SubscribeParams) -> tuple[dict[str, Any], bool]:
        """One page of a map subscribe (``livehub.core.map_subscribe``)."""
        if not req.channel:
            raise codes.error_bad_request()
        opts = self.node.rules.options(req.channel)
        if (refusal := req.type_refusal(opts.subscription_type)) is not None:
            raise refusal
        if req.channel in self.subs:
            raise codes.error_already_subscribed()
        return await map_subscribe(self, req, opts)

    async def _after_map_live(self, channel: str) -> None:
        """A map subscription went live: presence (plain and as maps), join."""
        sub = self.subs.get(channel)
        if sub is None:
            return
        opts = self.node.rules.options(channel)
        node = self.node
        try:
            if opts.presence:
                await node.presence_manager.add_presence(channel, self.id, self.info(sub))
        except EngineUnavailable as exc:
            log.warning("client %s: presence in %s not added: %s", self.id, channel, exc)
        await node.map_presence.add(self, channel, opts, self.info(sub))
        if opts.join_leave:
            await self._publish_join(channel)

    def _subscribe_shared_poll(
        self, channel: str, opts: NamespaceOptions, params: SubscribeOptions
    ) -> dict[str, Any]:
        """A shared poll subscription: no stream; its keys are tracked with ``sub_refresh``."""
        sub = Subscription(channel, params.info, False, False, self.encoding.binary)
        self.subs[channel] = sub
        epoch = self.node.shared_poll.subscribe(self, channel, opts)
        result: dict[str, Any] = {"type": SUBSCRIPTION_TYPE_SHARED_POLL}
        if epoch:
            result["epoch"] = epoch
        if params.data is not None:
            result["data"] = orjson.Fragment(params.data)
        result.update(self._set_sub_expiry(sub, params.expires_at))
        return result

    def _may_subscribe(self, channel: str, opts: NamespaceOptions) -> bool:
        rules = self.node.rules
        if rules.is_private(channel):
            return False
        if self.cfg.insecure:
            return True
        users = rules.allowed_users(channel)
        if users is not None and opts.allow_user_limited_channels:
            return self.user in users
        return opts.allow_subscribe_for_client and (bool(self.user) or opts.allow_subscribe_for_anonymous)

    async def _subscribe(
        self, channel: str, opts: NamespaceOptions, params: SubscribeOptions
    ) -> dict[str, Any]:
        if opts.is_map:  # a map is loaded by the client, page by page: no server-side subscription
            raise codes.error_not_available()
        # a conflating channel sends no deltas: its slow subscribers skip publications
        delta = params.delta == "fossil" and "fossil" in opts.allowed_delta_types and not opts.conflate
        join_leave = opts.force_push_join_leave or params.join_leave
        conflate = opts.conflate_max_keys if opts.conflate else 0
        if conflate:
            self.outbox.conflating()
        sub = Subscription(channel, params.info, join_leave, delta, self.encoding.binary, conflate)
        self.subs[channel] = sub
        try:
            await self.node.add_subscriber(channel, self, sub)
            result = await subscribe(
                self.node, channel, opts, params, sub, self._may_read_history(channel, opts)
            )
            if opts.presence:
                await self.node.presence_manager.add_presence(channel, self.id, self.info(sub))
        except BaseException:
            if self.subs.get(channel) is sub:
                del self.subs[channel]
            await self.node.remove_subscriber(channel, self)
            raise
        result.update(self._set_sub_expiry(sub, params.expires_at))
        return result

    def _release(self, channel: str) -> None:
        """The subscribe reply is queued: deliver what arrived meanwhile, then go live."""
        sub = self.subs.get(channel)
        if sub is not None:
            release(self, sub)

    def _expire_subscription(self, channel: str) -> None:
        if self.node.sub_refresh_hook is not None and self.node.sub_refresh_enabled(channel):
            self._spawn(self._sub_refresh_by_hook(channel))
            return
        self._spawn(self._unsubscribe_push(channel, codes.unsubscribe_expired()))

    async def _sub_refresh_by_hook(self, channel: str) -> None:
        """The sub_refresh proxy decides whether an expiring subscription goes on."""
        hook, sub = self.node.sub_refresh_hook, self.subs.get(channel)
        if hook is None or sub is None:
            return
        try:
            answer = await hook(self, channel)
        except Disconnect as exc:
            self.disconnect(exc)
            return
        except Error as exc:
            log.info("client %s: sub_refresh hook failed for %s (%d)", self.id, channel, exc.code)
            answer = Prolongation(expired=True)
        if self.subs.get(channel) is not sub:
            return
        if answer.expired or 0 < answer.expire_at <= self._clock.time():
            await self._unsubscribe_push(channel, codes.unsubscribe_expired())
            return
        if answer.info is not None:
            sub.info = answer.info
        self._set_sub_expiry(sub, answer.expire_at, grace=False)

    async def _unsubscribe_push(self, channel: str, reason: codes.Unsubscribe) -> None:
        if channel in self.subs and not self.closed:
            await self._unsubscribe(channel)
            body = {"code": reason.code, "reason": reason.reason}
            self.outbox.put(self.encoding.encode_push(channel, "unsubscribe", body))

    async def _unsubscribe(self, channel: str) -> None:
        sub = self.subs.pop(channel, None)
        if sub is None:
            return
        sub.set_expiry(None)
        node = self.node
        node.shared_poll.unsubscribe(self, channel)
        await node.remove_subscriber(channel, self)
        opts = node.rules.options(channel)
        if opts.map_clients_presence_channel_prefix or (
            opts.is_map and opts.map.remove_client_on_unsubscribe
        ):
            await node.map_presence.remove(self, channel, opts)
        try:
            if opts.presence:  # if this fails, the entry expires (Redis) for want of refresh
                await node.presence_manager.remove_presence(channel, self.id, self.user)
            if opts.join_leave:
                await node.broker.publish_leave(channel, self.info(sub))
        except EngineUnavailable as exc:
            log.warning("client %s: leaving %s: engine unavailable: %s", self.id, channel, exc)

    async def _publish_join(self, channel: str) -> None:
        """Join pushes are best effort: the subscription stands without one."""
        sub = self.subs.get(channel)
        try:
            await self.node.broker.publish_join(channel, self.info(sub))
        except EngineUnavailable as exc:
            log.warning("client %s: join of %s not sent, engine unavailable: %s", self.id, channel, exc)

    # -- the other commands

    def _allowed(self, channel: str, for_client: bool, for_subscriber: bool, for_anonymous: bool) -> bool:
        if self.cfg.insecure:
            return True
        if for_subscriber and channel in self.subs:
            return True
        return for_client and (bool(self.user) or for_anonymous)

    def _may_read_history(self, channel: str, opts: NamespaceOptions) -> bool:
        return self._allowed(
            channel,
            opts.allow_history_for_client,
            opts.allow_history_for_subscriber,
            opts.allow_history_for_anonymous,
        )

    async def _cmd_unsubscribe(self, req: ChannelParams) -> dict[str, Any]:
        self.map_loading.pop(req.channel, None)
        await self._unsubscribe(req.channel)
        return {}

    async def _cmd_publish(self, req: PublishParams) -> dict[str, Any]:
        if not req.channel:
            raise codes.error_bad_request()
        if req.type == PUBLISH_TYPE_MAP:
            return await self._map_publish(req)
        opts = self.node.rules.options(req.channel)
        hook = self.node.publish_hook
        allowed = await hook(self, req.channel, req.data) if hook is not None else None
        if allowed is None:
            if not self._allowed(
                req.channel,
                opts.allow_publish_for_client,
                opts.allow_publish_for_subscriber,
                opts.allow_publish_for_anonymous,
            ):
                raise codes.error_permission_denied()
            allowed = req.data
        grant = allowed if isinstance(allowed, PublishGrant) else PublishGrant(allowed)
        await self.node.publish(
            req.channel,
            grant.data,
            info=self.info(self.subs.get(req.channel)),
            tags=grant.tags,
            idempotency_key=grant.idempotency_key,
            skip_history=grant.skip_history,
        )
        return {}

    async def _map_publish(self, req: PublishParams) -> dict[str, Any]:
        """A client sets or removes a key of a map channel, where the namespace's ``map``
        options permit; ``map.client_key`` makes the key its client or user id."""
        opts = self.node.rules.options(req.channel)
        if not opts.is_map:
            raise codes.error_not_available()
        m = opts.map
        if req.removed:
            allowed = self._allowed(
                req.channel,
                m.allow_remove_for_client,
                m.allow_remove_for_subscriber,
                m.allow_remove_for_anonymous,
            )
        else:
            allowed = self._allowed(
                req.channel,
                m.allow_publish_for_client,
                m.allow_publish_for_subscriber,
                m.allow_publish_for_anonymous,
            )
        if not allowed:
            raise codes.error_permission_denied()
        key = req.key
        if m.client_key == "client_id":
            key = self.id
        elif m.client_key == "user_id":
            if not self.user:
                raise codes.error_permission_denied()
            key = self.user
        if not key:
            raise codes.error_bad_request()
        if req.removed:
            await self.node.maps.remove(req.channel, key)
        else:
            info = self.info(self.subs.get(req.channel))
            await self.node.maps.publish(req.channel, key, req.data, info)
        return {}

    def _check_presence(self, channel: str) -> None:
        opts = self.node.rules.options(channel)
        if not opts.presence:
            raise codes.error_not_available()
        if not self._allowed(
            channel,
            opts.allow_presence_for_client,
            opts.allow_presence_for_subscriber,
            opts.allow_presence_for_anonymous,
        ):
            raise codes.error_permission_denied()

    async def _cmd_presence(self, req: ChannelParams) -> dict[str, Any]:
        self._check_presence(req.channel)
        clients = await self.node.presence_manager.presence(req.channel)
        return {"presence": {cid: info_dict(info) for cid, info in clients.items()}}

    async def _cmd_presence_stats(self, req: ChannelParams) -> dict[str, Any]:
        self._check_presence(req.channel)
        stats = await self.node.presence_manager.presence_stats(req.channel)
        return {"num_clients": stats.num_clients, "num_users": stats.num_users}

    async def _cmd_history(self, req: HistoryParams) -> dict[str, Any]:
        opts = self.node.rules.options(req.channel)
        if not opts.history_enabled:
            raise codes.error_not_available()
        if not self._may_read_history(req.channel, opts):
            raise codes.error_permission_denied()
        if req.reverse and req.since is not None and req.since.offset == 0:
            raise codes.error_bad_request()
        max_limit = self.cfg.history_max_publication_limit
        limit = max_limit if req.limit < 0 or req.limit > max_limit else req.limit
        pubs, sp = await self.node.broker.history(
            req.channel, HistoryOptions(limit, req.since, req.reverse, opts.history_meta_ttl)
        )
        if req.since is not None and req.since.epoch and req.since.epoch != sp.epoch:
            raise codes.error_unrecoverable_position()
        return {"publications": [pub_dict(p) for p in pubs], "epoch": sp.epoch, "offset": sp.offset}

    async def _cmd_rpc(self, req: RPCParams) -> dict[str, Any]:
        result = await self.node.call_rpc(self, req.method, req.data)
        if result is None:
            return {}
        data = result if isinstance(result, bytes) else orjson.dumps(result)
        return {"data": orjson.Fragment(data)}

    async def _cmd_refresh(self, req: RefreshParams) -> dict[str, Any]:
        if not req.token:
            raise codes.disconnect_bad_request()
        try:
            await self.node.connect_verifier.prepare(req.token)
            token = self.node.connect_verifier.connect_token(req.token)
        except TokenExpired:
            raise codes.disconnect_expired() from None
        except InvalidToken:
            raise codes.disconnect_invalid_token() from None
        if token.user != self.user:
            raise codes.disconnect_invalid_token()
        if token.info is not None:
            self.conn_info = token.info
        return self._set_expiry(token.exp)

    async def _cmd_sub_refresh(self, req: SubRefreshParams) -> dict[str, Any]:
        sub = self.subs.get(req.channel)
        if sub is None:
            raise codes.error_permission_denied()
        if req.type == SUB_REFRESH_TRACK:
            if req.untrack:
                self.node.shared_poll.untrack(self, req.channel, list(req.untrack))
            expiry = self.node.shared_poll.track(self, req.channel, req.track)
            if not expiry:
                return {}
            return {"expires": True, "ttl": max(1, expiry - int(time.time()))}
        if req.type == SUB_REFRESH_UNTRACK:
            self.node.shared_poll.untrack(self, req.channel, list(req.untrack))
            return {}
        if not req.token:
            raise codes.error_bad_request()
        await self.node.subscribe_verifier.prepare(req.token)
        token = self._subscribe_token(req.channel, req.token, invalid=codes.disconnect_invalid_token())
        return self._set_sub_expiry(sub, token.exp)

    def _subscribe_token(self, channel: str, token: str, invalid: Error | Disconnect) -> SubscribeToken:
        """Verify a subscription token for this connection; a token for someone else closes it."""
        try:
            claims = self.node.subscribe_verifier.subscribe_token(token)
        except TokenExpired:
            raise codes.error_token_expired() from None
        except InvalidToken as exc:
            log.info("invalid subscription token: %s", exc)
            raise invalid from None
        if claims.channel != channel or claims.user != self.user or claims.client not in ("", self.id):
            raise codes.disconnect_invalid_token()
        return claims

    def set_sub_expiry(self, sub: Subscription, expires_at: int) -> dict[str, Any]:
        return self._set_sub_expiry(sub, expires_at)

    def _set_sub_expiry(self, sub: Subscription, expires_at: int, grace: bool = True) -> dict[str, Any]:
        """Unsubscribe (2501, the SDK resubscribes with a new token) if not refreshed in time;
        with a sub_refresh proxy for the channel, the proxy is asked instead (at the expiry)."""
        if not expires_at:
            sub.set_expiry(None)
            return {}
        ttl = max(0, expires_at - int(self._clock.time()))
        channel = sub.channel
        by_proxy = self.node.sub_refresh_hook is not None and self.node.sub_refresh_enabled(channel)
        delay = ttl + (self.cfg.expired_close_delay if grace and not by_proxy else 0)
        sub.set_expiry(self._clock.call_later(delay, lambda: self._expire_subscription(channel)))
        return {} if by_proxy else {"expires": True, "ttl": ttl}

    # -- server-side control (used by the server API)

    async def server_subscribe(
        self,
        channel: str,
        opts: NamespaceOptions,
        *,
        info: bytes | None = None,
        data: bytes | None = None,
        expire_at: int = 0,
        recover_since: StreamPosition | None = None,
    ) -> None:
        """Subscribe this connection server-side and tell it with a ``subscribe`` push.

        A connection already in the channel is left alone; one at its channel limit is
        closed with 3505, as Centrifuge does.
        """
        if self.closed or not self.connected or channel in self.subs:
            return
        if len(self.subs) >= self.cfg.channel_limit:
            self.disconnect(codes.disconnect_channel_limit())
            return
        params = SubscribeOptions(info=info, data=data, expires_at=expire_at)
        if recover_since is not None:
            params.recover, params.offset, params.epoch = True, recover_since.offset, recover_since.epoch
        result = await self._subscribe(channel, opts, params)
        if self.closed:  # the connection ended meanwhile: undo what its cleanup may have missed
            self.subs.pop(channel, None)
            await self.node.remove_subscriber(channel, self)
            if opts.presence:
                await self.node.presence_manager.remove_presence(channel, self.id, self.user)
            return
        fields = ("recoverable", "positioned", "epoch", "offset", "data")
        push: dict[str, Any] = {k: result[k] for k in fields if k in result}
        self.outbox.put(self.encoding.encode_push(channel, "subscribe", push))
        for pub in result.get("publications", ()):
            self.outbox.put(self.encoding.encode_push(channel, "pub", pub))
        self._release(channel)
        if opts.join_leave:
            await self._publish_join(channel)

    async def server_unsubscribe(self, channel: str) -> None:
        """Leave a channel and tell the client: ``unsubscribe`` push, code 2000."""
        await self._unsubscribe_push(channel, codes.unsubscribe_server())

    def server_refresh(self, expired: bool = False, expire_at: int = 0, info: bytes | None = None) -> None:
        """Set when the connection expires (0: never) with a ``refresh`` push, or end it now (3005)."""
        if expired or 0 < expire_at <= self._clock.time():
            self.disconnect(codes.disconnect_expired())
            return
        if info is not None:
            self.conn_info = info
        self.outbox.put(self.encoding.encode_push("", "refresh", self._set_expiry(expire_at)))


__all__ = ["Session", "SessionState", "StreamPosition", "Subscription"]
