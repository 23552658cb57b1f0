"""The map fields of client.proto in the hand-written Protobuf codec: SubscribeRequest
type (15), phase (16), cursor (17), limit (18) and tf (13, a FilterNode); PublishRequest type
(3), key (4), removed (5); SubscribeResult type (15), phase (16), cursor (17), state (18),
publish_debounce (19); Publication key (11) and removed (12).

Field numbers as in centrifuge-js' client_proto.js; the python ``client_pb2`` that the
other codec tests use predates the map fields, so those are written and read by hand here.
"""

from __future__ import annotations

from centrifuge.protocol import client_pb2 as pb

from livehub.models import Publication
from livehub.protocol import protobuf
from livehub.protocol.commands import PublishParams, SubscribeParams
from livehub.protocol.protobuf import delimited, varint
from livehub.protocol.tags_filter import parse


def field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + delimited(value)


def command(number: int, body: bytes, cid: int = 7) -> bytes:
    return delimited(field(1, cid) + field(number, body))


def test_a_map_subscribe_request_is_read_whole() -> None:
    tf = pb.FilterNode(op="and", nodes=[pb.FilterNode(key="team", cmp="in", vals=["a", "b"])])
    body = pb.SubscribeRequest(channel="m:1", tf=tf, offset=4, epoch="e").SerializeToString()
    body += field(15, 1) + field(16, 2) + field(17, b"k9") + field(18, 50)
    (cmd,) = protobuf.decode_frame(command(5, body))
    req = cmd.request
    assert isinstance(req, SubscribeParams)
    assert (req.type, req.phase, req.cursor, req.limit, req.offset, req.epoch) == (1, 2, "k9", 50, 4, "e")
    assert req.is_map and req.tf is not None
    node = parse(req.tf)
    assert node.match({"team": "b"}) and not node.match({"team": "c"})


def test_a_map_write_is_read_whole() -> None:
    body = field(1, b"m:1") + field(3, 1) + field(4, b"key") + field(5, 1)
    (cmd,) = protobuf.decode_frame(command(7, body))
    assert cmd.request == PublishParams("m:1", b"null", 1, "key", True)


def test_map_results_and_changes_are_written_with_their_fields() -> None:
    result = {
        "type": 1,
        "phase": 2,
        "cursor": "k",
        "epoch": "e",
        "offset": 3,
        "state": [{"data": b'{"v":1}', "offset": 3, "key": "k"}],
        "publish_debounce": 50,
    }
    reply = protobuf.encode_reply(9, "subscribe", result)
    parsed = pb.Reply()
    n, pos = protobuf.read_varint(reply, 0)
    parsed.ParseFromString(reply[pos : pos + n])
    assert parsed.id == 9 and parsed.subscribe.epoch == "e" and parsed.subscribe.offset == 3
    raw = parsed.subscribe.SerializeToString()  # unknown fields are kept
    for number, value in ((15, 1), (16, 2), (19, 50)):
        assert field(number, value) in raw
    assert field(17, b"k") in raw
    assert field(18, field(4, b'{"v":1}') + field(6, 3) + field(11, b"k")) in raw

    push = protobuf.encode_publication("m:1", Publication(b"", 4, key="k", removed=True))
    n, pos = protobuf.read_varint(push, 0)
    parsed = pb.Reply()
    parsed.ParseFromString(push[pos : pos + n])
    pub_raw = parsed.push.pub.SerializeToString()
    assert parsed.push.channel == "m:1" and parsed.push.pub.offset == 4
    assert field(11, b"k") in pub_raw and field(12, 1) in pub_raw
