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
