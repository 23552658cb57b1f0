"""Typed client commands, parsed from the JSON objects of protocol v2.

Parsing is strict about types, lenient about absence: a missing field takes the zero
value, as the Go server's protobuf/JSON decoding does; a field of the wrong type is a
malformed command and disconnects with 3501, like Centrifuge's decode failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from livehub.models import StreamPosition
from livehub.protocol.codes import (
    Error,
    disconnect_bad_request,
    error_not_available,
    error_permission_denied,
)

METHODS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)


def _str(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise disconnect_bad_request()
    return value


def _int(params: dict[str, Any], key: str) -> int:
    value = params.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise disconnect_bad_request()
    return value


def _bool(params: dict[str, Any], key: str) -> bool:
    value = params.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise disconnect_bad_request()
    return value


def _raw(params: dict[str, Any], key: str) -> bytes | None:
    """Re-encode an embedded JSON value compactly; the wire carries it as raw JSON."""
    if key not in params or params[key] is None:
        return None
    try:
        return orjson.dumps(params[key])
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (it reads deeper)
        raise disconnect_bad_request() from None


def _dict(params: dict[str, Any], key: str) -> dict[str, Any]:
    value = params.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise disconnect_bad_request()
    return value


@dataclass(frozen=True, slots=True)
class Recovery:
    """Where a client was in a channel's stream: ``connect.subs`` entries."""

    recover: bool
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class ConnectParams:
    token: str = ""
    data: bytes | None = None
    name: str = ""
    version: str = ""
    subs: dict[str, Recovery] = field(default_factory=dict)
    #: Headers emulation (the SDK's ``headers`` option): name -> value, as the client sent
    #: them; the server keeps only the names ``client.emulated_headers`` allows.
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, p: dict[str, Any]) -> ConnectParams:
        subs = {}
        for channel, sub in _dict(p, "subs").items():
            if not isinstance(sub, dict):
                raise disconnect_bad_request()
            subs[channel] = Recovery(_bool(sub, "recover"), _int(sub, "offset"), _str(sub, "epoch"))
        headers = _dict(p, "headers")
        if not all(isinstance(value, str) for value in headers.values()):
            raise disconnect_bad_request()
        return cls(_str(p, "token"), _raw(p, "data"), _str(p, "name"), _str(p, "version"), subs, headers)


#: Subscribe ``flag`` bit asking the server to fail with 112 rather than lose position.
FLAG_REJECT_UNRECOVERED = 2


#: SubscribeRequest.type: a plain stream, Centrifugo 6.8's map, map of the clients present,
#: map of the users present, shared poll (which livehub does not serve).
SUBSCRIPTION_TYPE_STREAM = 0
SUBSCRIPTION_TYPE_MAP = 1
SUBSCRIPTION_TYPE_MAP_CLIENTS = 2
SUBSCRIPTION_TYPE_MAP_USERS = 3
SUBSCRIPTION_TYPE_SHARED_POLL = 4
#: The namespace ``subscription_type`` each request type needs.
SUBSCRIPTION_TYPE_NAMES = {0: "stream", 1: "map", 2: "map_clients", 3: "map_users", 4: "shared_poll"}

#: SubscribeRequest.phase of a map subscription: join the live stream (the last step),
#: page through the stream of changes, page through the state (the first step).
PHASE_LIVE = 0
PHASE_STREAM = 1
PHASE_STATE = 2

#: PublishRequest.type of a write to a map channel (``key``; ``removed`` to remove it).
PUBLISH_TYPE_MAP = 1


@dataclass(frozen=True, slots=True)
class SubscribeParams:
    channel: str
    token: str = ""
    data: bytes | None = None
    recover: bool = False
    offset: int = 0
    epoch: str = ""
    positioned: bool = False
    recoverable: bool = False
    join_leave: bool = False
    delta: str = ""
    flag: int = 0
    type: int = SUBSCRIPTION_TYPE_STREAM
    #: Map subscriptions: the phase, the state page cursor, the page size, the tags filter.
    phase: int = PHASE_LIVE
    cursor: str = ""
    limit: int = 0
    tf: dict[str, Any] | None = None

    @property
    def is_map(self) -> bool:
        return self.type in (
            SUBSCRIPTION_TYPE_MAP,
            SUBSCRIPTION_TYPE_MAP_CLIENTS,
            SUBSCRIPTION_TYPE_MAP_USERS,
        )

    def type_refusal(self, namespace_type: str) -> Error | None:
        """The error for a subscription type the channel's namespace is not (None when it
        is), as Centrifugo answers: 108 for shared poll elsewhere, 103 otherwise -- rather
        than serving a stream to a client expecting a map, or a map to a stream client."""
        if SUBSCRIPTION_TYPE_NAMES.get(self.type) == (namespace_type or "stream"):
            return None
        if self.type == SUBSCRIPTION_TYPE_SHARED_POLL:
            return error_not_available()
        return error_permission_denied()

    @classmethod
    def parse(cls, p: dict[str, Any]) -> SubscribeParams:
        tf = p.get("tf")
        if tf is not None and not isinstance(tf, dict):
            raise disconnect_bad_request()
        return cls(
            channel=_str(p, "channel"),
            token=_str(p, "token"),
            data=_raw(p, "data"),
            recover=_bool(p, "recover"),
            offset=_int(p, "offset"),
            epoch=_str(p, "epoch"),
            positioned=_bool(p, "positioned"),
            recoverable=_bool(p, "recoverable"),
            join_leave=_bool(p, "join_leave"),
            delta=_str(p, "delta"),
            flag=_int(p, "flag"),
            type=_int(p, "type"),
            phase=_int(p, "phase"),
            cursor=_str(p, "cursor"),
            limit=_int(p, "limit"),
            tf=tf or None,
        )


@dataclass(frozen=True, slots=True)
class ChannelParams:
    """unsubscribe, presence and presence_stats carry only a channel."""

    channel: str

    @classmethod
    def parse(cls, p: dict[str, Any]) -> ChannelParams:
        return cls(_str(p, "channel"))


@dataclass(frozen=True, slots=True)
class PublishParams:
    channel: str
    data: bytes
    #: PUBLISH_TYPE_MAP: set (or with ``removed``, remove) ``key`` of a map channel.
    type: int = 0
    key: str = ""
    removed: bool = False

    @classmethod
    def parse(cls, p: dict[str, Any]) -> PublishParams:
        return cls(
            _str(p, "channel"),
            _raw(p, "data") or b"null",
            _int(p, "type"),
            _str(p, "key"),
            _bool(p, "removed"),
        )


@dataclass(frozen=True, slots=True)
class HistoryParams:
    channel: str
    limit: int = 0
    since: StreamPosition | None = None
    reverse: bool = False

    @classmethod
    def parse(cls, p: dict[str, Any]) -> HistoryParams:
        since = None
        if p.get("since") is not None:
            s = _dict(p, "since")
            since = StreamPosition(_int(s, "offset"), _str(s, "epoch"))
        return cls(_str(p, "channel"), _int(p, "limit"), since, _bool(p, "reverse"))


@dataclass(frozen=True, slots=True)
class RPCParams:
    method: str
    data: bytes | None

    @classmethod
    def parse(cls, p: dict[str, Any]) -> RPCParams:
        return cls(_str(p, "method"), _raw(p, "data"))


@dataclass(frozen=True, slots=True)
class SendParams:
    data: bytes | None

    @classmethod
    def parse(cls, p: dict[str, Any]) -> SendParams:
        return cls(_raw(p, "data"))


@dataclass(frozen=True, slots=True)
class RefreshParams:
    token: str

    @classmethod
    def parse(cls, p: dict[str, Any]) -> RefreshParams:
        return cls(_str(p, "token"))


@dataclass(frozen=True, slots=True)
class SubRefreshParams:
    channel: str
    token: str
    #: 0: a subscription token refresh; shared poll: track (1) or untrack (2) keys.
    type: int = 0
    #: Track: signed batches, each ``(signature, [(key, version), ...])``.
    track: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    untrack: tuple[str, ...] = ()

    @classmethod
    def parse(cls, p: dict[str, Any]) -> SubRefreshParams:
        batches = []
        for batch in _list(p, "track"):
            if not isinstance(batch, dict):
                raise disconnect_bad_request()
            items = []
            for item in _list(batch, "items"):
                if not isinstance(item, dict):
                    raise disconnect_bad_request()
                items.append((_str(item, "key"), _int(item, "version")))
            batches.append((_str(batch, "signature"), tuple(items)))
        untrack = _list(p, "untrack")
        if not all(isinstance(k, str) for k in untrack):
            raise disconnect_bad_request()
        return cls(_str(p, "channel"), _str(p, "token"), _int(p, "type"), tuple(batches), tuple(untrack))


#: ``sub_refresh`` types of shared poll subscriptions.
SUB_REFRESH_TRACK = 1
SUB_REFRESH_UNTRACK = 2


def _list(params: dict[str, Any], key: str) -> list[Any]:
    value = params.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise disconnect_bad_request()
    return value


Request = (
    ConnectParams
    | SubscribeParams
    | ChannelParams
    | PublishParams
    | HistoryParams
    | RPCParams
    | SendParams
    | RefreshParams
    | SubRefreshParams
    | None
)

_PARSERS: dict[str, Any] = {
    "connect": ConnectParams.parse,
    "subscribe": SubscribeParams.parse,
    "unsubscribe": ChannelParams.parse,
    "publish": PublishParams.parse,
    "presence": ChannelParams.parse,
    "presence_stats": ChannelParams.parse,
    "history": HistoryParams.parse,
    "ping": lambda p: None,
    "send": SendParams.parse,
    "rpc": RPCParams.parse,
    "refresh": RefreshParams.parse,
    "sub_refresh": SubRefreshParams.parse,
}


@dataclass(frozen=True, slots=True)
class ClientCommand:
    """One client command. ``method == ""`` is a pong (the empty object ``{}``)."""

    id: int
    method: str
    request: Request = None


PONG = ClientCommand(0, "")


def parse_command(obj: object) -> ClientCommand:
    """Turn one decoded JSON value into a ClientCommand, or raise a 3501 Disconnect."""
    if not isinstance(obj, dict):
        raise disconnect_bad_request()
    if not obj:
        return PONG
    cid = _int(obj, "id")
    if cid < 0 or cid > 0xFFFFFFFF:
        raise disconnect_bad_request()
    for method in METHODS:
        params = obj.get(method)
        if params is not None:
            if not isinstance(params, dict):
                raise disconnect_bad_request()
            if cid == 0 and method != "send":
                raise disconnect_bad_request()
            return ClientCommand(cid, method, _PARSERS[method](params))
    raise disconnect_bad_request()
