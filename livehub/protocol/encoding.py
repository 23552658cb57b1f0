"""The two encodings of the client protocol, and which one a connection speaks.

A connection picks its encoding once, at the WebSocket handshake (:func:`negotiate`):
JSON in text frames, or Protobuf (subprotocol ``centrifuge-protobuf``) in binary frames.
Everything that writes to a connection encodes with its :class:`Encoding`; fan-out
encodes a publication once per encoding it meets (``livehub.core.subscription.fan_out``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from livehub.protocol import codec, protobuf
from livehub.protocol.codes import Error
from livehub.protocol.commands import ClientCommand

#: One encoded message (a reply or a push): text for JSON, bytes for Protobuf.
Message = str | bytes


@dataclass(frozen=True, slots=True)
class Encoding:
    name: str
    #: The WebSocket subprotocol that selects it.
    subprotocol: str
    #: Binary frames (Protobuf) rather than text frames (JSON).
    binary: bool
    #: The server's ping message.
    ping: Message
    decode_frame: Callable[[str | bytes], list[ClientCommand]]
    encode_reply: Callable[[int, str, dict[str, Any]], Message]
    encode_error: Callable[[int, Error], Message]
    encode_push: Callable[[str, str, dict[str, Any]], Message]
    #: Several queued messages as one frame.
    join_frame: Callable[[list[Any]], Message]


JSON = Encoding(
    "json",
    "centrifuge-json",
    False,
    codec.PING,
    codec.decode_frame,
    codec.encode_reply,
    codec.encode_error,
    codec.encode_push,
    codec.join_frame,
)
PROTOBUF = Encoding(
    "protobuf",
    "centrifuge-protobuf",
    True,
    protobuf.PING,
    protobuf.decode_frame,
    protobuf.encode_reply,
    protobuf.encode_error,
    protobuf.encode_push,
    protobuf.join_frame,
)


def negotiate(offered: list[str], query: str = "") -> tuple[Encoding, str | None]:
    """The encoding a handshake asks for, and the subprotocol to answer with (None: none
    offered). Protobuf by its subprotocol, or by ``?format=protobuf`` / ``?cf_protocol=protobuf``
    (Centrifugo's query forms); JSON otherwise."""
    if PROTOBUF.subprotocol in offered:
        return PROTOBUF, PROTOBUF.subprotocol
    subprotocol = JSON.subprotocol if JSON.subprotocol in offered else None
    if query and "protobuf" in query:
        params = parse_qs(query)
        if "protobuf" in params.get("format", ()) or "protobuf" in params.get("cf_protocol", ()):
            return PROTOBUF, subprotocol
    return JSON, subprotocol
