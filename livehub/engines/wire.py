"""The bytes networked engines store and send between nodes.

A publication is stored (Redis stream entry, JetStream message) and broadcast as one
compact binary *blob*, without its offset: the offset is assigned by the store at the
moment of appending, so it travels beside the blob (stream entry id, message header,
envelope header), never inside it. ``data`` and the ``info`` payloads are already
encoded JSON and are copied as raw bytes, never re-serialised.

Layout (all integers big-endian; ``bytes`` = u32 length + that many bytes)::

    publication := u8 version (=1) | u8 flags (bit 0: has info, bit 1: has key) | u64 time (unix ms)
                   | bytes data | [info] | u32 tag count | (bytes key, bytes value)* | [bytes pub key]
    info        := u8 flags (bit 0: conn_info, bit 1: chan_info) | bytes user | bytes client
                   | [bytes conn_info] | [bytes chan_info]

A blob that does not parse raises ``ValueError``; receivers log and drop it.
"""

from __future__ import annotations

import struct

from livehub.models import ClientInfo, Publication

VERSION = 1
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_HEAD = struct.Struct(">BBQ")


def _put(out: list[bytes], value: bytes) -> None:
    out.append(_U32.pack(len(value)))
    out.append(value)


def _put_info(out: list[bytes], info: ClientInfo) -> None:
    flags = (info.conn_info is not None) | (info.chan_info is not None) << 1
    out.append(_U8.pack(flags))
    _put(out, info.user.encode())
    _put(out, info.client.encode())
    if info.conn_info is not None:
        _put(out, info.conn_info)
    if info.chan_info is not None:
        _put(out, info.chan_info)


def encode_publication(pub: Publication) -> bytes:
    flags = (pub.info is not None) | bool(pub.key) << 1
    out = [_HEAD.pack(VERSION, flags, pub.time), _U32.pack(len(pub.data)), pub.data]
    if pub.info is not None:
        _put_info(out, pub.info)
    out.append(_U32.pack(len(pub.tags)))
    for key, value in pub.tags.items():
        _put(out, key.encode())
        _put(out, value.encode())
    if pub.key:
        _put(out, pub.key.encode())
    return b"".join(out)


def encode_info(info: ClientInfo) -> bytes:
    out: list[bytes] = []
    _put_info(out, info)
    return b"".join(out)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise ValueError("truncated engine blob")
        chunk = self.buf[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        value: int = _U8.unpack(self.take(1))[0]
        return value

    def bytes(self) -> bytes:
        (n,) = _U32.unpack(self.take(4))
        return self.take(n)

    def text(self) -> str:
        return self.bytes().decode()

    def info(self) -> ClientInfo:
        flags = self.u8()
        user, client = self.text(), self.text()
        conn_info = self.bytes() if flags & 1 else None
        chan_info = self.bytes() if flags & 2 else None
        return ClientInfo(user, client, conn_info, chan_info)

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise ValueError("trailing bytes in engine blob")


def decode_publication(blob: bytes, offset: int) -> Publication:
    reader = _Reader(blob)
    version, flags, stamp = _HEAD.unpack(reader.take(_HEAD.size))
    if version != VERSION:
        raise ValueError(f"unknown publication blob version {version}")
    data = reader.bytes()
    info = reader.info() if flags & 1 else None
    (count,) = _U32.unpack(reader.take(4))
    tags = {}
    for _ in range(count):
        key = reader.text()
        tags[key] = reader.text()
    pub_key = reader.text() if flags & 2 else ""
    reader.done()
    return Publication(data, offset, info, tags, stamp, pub_key)


def decode_info(blob: bytes) -> ClientInfo:
    reader = _Reader(blob)
    info = reader.info()
    reader.done()
    return info


class DeltaBases:
    """The last publication this node received per subscribed channel.

    Used as the delta base where the store cannot hand back the previous publication
    (publications without history, and the NATS broker): the base a client can apply a
    delta to is the last publication it was sent, which is the last one this node
    received. A base that is not the immediate predecessor of a positioned publication
    is not offered; the node checks ``prev.offset`` against each subscriber anyway.
    """

    def __init__(self) -> None:
        self._last: dict[str, Publication] = {}

    def forget(self, channel: str) -> None:
        self._last.pop(channel, None)

    def clear(self) -> None:
        self._last.clear()

    def advance(self, channel: str, pub: Publication, use_delta: bool) -> Publication | None:
        """Record ``pub`` as the channel's latest and return its delta base, if any."""
        if not use_delta:
            self._last.pop(channel, None)
            return None
        prev = self._last.get(channel)
        self._last[channel] = pub
        if prev is None:
            return None
        if pub.offset == 0:
            return prev if prev.offset == 0 else None
        return prev if prev.offset == pub.offset - 1 else None
