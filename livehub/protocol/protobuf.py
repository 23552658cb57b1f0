"""Frames in, commands out; replies and pushes in, frames out: the Protobuf encoding.

The messages are those of Centrifugo's client protocol v2 (``client.proto``): the client
sends ``Command``s, the server ``Reply``s; a push is a ``Reply`` without id carrying
``push``. A binary frame holds one or more messages, each prefixed with its length as a
varint, in both directions. Payloads (``data``, ``info``) are raw bytes.

Written by hand rather than generated: the layout below is all of the schema this server
reads or writes, no runtime dependency is added, and the cost that matters, a publication
push (encoded once per fan-out), is 1.3-1.8 times lower here than building and serializing
it with the ``protobuf`` runtime (upb); upb parses a command 1.5-2 times as fast, but a
command is handled once, not once per subscriber (``bench/protobuf_micro.py``).
Sans-I/O: bytes in, bytes out.

Replies are built from the same dicts the JSON encoding dumps (``livehub.protocol.codec``),
so the session has one shape of result for both encodings: :func:`encode_reply` walks a
dict along :data:`SCHEMA`; keys the schema does not know are skipped, zero values are
omitted (proto3), a message-typed field is always written (an empty result still says
which command it answers).
"""

from __future__ import annotations

from typing import Any

import orjson

from livehub.models import ClientInfo, Publication, StreamPosition
from livehub.protocol.codes import Error, disconnect_bad_request
from livehub.protocol.commands import (
    PONG,
    ChannelParams,
    ClientCommand,
    ConnectParams,
    HistoryParams,
    PublishParams,
    Recovery,
    RefreshParams,
    Request,
    RPCParams,
    SendParams,
    SubRefreshParams,
    SubscribeParams,
)

# -- varints


def varint(value: int) -> bytes:
    """An unsigned varint; a negative value is written as its 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; at most 10 bytes (64 bits)."""
    result = shift = 0
    end = min(pos + 10, len(buf))
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
    raise disconnect_bad_request()


def delimited(message: bytes) -> bytes:
    """One message as it travels in a frame: its length, then itself."""
    n = len(message)
    return (bytes((n,)) if n < 0x80 else varint(n)) + message


# -- encoding: the schema of what the server writes

# Field kinds: a varint (uint32/uint64/int64), a bool, a string, bytes, a message, repeated
# messages, map<string, message>, map<string, string>.
_VARINT, _BOOL, _STRING, _BYTES, _MESSAGE, _REPEATED, _MAP, _STRMAP = range(8)

Schema = dict[str, tuple[int, int, Any]]

CLIENT_INFO: Schema = {
    "user": (1, _STRING, None),
    "client": (2, _STRING, None),
    "conn_info": (3, _BYTES, None),
    "chan_info": (4, _BYTES, None),
}
PUBLICATION: Schema = {
    "data": (4, _BYTES, None),
    "info": (5, _MESSAGE, CLIENT_INFO),
    "offset": (6, _VARINT, None),
    "tags": (7, _STRMAP, None),
    "delta": (8, _BOOL, None),
    "time": (9, _VARINT, None),
    "channel": (10, _STRING, None),
    "key": (11, _STRING, None),
    "removed": (12, _BOOL, None),
    "epoch": (14, _STRING, None),
    "version": (16, _VARINT, None),
}
SUBSCRIBE_RESULT: Schema = {
    "expires": (1, _BOOL, None),
    "ttl": (2, _VARINT, None),
    "recoverable": (3, _BOOL, None),
    "epoch": (6, _STRING, None),
    "publications": (7, _REPEATED, PUBLICATION),
    "recovered": (8, _BOOL, None),
    "offset": (9, _VARINT, None),
    "positioned": (10, _BOOL, None),
    "data": (11, _BYTES, None),
    "was_recovering": (12, _BOOL, None),
    "delta": (13, _BOOL, None),
    "type": (15, _VARINT, None),
    "phase": (16, _VARINT, None),
    "cursor": (17, _STRING, None),
    "state": (18, _REPEATED, PUBLICATION),
    "publish_debounce": (19, _VARINT, None),
}
CONNECT_RESULT: Schema = {
    "client": (1, _STRING, None),
    "version": (2, _STRING, None),
    "expires": (3, _BOOL, None),
    "ttl": (4, _VARINT, None),
    "data": (5, _BYTES, None),
    "subs": (6, _MAP, SUBSCRIBE_RESULT),
    "ping": (7, _VARINT, None),
    "pong": (8, _BOOL, None),
    "session": (9, _STRING, None),
    "node": (10, _STRING, None),
    "time": (11, _VARINT, None),
}
_EXPIRES: Schema = {"expires": (1, _BOOL, None), "ttl": (2, _VARINT, None)}
_EMPTY: Schema = {}
_INFO_ONLY: Schema = {"info": (1, _MESSAGE, CLIENT_INFO)}
PUSH: Schema = {
    "channel": (2, _STRING, None),
    "pub": (4, _MESSAGE, PUBLICATION),
    "join": (5, _MESSAGE, _INFO_ONLY),
    "leave": (6, _MESSAGE, _INFO_ONLY),
    "unsubscribe": (7, _MESSAGE, {"code": (2, _VARINT, None), "reason": (3, _STRING, None)}),
    "message": (8, _MESSAGE, {"data": (1, _BYTES, None)}),
    "subscribe": (
        9,
        _MESSAGE,
        {
            "recoverable": (1, _BOOL, None),
            "epoch": (4, _STRING, None),
            "offset": (5, _VARINT, None),
            "positioned": (6, _BOOL, None),
            "data": (7, _BYTES, None),
        },
    ),
    "connect": (10, _MESSAGE, CONNECT_RESULT),
    "disconnect": (
        11,
        _MESSAGE,
        {"code": (1, _VARINT, None), "reason": (2, _STRING, None), "reconnect": (3, _BOOL, None)},
    ),
    "refresh": (12, _MESSAGE, _EXPIRES),
}
REPLY: Schema = {
    "id": (1, _VARINT, None),
    "error": (
        2,
        _MESSAGE,
        {"code": (1, _VARINT, None), "message": (2, _STRING, None), "temporary": (3, _BOOL, None)},
    ),
    "push": (4, _MESSAGE, PUSH),
    "connect": (5, _MESSAGE, CONNECT_RESULT),
    "subscribe": (6, _MESSAGE, SUBSCRIBE_RESULT),
    "unsubscribe": (7, _MESSAGE, _EMPTY),
    "publish": (8, _MESSAGE, _EMPTY),
    "presence": (9, _MESSAGE, {"presence": (1, _MAP, CLIENT_INFO)}),
    "presence_stats": (10, _MESSAGE, {"num_clients": (1, _VARINT, None), "num_users": (2, _VARINT, None)}),
    "history": (
        11,
        _MESSAGE,
        {
            "publications": (1, _REPEATED, PUBLICATION),
            "epoch": (2, _STRING, None),
            "offset": (3, _VARINT, None),
        },
    ),
    "ping": (12, _MESSAGE, _EMPTY),
    "rpc": (13, _MESSAGE, {"data": (1, _BYTES, None)}),
    "refresh": (
        14,
        _MESSAGE,
        {
            "client": (1, _STRING, None),
            "version": (2, _STRING, None),
            "expires": (3, _BOOL, None),
            "ttl": (4, _VARINT, None),
        },
    ),
    "sub_refresh": (
        15,
        _MESSAGE,
        {"expires": (1, _BOOL, None), "ttl": (2, _VARINT, None), "items": (3, _REPEATED, PUBLICATION)},
    ),
}


def _tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def _payload(value: Any) -> bytes:
    """A ``bytes`` field's content from what the JSON side holds: raw JSON (an
    ``orjson.Fragment``, dumped back to its bytes), bytes, a string (a delta subscriber's
    ``data``, sent as text in JSON), or any other JSON value."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


def _field(number: int, kind: int, sub: Any, value: Any) -> bytes:
    if kind == _MESSAGE:
        return _tag(number, 2) + delimited(encode_message(sub, value))
    if kind == _VARINT:
        return _tag(number, 0) + varint(value) if value else b""
    if kind == _BOOL:
        return _tag(number, 0) + b"\x01" if value else b""
    if kind == _STRING:
        return _tag(number, 2) + delimited(value.encode()) if value else b""
    if kind == _BYTES:
        data = _payload(value)
        return _tag(number, 2) + delimited(data) if data else b""
    if kind == _REPEATED:
        return b"".join(_tag(number, 2) + delimited(encode_message(sub, v)) for v in value)
    entries = []
    for key, v in value.items():
        entry = _field(1, _STRING, None, key) + (
            _field(2, _STRING, None, v) if kind == _STRMAP else _field(2, _MESSAGE, sub, v)
        )
        entries.append(_tag(number, 2) + delimited(entry))
    return b"".join(entries)


def encode_message(schema: Schema, obj: dict[str, Any]) -> bytes:
    """One message (without its length) from the JSON encoding's dict for it."""
    out = []
    for key, value in obj.items():
        spec = schema.get(key)
        if spec is not None and value is not None:
            out.append(_field(spec[0], spec[1], spec[2], value))
    return b"".join(out)


#: The server's ping: an empty Reply (the client's pong is an empty Command).
PING = b"\x00"


def encode_reply(command_id: int, method: str, result: dict[str, Any]) -> bytes:
    return delimited(encode_message(REPLY, {"id": command_id, method: result}))


def encode_error(command_id: int, error: Error) -> bytes:
    return delimited(encode_message(REPLY, {"id": command_id, "error": error.to_dict()}))


def encode_push(channel: str, kind: str, body: dict[str, Any]) -> bytes:
    return delimited(encode_message(REPLY, {"push": {"channel": channel, kind: body}}))


# -- the hot path: a publication push, without the dict


def _info(info: ClientInfo) -> bytes:
    out = b""
    if info.user:
        out += b"\x0a" + delimited(info.user.encode())
    if info.client:
        out += b"\x12" + delimited(info.client.encode())
    if info.conn_info:
        out += b"\x1a" + delimited(info.conn_info)
    if info.chan_info:
        out += b"\x22" + delimited(info.chan_info)
    return out


def encode_publication(
    channel: str, pub: Publication, data: bytes | None = None, delta: bool = False
) -> bytes:
    """A ``pub`` push, ready for a frame; ``data`` overrides (a fossil delta, with ``delta``)."""
    body = pub.data if data is None else data
    msg = b"\x22" + delimited(body) if body else b""  # Publication.data = 4
    if pub.info is not None:
        msg += b"\x2a" + delimited(_info(pub.info))  # info = 5
    if pub.offset:
        msg += b"\x30" + varint(pub.offset)  # offset = 6
    if pub.tags:
        msg += _field(7, _STRMAP, None, pub.tags)
    if delta:
        msg += b"\x40\x01"  # delta = 8
    if pub.time:
        msg += b"\x48" + varint(pub.time)  # time = 9
    if pub.key:
        msg += b"\x5a" + delimited(pub.key.encode())  # key = 11
    if pub.removed:
        msg += b"\x60\x01"  # removed = 12
    push = (b"\x12" + delimited(channel.encode()) if channel else b"") + b"\x22" + delimited(msg)
    return delimited(b"\x22" + delimited(push))  # Reply.push = 4


def join_frame(messages: list[bytes]) -> bytes:
    """Several length-delimited messages in one frame: their concatenation."""
    return messages[0] if len(messages) == 1 else b"".join(messages)


# -- decoding commands

_Fields = dict[int, list[int | bytes]]


def _fields(buf: bytes) -> _Fields:
    """A message's fields by number (varints as ints, length-delimited as bytes); fixed-width
    fields are skipped, groups and truncation are malformed."""
    out: _Fields = {}
    pos, end = 0, len(buf)
    while pos < end:
        key = buf[pos]  # field numbers up to 15 take one byte: the common case, inline
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 2:
            n = buf[pos] if pos < end else 0x80
            if n < 0x80:
                pos += 1
            else:
                n, pos = read_varint(buf, pos)
            if pos + n > end:
                raise disconnect_bad_request()
            value, pos = buf[pos : pos + n], pos + n
        elif wire_type == 0:
            value, pos = read_varint(buf, pos)
        elif wire_type == 1 or wire_type == 5:
            pos += 8 if wire_type == 1 else 4
            if pos > end:
                raise disconnect_bad_request()
            continue
        else:
            raise disconnect_bad_request()
        if number == 0:
            raise disconnect_bad_request()
        values = out.get(number)
        if values is None:
            out[number] = [value]
        else:
            values.append(value)
    return out


def _last(fields: _Fields, number: int) -> int | bytes | None:
    values = fields.get(number)
    return values[-1] if values else None  # proto3: the last occurrence wins


def _int(fields: _Fields, number: int, signed: bool = False) -> int:
    value = _last(fields, number)
    if value is None:
        return 0
    if not isinstance(value, int):
        raise disconnect_bad_request()
    return value - (1 << 64) if signed and value >= 1 << 63 else value


def _int32(fields: _Fields, number: int) -> int:
    value = _int(fields, number, signed=True)
    return ((value + (1 << 31)) % (1 << 32)) - (1 << 31)  # an int32 keeps its low 32 bits


def _bool(fields: _Fields, number: int) -> bool:
    return bool(_int(fields, number))


def _bytes(fields: _Fields, number: int) -> bytes | None:
    value = _last(fields, number)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise disconnect_bad_request()
    return value


def _str(fields: _Fields, number: int) -> str:
    value = _bytes(fields, number)
    if not value:
        return ""
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise disconnect_bad_request() from None


def _message(fields: _Fields, number: int) -> _Fields:
    value = _bytes(fields, number)
    return _fields(value) if value else {}


def _connect(f: _Fields) -> ConnectParams:
    subs = {}
    for entry in f.get(3, ()):
        if not isinstance(entry, bytes):
            raise disconnect_bad_request()
        e = _fields(entry)
        s = _message(e, 2)
        subs[_str(e, 1)] = Recovery(_bool(s, 3), _int(s, 7), _str(s, 6))
    headers = {}
    for entry in f.get(6, ()):  # map<string, string> headers
        if not isinstance(entry, bytes):
            raise disconnect_bad_request()
        e = _fields(entry)
        headers[_str(e, 1)] = _str(e, 2)
    return ConnectParams(_str(f, 1), _bytes(f, 2), _str(f, 4), _str(f, 5), subs, headers)


def _subscribe(f: _Fields) -> SubscribeParams:
    return SubscribeParams(
        channel=_str(f, 1),
        token=_str(f, 2),
        data=_bytes(f, 8),
        recover=_bool(f, 3),
        offset=_int(f, 7),
        epoch=_str(f, 6),
        positioned=_bool(f, 9),
        recoverable=_bool(f, 10),
        join_leave=_bool(f, 11),
        delta=_str(f, 12),
        flag=_int(f, 14, signed=True),
        type=_int32(f, 15),
        phase=_int32(f, 16),
        cursor=_str(f, 17),
        limit=_int32(f, 18),
        tf=_filter(_message(f, 13)) if _last(f, 13) is not None else None,
    )


def _filter(f: _Fields, depth: int = 0) -> dict[str, Any]:
    """A FilterNode as the dict its JSON form is (``livehub.protocol.tags_filter`` checks it)."""
    if depth > 16:
        raise disconnect_bad_request()
    out: dict[str, Any] = {"op": _str(f, 1), "key": _str(f, 2), "cmp": _str(f, 3), "val": _str(f, 4)}
    vals = []
    for v in f.get(5, ()):
        if not isinstance(v, bytes):
            raise disconnect_bad_request()
        vals.append(v.decode(errors="replace"))
    out["vals"] = vals
    nodes = []
    for n in f.get(6, ()):
        if not isinstance(n, bytes):
            raise disconnect_bad_request()
        nodes.append(_filter(_fields(n), depth + 1))
    out["nodes"] = nodes
    return out


def _publish(f: _Fields) -> PublishParams:
    return PublishParams(_str(f, 1), _bytes(f, 2) or b"null", _int32(f, 3), _str(f, 4), _bool(f, 5))


def _sub_refresh(f: _Fields) -> SubRefreshParams:
    batches = []
    for raw in f.get(4, ()):
        if not isinstance(raw, bytes):
            raise disconnect_bad_request()
        batch = _fields(raw)
        items = []
        for raw_item in batch.get(2, ()):
            if not isinstance(raw_item, bytes):
                raise disconnect_bad_request()
            item = _fields(raw_item)
            items.append((_str(item, 1), _int(item, 2)))
        batches.append((_str(batch, 1), tuple(items)))
    untrack = []
    for raw in f.get(5, ()):
        if not isinstance(raw, bytes):
            raise disconnect_bad_request()
        try:
            untrack.append(raw.decode())
        except UnicodeDecodeError:
            raise disconnect_bad_request() from None
    return SubRefreshParams(_str(f, 1), _str(f, 2), _int32(f, 3), tuple(batches), tuple(untrack))


def _history(f: _Fields) -> HistoryParams:
    since = None
    if _last(f, 8) is not None:
        s = _message(f, 8)
        since = StreamPosition(_int(s, 1), _str(s, 2))
    return HistoryParams(_str(f, 1), _int32(f, 7), since, _bool(f, 9))


_PARSERS: dict[int, tuple[str, Any]] = {
    4: ("connect", _connect),
    5: ("subscribe", _subscribe),
    6: ("unsubscribe", lambda f: ChannelParams(_str(f, 1))),
    7: ("publish", _publish),
    8: ("presence", lambda f: ChannelParams(_str(f, 1))),
    9: ("presence_stats", lambda f: ChannelParams(_str(f, 1))),
    10: ("history", _history),
    11: ("ping", lambda f: None),
    12: ("send", lambda f: SendParams(_bytes(f, 1))),
    13: ("rpc", lambda f: RPCParams(_str(f, 2), _bytes(f, 1))),
    14: ("refresh", lambda f: RefreshParams(_str(f, 1))),
    15: ("sub_refresh", _sub_refresh),
}


def decode_command(buf: bytes) -> ClientCommand:
    """One ``Command``; the empty one is a pong. Same rules as the JSON encoding's
    :func:`livehub.protocol.commands.parse_command`: one method, an id unless ``send``."""
    if not buf:
        return PONG
    fields = _fields(buf)
    cid = _int(fields, 1)
    if cid > 0xFFFFFFFF:
        raise disconnect_bad_request()
    for number in fields:
        entry = _PARSERS.get(number)
        if entry is not None:
            method, parse = entry
            if cid == 0 and method != "send":
                raise disconnect_bad_request()
            request: Request = parse(_message(fields, number))
            return ClientCommand(cid, method, request)
    raise disconnect_bad_request()


def decode_frame(frame: str | bytes) -> list[ClientCommand]:
    """Every length-delimited command of a binary frame, in order (3501 if malformed)."""
    if isinstance(frame, str):
        raise disconnect_bad_request()
    commands = []
    pos, end = 0, len(frame)
    while pos < end:
        n, pos = read_varint(frame, pos)
        if pos + n > end:
            raise disconnect_bad_request()
        commands.append(decode_command(frame[pos : pos + n]))
        pos += n
    if not commands:
        raise disconnect_bad_request()
    return commands


def decode_emulation_request(buf: bytes) -> tuple[str, str, bytes]:
    """An ``EmulationRequest`` (node = 1, session = 2, data = 3): (node, session, data);
    3501's Disconnect if malformed."""
    fields = _fields(buf)
    return _str(fields, 1), _str(fields, 2), _bytes(fields, 3) or b""
