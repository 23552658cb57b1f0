"""RFC 6455 for the server side, sans I/O: the opening handshake and the frames.

``livehub serve`` answers its client endpoint with this instead of an ASGI WebSocket:
the ASGI path keeps a task, a receive queue and request objects alive for every idle
connection, which is most of what a connection costs. This module knows only what
such a server needs: client frames must be masked, server frames are not; no extension
is negotiated (permessage-deflate stays off so that one encoded publication can be
written to every recipient as is); text must be UTF-8 (checked by the caller, which
decodes anyway).

Errors are :class:`WebSocketError` carrying the close code to send (1002 protocol
error, 1007 bad data, 1009 too big) or, during the handshake, :class:`HandshakeError`
carrying the HTTP status to answer with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import NamedTuple

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DATA_OPCODES = (OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)


class WebSocketError(Exception):
    """The peer broke the protocol: close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class HandshakeError(Exception):
    """The upgrade request cannot be accepted: answer with HTTP ``status``."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


# -- the opening handshake


class Request(NamedTuple):
    method: str
    #: The request target without its query string, as sent (still percent-encoded).
    path: str
    #: Header names in lower case; a repeated header's values joined with ", ".
    headers: dict[str, str]
    #: The request target as sent, query string included.
    target: str = ""
    #: Every header line as sent, names in lower case: what an ASGI scope carries.
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()


def parse_request(head: bytes) -> Request:
    """The request line and headers of an HTTP/1.1 request head (up to the blank line)."""
    try:
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise HandshakeError(400, "malformed request line") from None
    headers: dict[str, str] = {}
    raw: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if not line:
            break
        name, sep, value = line.partition(":")
        if not sep:
            raise HandshakeError(400, "malformed header line")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raw.append((name.encode("latin-1"), value.encode("latin-1")))
    return Request(method, target.partition("?")[0], headers, target, tuple(raw))


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",") if t.strip()]


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def check_upgrade(request: Request) -> str:
    """The client's key, once the request is a valid WebSocket upgrade (else HandshakeError)."""
    headers = request.headers
    if request.method != "GET":
        raise HandshakeError(405, "a WebSocket upgrade is a GET", (("Allow", "GET"),))
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise HandshakeError(426, "expected Upgrade: websocket", (("Upgrade", "websocket"),))
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise HandshakeError(400, "expected Connection: Upgrade")
    if headers.get("sec-websocket-version") != "13":
        raise HandshakeError(426, "unsupported WebSocket version", (("Sec-WebSocket-Version", "13"),))
    key = headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise HandshakeError(400, "invalid Sec-WebSocket-Key") from None
    return key


def offered_subprotocols(request: Request) -> list[str]:
    return [t.strip() for t in request.headers.get("sec-websocket-protocol", "").split(",") if t.strip()]


def accept_response(key: str, subprotocol: str | None = None) -> bytes:
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    408: "Request Timeout",
    426: "Upgrade Required",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def reject_response(error: HandshakeError) -> bytes:
    body = error.reason.encode() + b"\n"
    lines = [
        f"HTTP/1.1 {error.status} {_REASONS.get(error.status, 'Error')}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in error.headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- frames


def _apply_mask_py(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """XOR with the 4-byte mask: done on one big integer, so in C, not per byte."""
    n = len(data)
    repeated = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")


try:  # the websockets package (a dependency) ships the same XOR in C
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without its C extension
    apply_mask = _apply_mask_py


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, unfragmented frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def encode_close(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit the 125-byte limit of control frames."""
    if code == CLOSE_NO_STATUS:
        return encode_frame(OP_CLOSE, b"")
    data = reason.encode()[:123]
    while data:  # do not cut a character in two
        try:
            data.decode()
            break
        except UnicodeDecodeError:
            data = data[:-1]
    return encode_frame(OP_CLOSE, struct.pack("!H", code) + data)


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a close frame's payload (1005 when it has none)."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    (code,) = struct.unpack("!H", payload[:2])
    if not (code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code <= 4999):
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise WebSocketError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


class FrameParser:
    """Client frames in, whole messages out: ``(opcode, payload)``, fragments reassembled,
    control frames returned as they come (they may arrive between fragments).

    ``max_size`` bounds a message: an unfragmented one by its payload, a fragmented one by
    its frames' bytes on the wire (headers included), so that a message made of millions of
    empty continuation frames is refused as too big like any other (each costs ≥ 6 bytes).
    """

    __slots__ = ("_buffer", "_need", "_max_size", "_fragments", "_fragment_opcode", "_fragment_size")

    def __init__(self, max_size: int) -> None:
        self._buffer = bytearray()
        #: How many buffered bytes the incomplete frame needs before parsing is worth trying.
        self._need = 0
        self._max_size = max_size
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._fragment_size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The messages completed by ``data``; raises WebSocketError on a protocol violation."""
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return []
            data = bytes(buffer)
        messages: list[tuple[int, bytes]] = []
        pos = 0
        end = len(data)
        while True:
            if end - pos < 2:
                need = 2
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "reserved bits set: no extension was negotiated")
            if not b1 & 0x80:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            length = b1 & 0x7F
            header = 6
            if length == 126:
                header = 8
                if end - pos < header:
                    need = header
                    break
                (length,) = struct.unpack_from("!H", data, pos + 2)
            elif length == 127:
                header = 14
                if end - pos < header:
                    need = header
                    break
                (length,) = struct.unpack_from("!Q", data, pos + 2)
            fin = b0 & 0x80
            if opcode in _CONTROL_OPCODES:
                if length > 125 or not fin:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "invalid control frame")
            elif opcode in _DATA_OPCODES or opcode == OP_CONTINUATION:
                # a frame of a fragmented message costs its header too (see the class doc)
                cost = length if fin and opcode != OP_CONTINUATION else length + header
                if self._fragment_size + cost > self._max_size:
                    raise WebSocketError(CLOSE_TOO_BIG, "message too big")
            else:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            if end - pos < header + length:
                need = header + length
                break
            mask = data[pos + header - 4 : pos + header]
            payload = apply_mask(data[pos + header : pos + header + length], mask) if length else b""
            pos += header + length
            if opcode in _CONTROL_OPCODES:
                messages.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if not self._fragment_opcode:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
                if length:
                    self._fragments.append(payload)
                self._fragment_size += length + header
                if fin:
                    messages.append((self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments = []
                    self._fragment_opcode = self._fragment_size = 0
            elif self._fragment_opcode:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "new message before the last one ended")
            elif fin:
                messages.append((opcode, payload))
            else:
                self._fragment_opcode = opcode
                self._fragments.append(payload)
                self._fragment_size = length + header
        self._need = need
        if pos < end:
            if pos or not buffer:
                buffer[:] = data[pos:]
        elif buffer:
            buffer.clear()
        return messages
