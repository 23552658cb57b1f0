"""livehub inside a FastAPI app: ``hub = Hub(settings); app.include_router(hub.router)``.

The hub is a thin layer over the :class:`~livehub.core.node.Node`: it turns FastAPI-style
callbacks into the node's hooks. Channel patterns read like FastAPI paths
(``"chat:{room}"``) and their parameters arrive as keyword arguments; Pydantic models
declared for a channel validate what is published to it, from clients and from the server
alike. ``hub.channel(pattern, **options)`` also states the namespace's options
(``livehub.core.channels.ChannelRules.declare`` says how they merge with the config).

Every callback takes FastAPI dependencies (``Depends``, ``Header``, ``Cookie``, ``Query``,
yield-dependencies), resolved from the connection's opening handshake with the app's
``dependency_overrides`` (``livehub.dependencies``); callbacks other than ``on_connect``
are given the connection as a :class:`~livehub.client.Client`. ``on_connect`` is the node's
``connect_hook``: every transport resolves it from its handshake before the session starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, Unpack

import orjson
from fastapi import APIRouter, FastAPI, WebSocket
from pydantic import BaseModel, ValidationError

from livehub.api import api_router
from livehub.asyncapi import asyncapi_document
from livehub.client import Client, to_json
from livehub.core.channels import (
    ChannelConflict,
    ChannelOptions,
    ChannelPattern,
    Declaration,
    validate_options,
)
from livehub.core.control import DisconnectUser, SubscribeUser, Target, UnsubscribeUser
from livehub.core.node import Node
from livehub.core.session import Session
from livehub.core.shared_poll import PolledItem, PollResult
from livehub.dependencies import Callback
from livehub.engines.base import MapStatePage, MapUpdate
from livehub.models import ClientInfo, Credentials, PresenceStats, Publication, StreamPosition
from livehub.protocol.codes import Disconnect, Error, error_internal
from livehub.settings import ConsumerSettings, NamespaceOptions, Settings
from livehub.transactional import TransactionalOutbox
from livehub.transports import uni_http, unidirectional
from livehub.transports.asgi import websocket_handler
from livehub.transports.emulation import add_stream_routes

log = logging.getLogger("livehub.hub")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """What ``on_connect`` returns to let a client in (a bare user id string works too)."""

    user: str
    info: Any = None
    channels: list[str] = field(default_factory=list)
    #: Unix time at which the connection expires (0: never).
    expire_at: int = 0
    data: Any = None


@dataclass(slots=True)
class ChannelSpec:
    """A channel pattern declared in code: its model, callbacks and namespace options."""

    pattern: ChannelPattern
    model: type[BaseModel] | None = None
    description: str = ""
    on_subscribe: Callback | None = None
    on_publish: Callback | None = None
    #: Namespace options stated for it (validated), as ``hub.channel(..., presence=True)`` gave them.
    options: dict[str, Any] = field(default_factory=dict)

    def declaration(self) -> Declaration:
        return Declaration(self.pattern, self.options, self.model is not None or self.on_publish is not None)


@dataclass(slots=True)
class RPCSpec:
    handler: Callback
    request: type[BaseModel] | None
    response: type[BaseModel] | None
    description: str


@dataclass(frozen=True, slots=True)
class NodeStats:
    """One node of the cluster, as it last reported itself."""

    id: str
    name: str
    connections: int
    users: int
    channels: int
    subscriptions: int
    #: Seconds since the node started.
    uptime: int


@dataclass(frozen=True, slots=True)
class HubStats:
    """Figures of this node, and the list of every live node (this one included)."""

    connections: int
    users: int
    channels: int
    subscriptions: int
    #: Publications made through this node, and messages it queued to its clients, since start.
    publications: int
    deliveries: int
    nodes: list[NodeStats]


def _first_param_model(func: Callable[..., Any], index: int) -> type[BaseModel] | None:
    """The Pydantic model annotating a handler's ``index``-th parameter, if any."""
    try:
        params = list(inspect.signature(func, eval_str=True).parameters.values())
    except NameError:
        return None
    if len(params) > index:
        annotation = params[index].annotation
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            return annotation
    return None


def _parse(model: type[BaseModel], data: bytes) -> BaseModel:
    """Validate JSON against a model; refusals name the fields, as FastAPI's 422s do."""
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise Error(107, f"bad request: {problems}") from None


def _credentials(result: Any) -> Credentials | None:
    if result is None:
        return None
    if isinstance(result, str):
        return Credentials(result)
    if not isinstance(result, ConnectResult):
        raise TypeError(f"on_connect must return a user id or ConnectResult, not {type(result)!r}")
    return Credentials(
        result.user,
        None if result.info is None else to_json(result.info),
        tuple(result.channels),
        result.expire_at,
        None if result.data is None else to_json(result.data),
    )


class Service(Protocol):
    """Something that runs with the app: started after the node, stopped before it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _consumer(node: Node, consumer: ConsumerSettings) -> Service:
    if consumer.type == "redis_stream":
        from livehub.consumers.redis_stream import RedisStreamConsumer

        return RedisStreamConsumer(node, consumer.name, consumer.redis_stream)
    if consumer.type == "nats_jetstream":
        from livehub.consumers.nats_jetstream import NatsJetStreamConsumer

        return NatsJetStreamConsumer(node, consumer.name, consumer.nats_jetstream)
    from livehub.consumers.postgresql import PostgresConsumer

    return PostgresConsumer(node, consumer.name, consumer.postgresql)


class Hub:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        engine: str | None = None,
        node: Node | None = None,
        title: str = "livehub",
        asyncapi_url: str | None = "/asyncapi.json",
    ) -> None:
        if node is None:
            settings = settings or Settings()
            if engine:
                settings.engine.url = engine
            node = Node(settings)
        self.node = node
        self.settings = node.settings
        self.title = title
        #: The channel patterns declared in code, in declaration order (the first match wins).
        self.declared: list[ChannelSpec] = []
        self.rpcs: dict[str, RPCSpec] = {}
        self._connect: Callback | None = None
        #: Shared poll functions by channel pattern (``shared_poll``).
        self.pollers: list[tuple[ChannelPattern, Callable[..., Any]]] = []
        #: What runs with the app beside the node: outbox relays (:meth:`transactional_outbox`)
        #: and the enabled ``consumers`` of the settings.
        self.services: list[Service] = [_consumer(node, c) for c in self.settings.consumers if c.enabled]
        self._on_disconnect: Callback | None = None
        #: The app the hub runs in (its lifespan tells): whose dependency_overrides apply.
        self._app: Any = None
        node.subscribe_hook = self._subscribe_hook
        node.publish_hook = self._publish_hook
        node.disconnect_hook = self._disconnect_hook
        node.data_validator = self._validate
        self.router = self._build_router(asyncapi_url)

    # -- wiring into FastAPI

    def _build_router(self, asyncapi_url: str | None) -> APIRouter:
        """The client endpoint and the AsyncAPI document (the server API: :meth:`api_router`)."""
        router = APIRouter(lifespan=self.lifespan)
        handle = websocket_handler(self.node)

        async def connection(websocket: WebSocket) -> None:
            await handle(websocket)

        router.add_api_websocket_route(self.settings.websocket.handler_prefix, connection)
        add_stream_routes(router, self.node)  # HTTP-streaming, SSE, /emulation when enabled
        if self.settings.uni_websocket.enabled:
            uni_handle = unidirectional.asgi_websocket_handler(self.node)

            async def uni_connection(websocket: WebSocket) -> None:
                await uni_handle(websocket)

            router.add_api_websocket_route(self.settings.uni_websocket.handler_prefix, uni_connection)
        uni_http.add_routes(router, self.node)
        if asyncapi_url:
            router.add_api_route(
                asyncapi_url, self.asyncapi, methods=["GET"], include_in_schema=False, response_model=None
            )
        return router

    def api_router(self) -> APIRouter:
        """The Centrifugo-compatible server HTTP API (``POST /api/<method>``) of this hub:
        ``app.include_router(hub.api_router())``. It answers 401 unless ``http_api.key`` is
        set and sent (or ``http_api.insecure``)."""
        return api_router(self.node)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Starts the node with the app; on shutdown clients are told to reconnect (3001)."""
        self._app = app
        app.state.livehub_node = self.node  # how uvicorn's livehub protocol finds the hub
        await self.node.start()
        for service in self.services:
            await service.start()
        try:
            yield
        finally:
            for service in self.services:
                await service.stop()
            await self.node.stop()

    def transactional_outbox(self, dsn: str, **options: Any) -> TransactionalOutbox:
        """A PostgreSQL outbox: ``await outbox.publish(session, channel, data)`` inside the app's
        transaction is delivered once, in commit order, if and only if it commits. Its relay
        runs with the app (``livehub.transactional``; needs ``livehub[postgres]``)."""
        outbox = TransactionalOutbox(self.node, dsn, **options)
        self.services.append(outbox)
        return outbox

    def _app_for(self, scope: dict[str, Any] | None) -> Any:
        """The app whose ``dependency_overrides`` apply to a connection."""
        app = scope.get("app") if scope is not None else None
        return app if hasattr(app, "dependency_overrides") else self._app

    # -- declarations

    def on_connect(self, func: F) -> F:
        """Authenticate a connection from its opening handshake, FastAPI-style.

        Every parameter is a FastAPI dependency. Return a user id, a :class:`ConnectResult`,
        or None (no opinion: JWT and config rules apply); raise :class:`Disconnect` or
        :class:`Error` to refuse the client (its ``connect`` gets that reply).
        """
        self._connect = Callback(func, own=0)
        self.node.connect_hook = self._connect_hook
        return func

    def channel(
        self,
        pattern: str,
        model: type[BaseModel] | None = None,
        description: str = "",
        **options: Unpack[ChannelOptions],
    ) -> ChannelSpec:
        """Declare a channel pattern: its message model (publications must validate), a
        description (AsyncAPI), and options of its namespace (``presence=True``,
        ``history_size=50``, ``history_ttl="10m"``, ... as the config's namespace options).

        Declaring the same pattern again adds to it. Raises :class:`ChannelConflict` if an
        option contradicts the config or another declaration.
        """
        stated = validate_options(options)
        spec = next((s for s in self.declared if s.pattern.pattern == pattern), None)
        if spec is None:
            updated = ChannelSpec(ChannelPattern(pattern), model, description, options=stated)
        else:
            for name, value in stated.items():
                if name in spec.options and spec.options[name] != value:
                    raise ChannelConflict(
                        f"channel option {name!r} of {pattern!r} declared as {spec.options[name]!r} "
                        f"and as {value!r}"
                    )
            updated = dataclasses.replace(
                spec,
                model=model or spec.model,
                description=description or spec.description,
                options={**spec.options, **stated},
            )
        self._replace(spec, updated)
        return updated

    def _replace(self, old: ChannelSpec | None, new: ChannelSpec) -> None:
        """Install ``new`` (in place of ``old``) once the channel rules accept it."""
        specs = [new if s is old else s for s in self.declared] if old is not None else [*self.declared, new]
        self.node.rules.declare(s.declaration() for s in specs)
        self.declared = specs

    def on_subscribe(self, pattern: str) -> Callable[[F], F]:
        """``handler(client, <channel params>, <dependencies>) -> bool``: may this client
        subscribe? False (or raising Error) refuses it; True lets it in whatever the options say."""

        def register(func: F) -> F:
            spec = self.channel(pattern)
            self._replace(
                spec, dataclasses.replace(spec, on_subscribe=Callback(func, 1, spec.pattern.params))
            )
            return func

        return register

    def on_publish(self, pattern: str) -> Callable[[F], F]:
        """``handler(client, data, <channel params>, <dependencies>) -> data``: allow, validate
        or transform a client's publication; it decides who may publish there.

        Returning None publishes the data as sent; raise Error to refuse. A Pydantic model
        annotating ``data`` (or declared with :meth:`channel`) validates it first.
        """

        def register(func: F) -> F:
            spec = self.channel(pattern, model=_first_param_model(func, 1))
            self._replace(spec, dataclasses.replace(spec, on_publish=Callback(func, 2, spec.pattern.params)))
            return func

        return register

    def rpc(self, method: str, description: str = "") -> Callable[[F], F]:
        """``handler(client, request, <dependencies>) -> response``; Pydantic models annotate both ends."""

        def register(func: F) -> F:
            response = inspect.signature(func, eval_str=True).return_annotation
            spec = RPCSpec(
                Callback(func, 2),
                _first_param_model(func, 1),
                response if inspect.isclass(response) and issubclass(response, BaseModel) else None,
                description or inspect.getdoc(func) or "",
            )
            self.rpcs[method] = spec

            async def call(session: Session, data: bytes | None) -> Any:
                return await self._call_rpc(spec, session, data)

            self.node.rpc_handlers[method] = call
            return func

        return register

    def shared_poll(self, pattern: str) -> Callable[[F], F]:
        """``poll(keys, <channel params>) -> items``: what the keys tracked in a shared poll
        channel hold, asked once per ``refresh_interval`` for the keys this node's clients track.

        ``keys`` maps each key to the version the node has (0: none). Return a dict
        ``{key: value}`` (JSON values; versionless mode numbers the changes itself) or a list
        of :class:`~livehub.core.shared_poll.PolledItem` (``key``, ``data`` as JSON bytes,
        ``version``, ``removed``) for versioned mode. Keys left out are unchanged.
        """
        compiled = ChannelPattern(pattern)

        def register(func: F) -> F:
            self.pollers.append((compiled, func))
            self.node.shared_poll_hook = self._shared_poll_hook
            return func

        return register

    async def _shared_poll_hook(self, channel: str, items: list[tuple[str, int]]) -> PollResult | None:
        for pattern, func in self.pollers:
            params = pattern.match(channel)
            if params is not None:
                answer = await func(dict(items), **params)
                if isinstance(answer, dict):
                    polled = [PolledItem(key, to_json(value)) for key, value in answer.items()]
                else:
                    polled = list(answer or ())
                return PollResult(polled)
        return None

    def on_disconnect(self, func: F) -> F:
        """``handler(client, <dependencies>)``, called once when a connected client goes away."""
        self._on_disconnect = Callback(func, 1)
        return func

    # -- the node's hooks

    def _find(self, channel: str) -> tuple[ChannelSpec, dict[str, str]] | None:
        for spec in self.declared:
            params = spec.pattern.match(channel)
            if params is not None:
                return spec, params
        return None

    async def _connect_hook(self, scope: dict[str, Any]) -> Credentials | Error | Disconnect | None:
        callback = self._connect
        if callback is None:
            return None
        try:
            return _credentials(await callback(scope, self._app_for(scope)))
        except (Error, Disconnect) as exc:
            return exc
        except Exception:
            log.exception("on_connect failed")
            return error_internal()

    async def _subscribe_hook(self, session: Session, channel: str, data: bytes | None) -> bool | None:
        found = self._find(channel)
        callback = found[0].on_subscribe if found is not None else None
        if found is None or callback is None:
            return None  # the options decide
        params = found[1]
        scope = session.scope
        return bool(await callback(scope, self._app_for(scope), Client.of(session), **params))

    async def _publish_hook(self, session: Session, channel: str, data: bytes) -> bytes | None:
        found = self._find(channel)
        callback = found[0].on_publish if found is not None else None
        if found is None or callback is None:
            return None  # the options decide; typed data is checked by _validate on publish
        spec, params = found
        value: Any = orjson.loads(data) if spec.model is None else _parse(spec.model, data)
        scope = session.scope
        result = await callback(scope, self._app_for(scope), Client.of(session), value, **params)
        return to_json(value if result is None else result)

    def _validate(self, channel: str, data: bytes) -> bytes:
        """Every publication to a typed channel, whoever publishes it, must fit its model."""
        found = self._find(channel)
        if found is not None and found[0].model is not None:
            _parse(found[0].model, data)
        return data

    async def _disconnect_hook(self, session: Session) -> None:
        if self._on_disconnect is not None:
            scope = session.scope
            await self._on_disconnect(scope, self._app_for(scope), Client.of(session))

    async def _call_rpc(self, spec: RPCSpec, session: Session, data: bytes | None) -> Any:
        if spec.request is not None:
            request: Any = _parse(spec.request, data or b"null")
        else:
            request = None if data is None else orjson.loads(data)
        scope = session.scope
        result = await spec.handler(scope, self._app_for(scope), Client.of(session), request)
        return None if result is None else to_json(result)

    # -- server-side operations, callable from any route or task

    async def publish(self, channel: str, data: Any, **options: Any) -> StreamPosition:
        """Publish JSON data (or a Pydantic model) to a channel; returns its stream position.

        Options: ``tags``, ``idempotency_key``, ``skip_history``, and ``key``: what the
        publication is a value of, for a channel with ``conflate`` (a slow subscriber gets
        the latest publication of each key)."""
        return await self.node.publish(channel, to_json(data), **options)

    async def broadcast(self, channels: list[str], data: Any, **options: Any) -> list[StreamPosition]:
        return [await self.publish(channel, data, **options) for channel in channels]

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        return await self.node.presence(channel)

    async def presence_stats(self, channel: str) -> PresenceStats:
        return await self.node.presence_stats(channel)

    async def history(
        self, channel: str, limit: int = -1, since: StreamPosition | None = None, reverse: bool = False
    ) -> tuple[list[Publication], StreamPosition]:
        return await self.node.history(channel, limit, since, reverse)

    # -- map channels (a namespace with ``subscription_type="map"``: ``livehub.core.maps``)

    async def map_publish(
        self, channel: str, key: str, data: Any, tags: dict[str, str] | None = None, key_mode: str = ""
    ) -> MapUpdate:
        """Set ``key`` of a map channel to JSON ``data`` (or a Pydantic model); its subscribers
        get the change. ``key_mode="if_new"`` / ``"if_exists"`` make it conditional (the
        result's ``suppressed`` says why nothing changed)."""
        return await self.node.maps.publish(channel, key, to_json(data), tags=tags, key_mode=key_mode)

    async def map_remove(self, channel: str, key: str) -> MapUpdate:
        """Remove ``key`` of a map channel (``suppressed="key_not_found"`` if it has none)."""
        return await self.node.maps.remove(channel, key)

    async def map_state(self, channel: str, cursor: str = "", limit: int = 0, key: str = "") -> MapStatePage:
        """A page of a map channel's state in key order (``limit`` 0: all; ``cursor``: the page
        after the one that returned it); each entry is a Publication with its ``key``."""
        return await self.node.maps.state(channel, cursor, limit, key)

    async def map_stream(
        self, channel: str, since: StreamPosition | None = None, limit: int = -1
    ) -> tuple[list[Publication], StreamPosition]:
        """A map channel's changes after ``since`` (Error 112 if the stream lost some), and its position."""
        return await self.node.maps.stream(channel, since, limit)

    async def map_stats(self, channel: str) -> int:
        """How many keys a map channel holds."""
        return await self.node.maps.stats(channel)

    async def map_clear(self, channel: str) -> None:
        """Forget a map channel: state, stream and epoch."""
        await self.node.maps.clear(channel)

    def disconnect(self, user: str, code: int = 3503, reason: str = "force disconnect") -> int:
        """Close every connection of a user; returns how many there were on this node."""
        return self.node.command_soon(DisconnectUser(Target(user), Disconnect(code, reason)))

    async def subscribe(self, user: str, channel: str, data: Any = None) -> None:
        """SubscribeUser every connection of a user to a channel, server-side (a ``subscribe`` push)."""
        await self.node.command(
            SubscribeUser(Target(user), channel, data=None if data is None else to_json(data))
        )

    async def unsubscribe(self, user: str, channel: str) -> None:
        """Take every connection of a user out of a channel (an ``unsubscribe`` push, code 2000)."""
        await self.node.command(UnsubscribeUser(Target(user), channel))

    # -- reads

    def connections(self, user: str | None = None) -> list[Client]:
        """The connected clients of this node (of one user, if given)."""
        node = self.node
        sessions = node.sessions.values() if user is None else node.users.get(user, ())
        return [Client.of(session) for session in sessions]

    def users(self) -> dict[str, int]:
        """Users connected to this node, and how many connections each has."""
        return {user: len(sessions) for user, sessions in self.node.users.items()}

    def channels(self, pattern: str = "") -> dict[str, int]:
        """Channels with subscribers on this node and how many, filtered by a glob pattern
        (Centrifugo's syntax: ``chat:*``)."""
        return self.node.channels_matching(pattern)

    def channel_options(self, channel: str) -> NamespaceOptions:
        """The options a channel has (config and code merged); Error 102 for an unknown one."""
        return self.node.options(channel)

    def stats(self) -> HubStats:
        """This node's figures, and every live node's as the cluster last heard them."""
        node = self.node
        channels = node.channels()
        nodes = [
            NodeStats(
                id=str(info.get("uid", "")),
                name=str(info.get("name", "")),
                connections=int(info.get("num_clients", 0)),
                users=int(info.get("num_users", 0)),
                channels=int(info.get("num_channels", 0)),
                subscriptions=int(info.get("num_subs", 0)),
                uptime=int(info.get("uptime", 0)),
            )
            for info in node.nodes_info()
        ]
        return HubStats(
            connections=len(node.sessions),
            users=len(node.users),
            channels=len(channels),
            subscriptions=sum(channels.values()),
            publications=node.publications,
            deliveries=node.deliveries,
            nodes=nodes,
        )

    async def asyncapi(self) -> dict[str, Any]:
        """The AsyncAPI 3 document of this hub's channels and RPC methods."""
        return asyncapi_document(self)
