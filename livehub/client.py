"""The app's handle on one connection: what ``Hub`` callbacks are given instead of the session.

A :class:`Client` says who connected (user, client id, the ``info`` of ``on_connect``), how
(transport; the handshake's headers, cookies, query parameters and address) and where it
is (its channels), and lets the app act on it: push a message, subscribe or unsubscribe
it server-side, disconnect it. It is narrow on purpose: the session's protocol state stays
inside livehub, so the app cannot break it.

There is one Client per connection, made on first use and kept on the session (its
``handle`` slot): every callback of one connection gets the same object, so an app may
use it as a key or keep state on its own side about it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel
from starlette.datastructures import Headers, QueryParams
from starlette.requests import HTTPConnection

from livehub.dependencies import complete_scope
from livehub.protocol.codes import Disconnect

if TYPE_CHECKING:
    from livehub.core.session import Session


def to_json(value: Any) -> bytes:
    """JSON of a value or a Pydantic model, as livehub publishes and sends it."""
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return orjson.dumps(value)


class Client:
    __slots__ = ("_session", "_connection", "_scope")

    def __init__(self, session: Session) -> None:
        self._session = session
        self._connection: HTTPConnection | None = None
        #: The session's scope ``_connection`` was made from (``connect`` may add headers).
        self._scope: dict[str, Any] | None = None

    @classmethod
    def of(cls, session: Session) -> Client:
        """The connection's Client: the same object every time."""
        handle = session.handle
        if handle is None:
            handle = session.handle = cls(session)
        return handle

    def __repr__(self) -> str:
        return f"<Client {self.id} user={self.user!r}>"

    # -- who

    @property
    def id(self) -> str:
        """The client id the SDK was given in the connect reply."""
        return self._session.id

    @property
    def user(self) -> str:
        """The user id ("" for an anonymous connection, or before connect)."""
        return self._session.user

    @property
    def name(self) -> str:
        """The name the SDK gave in its connect command (e.g. "js", "python")."""
        return self._session.name

    @property
    def info(self) -> Any:
        """The connection's info (``ConnectResult.info`` or the token's), decoded; None if unset."""
        info = self._session.conn_info
        return None if info is None else orjson.loads(info)

    @property
    def connected(self) -> bool:
        """Past the connect reply and not gone yet."""
        return self._session.connected and not self._session.closed

    # -- how: the opening handshake

    @property
    def transport(self) -> str:
        """The transport the connection came on: "websocket", "http_stream", "sse", or a
        unidirectional one ("uni_websocket", "uni_sse", "uni_http_stream")."""
        return self._session.transport_name

    @property
    def handshake(self) -> HTTPConnection:
        """The opening handshake as Starlette's HTTPConnection (url, headers, cookies, ...)."""
        scope = self._session.scope
        if self._connection is None or scope is not self._scope:
            self._connection = HTTPConnection(complete_scope(scope))
            self._scope = scope
        return self._connection

    @property
    def headers(self) -> Headers:
        """The handshake's request headers (case-insensitive), with the emulated ones that
        ``client.emulated_headers`` allows (``livehub.core.headers``) once connected."""
        return self.handshake.headers

    @property
    def cookies(self) -> dict[str, str]:
        return self.handshake.cookies

    @property
    def query_params(self) -> QueryParams:
        return self.handshake.query_params

    @property
    def address(self) -> tuple[str, int] | None:
        """The peer's (host, port), if the transport knows it."""
        client = self.handshake.client
        return None if client is None else (client.host, client.port)

    # -- where

    @property
    def channels(self) -> frozenset[str]:
        """The channels it is subscribed to now."""
        return frozenset(self._session.subs)

    # -- acting on it

    async def send(self, data: Any) -> None:
        """Push a message to this client (the SDK's ``message`` event); JSON or a Pydantic model."""
        if self.connected:
            push = self._session.encoding.encode_push("", "message", {"data": orjson.Fragment(to_json(data))})
            self._session.outbox.put(push)

    def disconnect(self, code: int = 3503, reason: str = "force disconnect") -> None:
        """Close the connection after what is queued for it. Codes 3000-3499 and 4000-4499 make
        the SDK reconnect; 3500-3999 and 4500-4999 do not."""
        if not 3000 <= code < 5000:
            raise ValueError(f"disconnect code {code} is outside 3000-4999")
        self._session.disconnect(Disconnect(code, reason))

    async def subscribe(self, channel: str, data: Any = None) -> None:
        """Subscribe it to ``channel`` server-side (a ``subscribe`` push; no-op if it is in already)."""
        session = self._session
        options = session.node.rules.options(channel)
        await session.server_subscribe(channel, options, data=None if data is None else to_json(data))

    async def unsubscribe(self, channel: str) -> None:
        """Take it out of ``channel`` (an ``unsubscribe`` push, code 2000)."""
        await self._session.server_unsubscribe(channel)
