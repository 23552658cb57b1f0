"""RFC 6455 framing and handshake, sans I/O: bytes in, messages or errors out.

Client frames are built here by hand (masked, as a client must send them); examples
with fixed bytes are from RFC 6455 §1.3 and §5.7.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livehub.protocol.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    HandshakeError,
    WebSocketError,
    _apply_mask_py,
    accept_key,
    accept_response,
    apply_mask,
    check_upgrade,
    encode_close,
    encode_frame,
    offered_subprotocols,
    parse_close,
    parse_request,
    reject_response,
)


def client_frame(
    opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None, rsv: int = 0
) -> bytes:
    mask = os.urandom(4) if mask is None else mask
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        header = bytes((b0, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return header + mask + _apply_mask_py(payload, mask)


UPGRADE = (
    b"GET /connection/websocket?x=1 HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Protocol: chat, centrifuge-json\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


# -- handshake


def test_accept_key_of_the_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_upgrade_request_is_parsed_and_accepted() -> None:
    request = parse_request(UPGRADE)
    assert request.method == "GET"
    assert request.path == "/connection/websocket"
    assert request.headers["host"] == "server.example.com"
    assert offered_subprotocols(request) == ["chat", "centrifuge-json"]
    key = check_upgrade(request)
    response = accept_response(key, "centrifuge-json")
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert b"\r\nSec-WebSocket-Protocol: centrifuge-json\r\n" in response
    assert response.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Protocol" not in accept_response(key)


def test_repeated_headers_are_joined() -> None:
    request = parse_request(
        b"GET / HTTP/1.1\r\nSec-WebSocket-Protocol: a\r\nsec-websocket-protocol: b\r\n\r\n"
    )
    assert offered_subprotocols(request) == ["a", "b"]


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ((b"GET /", b"POST /"), 405),
        ((b"Upgrade: websocket", b"Upgrade: h2c"), 426),
        ((b"Connection: keep-alive, Upgrade", b"Connection: keep-alive"), 400),
        ((b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), 426),
        ((b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="), 400),  # 5 bytes, not 16
        ((b"dGhlIHNhbXBsZSBub25jZQ==", b"not base64!!"), 400),
    ],
)
def test_bad_upgrades_get_an_http_status(change: tuple[bytes, bytes], status: int) -> None:
    with pytest.raises(HandshakeError) as info:
        check_upgrade(parse_request(UPGRADE.replace(*change)))
    assert info.value.status == status
    response = reject_response(info.value)
    assert response.startswith(f"HTTP/1.1 {status} ".encode())
    body = response.split(b"\r\n\r\n", 1)[1]
    assert int(response.split(b"Content-Length: ")[1].split(b"\r\n")[0]) == len(body)
    if status == 426 and b"Version" in change[0]:
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in response


def test_malformed_request_line_is_400() -> None:
    with pytest.raises(HandshakeError) as info:
        parse_request(b"GARBAGE\r\n\r\n")
    assert info.value.status == 400


# -- frames out


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_server_frames_are_unmasked_with_the_shortest_length(size: int) -> None:
    frame = encode_frame(OP_TEXT, b"a" * size)
    assert frame[0] == 0x81
    assert not frame[1] & 0x80
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(frame) == header + size


def test_rfc_unmasked_hello() -> None:
    assert encode_frame(OP_TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")


def test_close_frames() -> None:
    assert encode_close(1000) == b"\x88\x02\x03\xe8"
    assert encode_close(1005) == b"\x88\x00"  # "no status" is sent as an empty close
    long = encode_close(3001, "é" * 100)  # 200 bytes of reason: cut to fit, on a character boundary
    assert len(long) <= 2 + 125
    assert parse_close(long[2:]) == (3001, "é" * 61)


def test_parse_close() -> None:
    assert parse_close(b"") == (1005, "")
    assert parse_close(b"\x0b\xbdslow") == (3005, "slow")
    for bad in (b"\x03", b"\x03\xed", b"\x00\x00", b"\x13\x88"):  # 1 byte, 1005, 0, 5000
        with pytest.raises(WebSocketError) as info:
            parse_close(bad)
        assert info.value.code == 1002
    with pytest.raises(WebSocketError) as info:
        parse_close(b"\x03\xe8\xff")
    assert info.value.code == 1007


# -- frames in


def test_rfc_masked_hello() -> None:
    parser = FrameParser(1 << 16)
    assert parser.feed(bytes.fromhex("818537fa213d7f9f4d5158")) == [(OP_TEXT, b"Hello")]


def test_several_frames_in_one_read_and_control_frames_between_fragments() -> None:
    parser = FrameParser(1 << 16)
    data = (
        client_frame(OP_TEXT, b"one")
        + client_frame(OP_TEXT, b"tw", fin=False)
        + client_frame(OP_PING, b"p")
        + client_frame(OP_CONTINUATION, b"o", fin=False)
        + client_frame(OP_CONTINUATION, b"", fin=True)
        + client_frame(OP_BINARY, b"\x00\xff")
        + client_frame(OP_PONG, b"")
        + client_frame(OP_CLOSE, b"\x03\xe8")
    )
    assert parser.feed(data) == [
        (OP_TEXT, b"one"),
        (OP_PING, b"p"),
        (OP_TEXT, b"two"),
        (OP_BINARY, b"\x00\xff"),
        (OP_PONG, b""),
        (OP_CLOSE, b"\x03\xe8"),
    ]


@settings(max_examples=200, deadline=None)
@given(
    # short payloads, and long ones of every length encoding (7-bit, 16-bit, 64-bit)
    st.lists(
        st.binary(max_size=200) | st.integers(120, 70000).map(lambda n: bytes([n % 251]) * n), max_size=5
    ),
    st.lists(st.integers(min_value=1, max_value=40000), max_size=20),
)
def test_any_split_of_the_byte_stream_gives_the_same_messages(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(client_frame(OP_BINARY, p) for p in payloads)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    parser = FrameParser(1 << 20)
    got = []
    start = 0
    for point in [*points, len(stream)]:
        got += parser.feed(stream[start:point])
        start = point
    assert got == [(OP_BINARY, p) for p in payloads]


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_c_and_python_masks_agree(data: bytes, mask: bytes) -> None:
    assert apply_mask(data, mask) == _apply_mask_py(data, mask)
    assert _apply_mask_py(_apply_mask_py(data, mask), mask) == data


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(OP_TEXT, b"x")[:1] + bytes((1,)) + b"x", 1002),  # not masked
        (client_frame(OP_TEXT, b"x", rsv=0x40), 1002),  # RSV1 without an extension
        (client_frame(0x3, b"x"), 1002),  # reserved opcode
        (client_frame(OP_PING, b"x" * 126), 1002),  # control frame too long
        (client_frame(OP_PING, b"x", fin=False), 1002),  # fragmented control frame
        (client_frame(OP_CONTINUATION, b"x"), 1002),  # continuation of nothing
        (client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"), 1002),
        (client_frame(OP_TEXT, b"x" * 1025), 1009),
        (client_frame(OP_TEXT, b"x" * 1000, fin=False) + client_frame(OP_CONTINUATION, b"x" * 25), 1009),
    ],
)
def test_protocol_violations_name_their_close_code(data: bytes, code: int) -> None:
    parser = FrameParser(1024)
    with pytest.raises(WebSocketError) as info:
        parser.feed(data)
    assert info.value.code == code


def test_too_big_is_refused_from_the_header_before_the_payload_arrives() -> None:
    parser = FrameParser(1024)
    with pytest.raises(WebSocketError) as info:
        parser.feed(client_frame(OP_TEXT, b"x" * 100_000)[:14])
    assert info.value.code == 1009
