"""Server-side commands aimed at connections: subscribe, unsubscribe, disconnect, refresh.

The server API and the ``Hub`` act on a user's connections, which may be on any node. A
command is a plain value saying what to do (``SubscribeUser``, ``UnsubscribeUser``,
``DisconnectUser``, ``RefreshUser``) and to whom (a :class:`Target`); the same value

* takes effect on this node's connections: ``apply(node)``, which returns how many
  connections it targeted here;
* travels to the other nodes on the control channel: ``to_wire()`` gives the fields of
  the control message (``livehub.core.cluster`` lists them), ``command_from_wire`` reads one
  back and the receiving node applies it.

``Node.command`` and ``Node.command_soon`` do both. ``DisconnectUser`` and ``RefreshUser`` take
effect without awaiting anything (:class:`InstantControlCommand`, ``apply_now``), so code that
cannot wait, like ``Hub.disconnect``, can still give them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from livehub.models import StreamPosition
from livehub.protocol.codes import Disconnect, disconnect_force_no_reconnect

if TYPE_CHECKING:
    from livehub.core.node import Node
    from livehub.core.session import Session

log = logging.getLogger("livehub.core.control")

#: The namespace options a server-side subscribe may override (``SubscribeUser.overrides``).
OVERRIDES = ("force_push_join_leave", "force_recovery", "force_positioning")


def _text(value: bytes | None) -> str | None:
    """Raw JSON as it travels in a control message: text (the message itself is JSON)."""
    return None if value is None else value.decode()


def _raw(value: Any) -> bytes | None:
    return value.encode() if isinstance(value, str) else None


class StreamSession(Protocol):
    """A session of a streaming transport, as ``Node.stream_sessions`` holds it."""

    session: Session

    def feed(self, frame: str | bytes) -> bool:
        """Queue a frame of commands for the session; False if it takes none now."""
        ...


@dataclass(frozen=True)
class Target:
    """Which connections a command is for, picked as Centrifuge's hub picks them.

    Every connection of ``user`` ("" is the anonymous ones), narrowed to the one with the
    ``client`` id; ``all_users`` with an empty user is every connection. ``session`` ids
    exist only for streaming transports (``Node.stream_sessions``): a non-empty ``session``
    matches that session alone, never a WebSocket connection.
    """

    user: str
    client: str = ""
    session: str = ""
    all_users: bool = False

    def select(self, node: Node) -> list[Session]:
        """The targeted connections on ``node``."""
        everyone = self.all_users and not self.user
        if self.session:
            stream = node.stream_sessions.get(self.session)
            if stream is None:
                return []
            session = stream.session
            ok = (session.user == self.user or everyone) and (not self.client or session.id == self.client)
            return [session] if ok else []
        if self.client:
            found = node.sessions.get(self.client)
            if found is not None and (found.user == self.user or everyone):
                return [found]
            return []
        if everyone:
            return list(node.sessions.values())
        return list(node.users.get(self.user, ()))

    def elsewhere(self, found: int) -> bool:
        """May other nodes hold targeted connections too, ``found`` of them being here?

        Not when the one ``client`` or ``session`` aimed at is here.
        """
        return not ((self.client or self.session) and found)

    def to_wire(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "client": self.client,
            "session": self.session,
            "all_users": self.all_users,
        }

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Target:
        return cls(m["user"], m.get("client", ""), m.get("session", ""), bool(m.get("all_users")))


@dataclass(frozen=True)
class ControlCommand(ABC):
    """A command for the ``target`` connections; ``kind`` is its control message type."""

    kind: ClassVar[str]
    target: Target

    @abstractmethod
    async def apply(self, node: Node) -> int:
        """Act on the targeted connections of ``node``; returns how many there were."""

    @abstractmethod
    def to_wire(self) -> dict[str, Any]:
        """The control message's fields (but its type ``t``, which is ``kind``)."""

    @classmethod
    @abstractmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        """The command a control message carries; KeyError/ValueError/TypeError if malformed."""


@dataclass(frozen=True)
class InstantControlCommand(ControlCommand):
    """A command whose effect on this node's connections is immediate: nothing to await."""

    @abstractmethod
    def apply_now(self, node: Node) -> int:
        """``apply``, without awaiting."""

    async def apply(self, node: Node) -> int:
        return self.apply_now(node)


@dataclass(frozen=True)
class SubscribeUser(ControlCommand):
    """Subscribe the connections server-side; each gets a ``subscribe`` push. Those already
    in the channel are left as they are. ``overrides`` replace some of the namespace's
    options for these subscriptions (names in :data:`OVERRIDES`)."""

    kind: ClassVar[str] = "subscribe"
    channel: str
    info: bytes | None = None
    data: bytes | None = None
    expire_at: int = 0
    recover_since: StreamPosition | None = None
    overrides: Mapping[str, bool] = field(default_factory=dict)

    async def apply(self, node: Node) -> int:
        opts = node.options(self.channel)
        if self.overrides:
            opts = opts.model_copy(update=dict(self.overrides))
        targets = self.target.select(node)
        await asyncio.gather(
            *(
                s.server_subscribe(
                    self.channel,
                    opts,
                    info=self.info,
                    data=self.data,
                    expire_at=self.expire_at,
                    recover_since=self.recover_since,
                )
                for s in targets
            )
        )
        return len(targets)

    def to_wire(self) -> dict[str, Any]:
        since = self.recover_since
        return {
            **self.target.to_wire(),
            "channel": self.channel,
            "info": _text(self.info),
            "data": _text(self.data),
            "expire_at": self.expire_at,
            "since": None if since is None else [since.offset, since.epoch],
            "overrides": dict(self.overrides),
        }

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        since = m.get("since")
        overrides = m.get("overrides") or {}
        return cls(
            Target.from_wire(m),
            m["channel"],
            info=_raw(m.get("info")),
            data=_raw(m.get("data")),
            expire_at=int(m.get("expire_at", 0)),
            recover_since=None if since is None else StreamPosition(int(since[0]), str(since[1])),
            overrides={name: bool(overrides[name]) for name in OVERRIDES if name in overrides},
        )


@dataclass(frozen=True)
class UnsubscribeUser(ControlCommand):
    """Take the connections out of ``channel`` ("" is every channel): an ``unsubscribe``
    push, code 2000."""

    kind: ClassVar[str] = "unsubscribe"
    channel: str

    async def apply(self, node: Node) -> int:
        if self.channel:
            node.options(self.channel)  # 107/102 for a bad channel, even with nobody to unsubscribe
        targets = self.target.select(node)
        for s in targets:
            for name in [self.channel] if self.channel else list(s.subs):
                await s.server_unsubscribe(name)
        return len(targets)

    def to_wire(self) -> dict[str, Any]:
        return {**self.target.to_wire(), "channel": self.channel}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(Target.from_wire(m), m["channel"])


@dataclass(frozen=True)
class DisconnectUser(InstantControlCommand):
    """Close the connections, but those whose ids are in ``whitelist``. The default
    ``disconnect`` is 3503 "force disconnect": the SDKs do not reconnect."""

    kind: ClassVar[str] = "disconnect"
    disconnect: Disconnect | None = None
    whitelist: frozenset[str] = frozenset()

    def apply_now(self, node: Node) -> int:
        disconnect = self.disconnect or disconnect_force_no_reconnect()
        targets = [s for s in self.target.select(node) if s.id not in self.whitelist]
        for s in targets:
            s.disconnect(disconnect)
        return len(targets)

    def to_wire(self) -> dict[str, Any]:
        d = self.disconnect
        return {
            **self.target.to_wire(),
            "whitelist": sorted(self.whitelist),
            "code": 0 if d is None else d.code,
            "reason": "" if d is None else d.reason,
        }

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        code, reason = m.get("code", 0), m.get("reason", "")
        return cls(
            Target.from_wire(m),
            Disconnect(code, reason) if code else None,
            frozenset(m.get("whitelist") or ()),
        )


@dataclass(frozen=True)
class RefreshUser(InstantControlCommand):
    """Extend (``expire_at``), end (``expired``: 3005) or lift (neither) the connections'
    expiry; a new connection ``info`` if not None."""

    kind: ClassVar[str] = "refresh"
    expired: bool = False
    expire_at: int = 0
    info: bytes | None = None

    def apply_now(self, node: Node) -> int:
        targets = self.target.select(node)
        for s in targets:
            s.server_refresh(expired=self.expired, expire_at=self.expire_at, info=self.info)
        return len(targets)

    def to_wire(self) -> dict[str, Any]:
        return {
            **self.target.to_wire(),
            "expired": self.expired,
            "expire_at": self.expire_at,
            "info": _text(self.info),
        }

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        return cls(
            Target.from_wire(m),
            expired=bool(m.get("expired")),
            expire_at=int(m.get("expire_at", 0)),
            info=_raw(m.get("info")),
        )


@dataclass(frozen=True)
class Emulate(InstantControlCommand):
    """Commands of a streaming session (HTTP-streaming, SSE), sent to ``/emulation`` on
    whichever node: for the session ``target.session`` on node ``node``. The frame is text
    (JSON) or bytes (Protobuf) as the session's encoding reads it; only node ``node``
    looks for the session (the others drop the message)."""

    kind: ClassVar[str] = "emulation"
    node: str = ""
    frame: str | bytes = ""

    def apply_now(self, node: Node) -> int:
        if self.node != node.id:
            return 0
        stream = node.stream_sessions.get(self.target.session)
        if stream is None:
            log.debug("emulation request for session %s, not on this node: dropped", self.target.session)
            return 0
        if not stream.feed(self.frame):
            log.info("session %s: emulation request dropped, its inbox is full", self.target.session)
        return 1

    def to_wire(self) -> dict[str, Any]:
        binary = isinstance(self.frame, bytes)
        frame = base64.b64encode(self.frame).decode() if isinstance(self.frame, bytes) else self.frame
        return {**self.target.to_wire(), "node": self.node, "frame": frame, "binary": binary}

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Self:
        frame = m["frame"]
        if not isinstance(frame, str):
            raise TypeError("emulation frame must be text")
        return cls(Target.from_wire(m), str(m["node"]), base64.b64decode(frame) if m.get("binary") else frame)


#: Control message type -> command class.
COMMANDS: dict[str, type[ControlCommand]] = {
    cls.kind: cls for cls in (SubscribeUser, UnsubscribeUser, DisconnectUser, RefreshUser, Emulate)
}


def command_from_wire(message: dict[str, Any]) -> ControlCommand | None:
    """The command a control message carries, or None if it carries none (``node``,
    ``leave``, an unknown type); raises if it is malformed."""
    kind = message.get("t")
    cls = COMMANDS.get(kind) if isinstance(kind, str) else None
    return None if cls is None else cls.from_wire(message)


__all__ = [
    "COMMANDS",
    "OVERRIDES",
    "ControlCommand",
    "DisconnectUser",
    "Emulate",
    "InstantControlCommand",
    "RefreshUser",
    "StreamSession",
    "SubscribeUser",
    "Target",
    "UnsubscribeUser",
    "command_from_wire",
]
