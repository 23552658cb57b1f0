"""livehub inside a FastAPI app: ``hub = Hub(settings); app.include_router(hub.router)``.

The hub is a thin layer over the :class:`Node`: it turns FastAPI-style callbacks into the
node's hooks. Channel patterns read like FastAPI paths (``"chat:{room}"``) and their
parameters arrive as keyword arguments; Pydantic models declared for a channel validate
what is published to it, from clients and from the server alike.

``on_connect`` is a FastAPI dependency resolved at the WebSocket upgrade (``Depends``,
``Header``, ``Cookie``, ``Query`` all work). It may be declared after the router was
included: the hub installs it as a dependency override of the app when the app starts.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, FastAPI, WebSocket
from pydantic import BaseModel, ValidationError

from livehub.asyncapi import asyncapi_document
from livehub.control import DisconnectUser, Subscribe, Target, Unsubscribe
from livehub.models import ClientInfo, Credentials, PresenceStats, Publication, StreamPosition
from livehub.node import Node
from livehub.protocol.codes import Disconnect, Error
from livehub.session import Session
from livehub.settings import Settings
from livehub.transports.asgi import websocket_handler

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


class ChannelPattern:
    """``"chat:{room}"`` matches ``chat:lobby`` with ``room="lobby"``; parameters stop at ``:``/``#``."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.params = re.findall(r"{(\w+)}", pattern)
        parts = re.split(r"({\w+})", pattern)
        regex = "".join(f"(?P<{p[1:-1]}>[^:#]+)" if p.startswith("{") else re.escape(p) for p in parts)
        self._regex = re.compile(f"^{regex}$")

    def match(self, channel: str) -> dict[str, str] | None:
        m = self._regex.match(channel)
        return m.groupdict() if m else None


@dataclass(slots=True)
class ChannelSpec:
    pattern: ChannelPattern
    model: type[BaseModel] | None = None
    description: str = ""
    on_subscribe: Callable[..., Any] | None = None
    on_publish: Callable[..., Any] | None = None


@dataclass(slots=True)
class RPCSpec:
    handler: Callable[..., Any]
    request: type[BaseModel] | None
    response: type[BaseModel] | None
    description: str


def _json(value: Any) -> bytes:
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return orjson.dumps(value)


async def _call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _first_param_model(func: Callable[..., Any], index: int) -> type[BaseModel] | None:
    """The Pydantic model annotating a handler's ``index``-th parameter, if any."""
    params = list(inspect.signature(func, eval_str=True).parameters.values())
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


async def _no_connect_hook() -> None:
    """Stands for the app's ``on_connect`` until the app starts and overrides it."""
    return None


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
        self.channels: list[ChannelSpec] = []
        self.rpcs: dict[str, RPCSpec] = {}
        self._connect: Callable[..., Any] | None = None
        self._on_disconnect: Callable[..., Any] | None = None
        node.subscribe_hook = self._subscribe_hook
        node.publish_hook = self._publish_hook
        node.disconnect_hook = self._disconnect_hook
        node.data_validator = self._validate
        self.router = self._build_router(asyncapi_url)

    # -- wiring into FastAPI

    def _build_router(self, asyncapi_url: str | None) -> APIRouter:
        router = APIRouter(lifespan=self.lifespan)
        handle = websocket_handler(self.node)

        async def connection(
            websocket: WebSocket, credentials: Annotated[Any, Depends(_no_connect_hook)]
        ) -> None:
            await handle(websocket, credentials)

        router.add_api_websocket_route(self.settings.websocket.handler_prefix, connection)
        if asyncapi_url:
            router.add_api_route(
                asyncapi_url, self.asyncapi, methods=["GET"], include_in_schema=False, response_model=None
            )
        return router

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Starts the node with the app; on shutdown clients are told to reconnect (3001)."""
        if self._connect is not None:
            app.dependency_overrides[_no_connect_hook] = self._connect
        app.state.livehub_node = self.node  # how uvicorn's livehub protocol finds the hub
        await self.node.start()
        try:
            yield
        finally:
            await self.node.stop()

    # -- decorators

    def on_connect(self, func: F) -> F:
        """Authenticate a connection from its HTTP upgrade request, FastAPI-style.

        Return a user id, a :class:`ConnectResult`, or None (no opinion: JWT and config
        rules apply); raise :class:`Disconnect` or :class:`Error` to refuse the client.
        """

        @functools.wraps(func)
        async def resolve(*args: Any, **kwargs: Any) -> Credentials | Error | Disconnect | None:
            try:
                result = await _call(func, *args, **kwargs)
            except (Error, Disconnect) as exc:
                return exc
            if result is None:
                return None
            if isinstance(result, str):
                return Credentials(result)
            if not isinstance(result, ConnectResult):
                raise TypeError(f"on_connect must return a user id or ConnectResult, not {type(result)!r}")
            return Credentials(
                result.user,
                None if result.info is None else _json(result.info),
                tuple(result.channels),
                result.expire_at,
                None if result.data is None else _json(result.data),
            )

        self._connect = resolve
        self.node.authenticates_at_upgrade = True
        return func

    def channel(
        self, pattern: str, model: type[BaseModel] | None = None, description: str = ""
    ) -> ChannelSpec:
        """Declare a channel pattern, optionally typed: publications must validate against ``model``."""
        for spec in self.channels:
            if spec.pattern.pattern == pattern:
                spec.model = model or spec.model
                spec.description = description or spec.description
                return spec
        spec = ChannelSpec(ChannelPattern(pattern), model, description)
        self.channels.append(spec)
        return spec

    def on_subscribe(self, pattern: str) -> Callable[[F], F]:
        """``handler(client, **params) -> bool``: may this client subscribe? Raise Error to refuse."""

        def register(func: F) -> F:
            self.channel(pattern).on_subscribe = func
            return func

        return register

    def on_publish(self, pattern: str) -> Callable[[F], F]:
        """``handler(client, data, **params) -> data``: allow, validate or transform a client publish.

        Returning None publishes the data as sent; raise Error to refuse. A Pydantic model
        annotating ``data`` (or declared with :meth:`channel`) validates it first.
        """

        def register(func: F) -> F:
            spec = self.channel(pattern, model=_first_param_model(func, 1))
            spec.on_publish = func
            return func

        return register

    def rpc(self, method: str, description: str = "") -> Callable[[F], F]:
        """``handler(client, request) -> response``; Pydantic models annotate both ends."""

        def register(func: F) -> F:
            signature = inspect.signature(func, eval_str=True)
            response = signature.return_annotation
            spec = RPCSpec(
                func,
                _first_param_model(func, 1),
                response if inspect.isclass(response) and issubclass(response, BaseModel) else None,
                description or inspect.getdoc(func) or "",
            )
            self.rpcs[method] = spec
            self.node.rpc_handlers[method] = functools.partial(self._call_rpc, spec)
            return func

        return register

    def on_disconnect(self, func: F) -> F:
        """``handler(client)``, called exactly once when a connected client goes away."""
        self._on_disconnect = func
        return func

    # -- the node's hooks

    def _find(self, channel: str) -> tuple[ChannelSpec, dict[str, str]] | None:
        for spec in self.channels:
            params = spec.pattern.match(channel)
            if params is not None:
                return spec, params
        return None

    async def _subscribe_hook(self, session: Session, channel: str, data: bytes | None) -> bool | None:
        found = self._find(channel)
        if found is None or found[0].on_subscribe is None:
            return None
        spec, params = found
        return bool(await _call(spec.on_subscribe, session, **params))  # type: ignore[arg-type]

    async def _publish_hook(self, session: Session, channel: str, data: bytes) -> bytes | None:
        found = self._find(channel)
        handler = found[0].on_publish if found is not None else None
        if found is None or handler is None:
            return None  # the config decides; typed data is checked by _validate on publish
        spec, params = found
        value: Any = orjson.loads(data) if spec.model is None else _parse(spec.model, data)
        result = await _call(handler, session, value, **params)
        return _json(value if result is None else result)

    def _validate(self, channel: str, data: bytes) -> bytes:
        """Every publication to a typed channel, whoever publishes it, must fit its model."""
        found = self._find(channel)
        if found is not None and found[0].model is not None:
            _parse(found[0].model, data)
        return data

    async def _disconnect_hook(self, session: Session) -> None:
        if self._on_disconnect is not None:
            await _call(self._on_disconnect, session)

    async def _call_rpc(self, spec: RPCSpec, session: Session, data: bytes | None) -> Any:
        if spec.request is not None:
            request: Any = _parse(spec.request, data or b"null")
        else:
            request = None if data is None else orjson.loads(data)
        result = await _call(spec.handler, session, request)
        return None if result is None else _json(result)

    # -- server-side operations, callable from any route or task

    async def publish(self, channel: str, data: Any, **options: Any) -> StreamPosition:
        """Publish JSON data (or a Pydantic model) to a channel; returns its stream position."""
        return await self.node.publish(channel, _json(data), **options)

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

    def disconnect(self, user: str, code: int = 3503, reason: str = "force disconnect") -> int:
        """Close every connection of a user; returns how many there were on this node."""
        return self.node.command_soon(DisconnectUser(Target(user), Disconnect(code, reason)))

    async def subscribe(self, user: str, channel: str, data: Any = None) -> None:
        """Subscribe every connection of a user to a channel, server-side (a ``subscribe`` push)."""
        await self.node.command(Subscribe(Target(user), channel, data=None if data is None else _json(data)))

    async def unsubscribe(self, user: str, channel: str) -> None:
        """Take every connection of a user out of a channel (an ``unsubscribe`` push, code 2000)."""
        await self.node.command(Unsubscribe(Target(user), channel))

    async def asyncapi(self) -> dict[str, Any]:
        """The AsyncAPI 3 document of this hub's channels and RPC methods."""
        return asyncapi_document(self)
