"""Values shared by the protocol, the node and the engines.

Payloads (``data``, ``info``) are kept as already-encoded JSON bytes: they are parsed
once when they enter the server and written as they are into every frame that carries
them, so fan-out never re-serialises user data.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who published, joined or left: the ``info`` object of pushes and presence."""

    user: str
    client: str
    conn_info: bytes | None = None
    chan_info: bytes | None = None


@dataclass(frozen=True, slots=True)
class Publication:
    """One message in a channel; ``offset`` is 0 when the channel keeps no history.

    In a map channel a publication is the value of one ``key`` (an entry of its state, or
    a change in its stream); ``removed`` marks the key's removal (``data`` is then empty).
    """

    data: bytes
    offset: int = 0
    info: ClientInfo | None = None
    tags: dict[str, str] = field(default_factory=dict)
    time: int = 0
    #: What the publication is a value of (the protocol's ``Publication.key``): on a channel
    #: with ``conflate``, a slow subscriber gets only the latest publication of each key.
    key: str = ""
    removed: bool = False


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """The top of a channel's history stream. A new epoch means the stream was lost."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class PresenceStats:
    num_clients: int
    num_users: int


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who a connection is, as decided by the app (``Hub.on_connect``) instead of a JWT."""

    user: str
    info: bytes | None = None
    channels: tuple[str, ...] = ()
    expire_at: int = 0
    data: bytes | None = None
    #: Kept by the server with the connection, never shown to the client (connect proxy's ``meta``).
    meta: bytes | None = None
    #: What server-side subscriptions of ``channels`` carry, by channel (connect proxy's ``subs``).
    grants: dict[str, SubscribeGrant] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubscribeGrant:
    """A subscribe hook letting a client in with what a subscription token would carry."""

    info: bytes | None = None
    data: bytes | None = None
    #: Unix time at which the subscription expires (0: never).
    expire_at: int = 0


@dataclass(frozen=True, slots=True)
class PublishGrant:
    """A publish hook letting a publication through, with how to publish it."""

    data: bytes
    skip_history: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class Prolongation:
    """A refresh or sub_refresh hook's answer for an expiring connection or subscription."""

    expired: bool = False
    #: The new expiry, Unix time (0: never).
    expire_at: int = 0
    info: bytes | None = None
