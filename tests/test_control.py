"""Commands for connections travel between nodes unchanged (``livehub.core.control``)."""

from __future__ import annotations

import orjson
import pytest

from livehub.core.control import (
    ControlCommand,
    DisconnectUser,
    RefreshUser,
    SubscribeUser,
    Target,
    UnsubscribeUser,
    command_from_wire,
)
from livehub.models import StreamPosition
from livehub.protocol.codes import Disconnect


@pytest.mark.parametrize(
    "command",
    [
        SubscribeUser(Target("alice"), "news"),
        SubscribeUser(
            Target("", client="c1", all_users=True),
            "chat:1",
            info=b'{"name":"A"}',
            data=b"[1]",
            expire_at=123,
            recover_since=StreamPosition(7, "ep"),
            overrides={"force_recovery": True, "force_push_join_leave": False},
        ),
        UnsubscribeUser(Target("bob"), ""),
        UnsubscribeUser(Target("bob", "c2"), "news"),
        DisconnectUser(Target("carol")),
        DisconnectUser(Target("carol"), Disconnect(4000, "bye"), frozenset({"c3", "c4"})),
        RefreshUser(Target("dave"), expired=True),
        RefreshUser(Target("dave", session="s"), expire_at=99, info=b'"x"'),
    ],
)
def test_a_command_reads_back_as_it_was_sent(command: ControlCommand) -> None:
    message = orjson.loads(orjson.dumps({"n": "node", "t": command.kind, **command.to_wire()}))
    assert command_from_wire(message) == command


def test_other_control_messages_carry_no_command() -> None:
    assert command_from_wire({"n": "node", "t": "node", "info": {}}) is None
    assert command_from_wire({"n": "node", "t": "nothing-known"}) is None
    assert command_from_wire({"n": "node", "t": ["not", "a", "type"]}) is None


def test_unknown_overrides_are_not_taken() -> None:
    message = {"t": "subscribe", "user": "u", "channel": "c", "overrides": {"presence": False}}
    command = command_from_wire(message)
    assert isinstance(command, SubscribeUser) and command.overrides == {}
