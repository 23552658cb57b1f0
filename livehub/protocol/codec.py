"""Frames in, commands out; replies and pushes in, frames out. JSON encoding only.

A frame holds one or more JSON objects separated by ``\\n`` in both directions
(the SDKs split on newlines and process messages in order). Embedded user payloads
(``data``, ``info``) travel as raw JSON, never base64, so they are spliced into the
output with :class:`orjson.Fragment` instead of being parsed and dumped again.
"""

from __future__ import annotations

from typing import Any

import orjson

from livehub.models import ClientInfo, Publication
from livehub.protocol.codes import Error, disconnect_bad_request
from livehub.protocol.commands import ClientCommand, parse_command

#: The server's ping, and the client's pong: an empty object.
PING = "{}"


def decode_frame(frame: str | bytes) -> list[ClientCommand]:
    """Parse every newline-separated command of a frame; blank lines are skipped.

    Raises :data:`disconnect_bad_request()` for anything that is not a valid command,
    which the transport turns into close code 3501.
    """
    commands = []
    lines: list[str] | list[bytes] = frame.split(b"\n") if isinstance(frame, bytes) else frame.split("\n")
    for line in lines:
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise disconnect_bad_request() from None
        commands.append(parse_command(obj))
    if not commands:
        raise disconnect_bad_request()
    return commands


def raw(data: bytes | None) -> orjson.Fragment | None:
    return None if data is None else orjson.Fragment(data)


def info_dict(info: ClientInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"user": info.user, "client": info.client}
    if info.conn_info is not None:
        out["conn_info"] = orjson.Fragment(info.conn_info)
    if info.chan_info is not None:
        out["chan_info"] = orjson.Fragment(info.chan_info)
    return out


def publication_dict(pub: Publication, data: Any = None, delta: bool = False) -> dict[str, Any]:
    """A Publication as the protocol's object; ``data`` overrides (for fossil deltas). A map
    key's removal has no data."""
    out: dict[str, Any] = {}
    if data is not None:
        out["data"] = data
    elif pub.data:
        out["data"] = orjson.Fragment(pub.data)
    if delta:
        out["delta"] = True
    if pub.info is not None:
        out["info"] = info_dict(pub.info)
    if pub.offset:
        out["offset"] = pub.offset
    if pub.tags:
        out["tags"] = pub.tags
    if pub.time:
        out["time"] = pub.time
    if pub.key:
        out["key"] = pub.key
    if pub.removed:
        out["removed"] = True
    return out


def encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def encode_reply(command_id: int, method: str, result: dict[str, Any]) -> str:
    """A successful reply; the result key is always present, even when empty."""
    return encode({"id": command_id, method: result})


def encode_error(command_id: int, error: Error) -> str:
    return encode({"id": command_id, "error": error.to_dict()})


def encode_push(channel: str, kind: str, body: dict[str, Any]) -> str:
    push: dict[str, Any] = {"channel": channel, kind: body} if channel else {kind: body}
    return encode({"push": push})


def encode_publication(channel: str, pub: Publication, data: Any = None, delta: bool = False) -> str:
    return encode_push(channel, "pub", publication_dict(pub, data, delta))


def join_frame(messages: list[str]) -> str:
    """Pack several messages into one frame, as the SDKs expect: no trailing newline."""
    return messages[0] if len(messages) == 1 else "\n".join(messages)
