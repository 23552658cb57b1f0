"""The Protobuf encoding, sans-I/O, against an independent implementation of the schema:
the ``client_pb2`` module generated from Centrifugo's client.proto that centrifuge-python
ships (a test dependency only: livehub never imports it). Commands the SDK's module
encodes decode to the same typed commands their JSON form parses to; replies and pushes
livehub encodes parse, with the SDK's module, to the values the JSON encoding writes.
"""

from __future__ import annotations

from typing import Any

import pytest
from centrifuge.protocol import client_pb2 as pb
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from livehub.models import ClientInfo, Publication
from livehub.protocol import codec, codes, protobuf
from livehub.protocol.codes import Disconnect
from livehub.protocol.commands import PONG, parse_command
from livehub.protocol.encoding import JSON, PROTOBUF, negotiate


def frame(*commands: Message) -> bytes:
    return b"".join(protobuf.delimited(c.SerializeToString()) for c in commands)


def replies(data: bytes) -> list[Any]:
    """Split a frame the way the SDKs do (length-delimited ``Reply`` messages)."""
    out, pos = [], 0
    while pos < len(data):
        n, pos = protobuf.read_varint(data, pos)
        reply = pb.Reply()
        reply.ParseFromString(data[pos : pos + n])
        out.append(reply)
        pos += n
    assert pos == len(data)
    return out


def one_reply(data: bytes) -> Any:
    (reply,) = replies(data)
    return reply


# -- commands: the same typed command as from JSON

COMMANDS: list[tuple[Message, dict[str, Any]]] = [
    (
        pb.Command(
            id=1,
            connect=pb.ConnectRequest(
                token="t",
                data=b'{"a":1}',
                name="py",
                version="0.7",
                subs={"news": pb.SubscribeRequest(recover=True, offset=7, epoch="e")},
            ),
        ),
        {
            "id": 1,
            "connect": {
                "token": "t",
                "data": {"a": 1},
                "name": "py",
                "version": "0.7",
                "subs": {"news": {"recover": True, "offset": 7, "epoch": "e"}},
            },
        },
    ),
    (
        pb.Command(
            id=2,
            subscribe=pb.SubscribeRequest(
                channel="c",
                token="tok",
                recover=True,
                epoch="ep",
                offset=2**40,
                data=b"[1]",
                positioned=True,
                recoverable=True,
                join_leave=True,
                delta="fossil",
                flag=2,
            ),
        ),
        {
            "id": 2,
            "subscribe": {
                "channel": "c",
                "token": "tok",
                "recover": True,
                "epoch": "ep",
                "offset": 2**40,
                "data": [1],
                "positioned": True,
                "recoverable": True,
                "join_leave": True,
                "delta": "fossil",
                "flag": 2,
            },
        },
    ),
    (
        pb.Command(id=3, unsubscribe=pb.UnsubscribeRequest(channel="c")),
        {"id": 3, "unsubscribe": {"channel": "c"}},
    ),
    (
        pb.Command(id=4, publish=pb.PublishRequest(channel="c", data=b'"x"')),
        {"id": 4, "publish": {"channel": "c", "data": "x"}},
    ),
    (pb.Command(id=5, presence=pb.PresenceRequest(channel="c")), {"id": 5, "presence": {"channel": "c"}}),
    (
        pb.Command(id=6, presence_stats=pb.PresenceStatsRequest(channel="c")),
        {"id": 6, "presence_stats": {"channel": "c"}},
    ),
    (
        pb.Command(
            id=7,
            history=pb.HistoryRequest(
                channel="c", limit=-1, since=pb.StreamPosition(offset=3, epoch="x"), reverse=True
            ),
        ),
        {
            "id": 7,
            "history": {"channel": "c", "limit": -1, "since": {"offset": 3, "epoch": "x"}, "reverse": True},
        },
    ),
    (pb.Command(id=8, ping=pb.PingRequest()), {"id": 8, "ping": {}}),
    (pb.Command(send=pb.SendRequest(data=b"{}")), {"send": {"data": {}}}),
    (
        pb.Command(id=9, rpc=pb.RPCRequest(method="m", data=b"true")),
        {"id": 9, "rpc": {"method": "m", "data": True}},
    ),
    (pb.Command(id=10, refresh=pb.RefreshRequest(token="t")), {"id": 10, "refresh": {"token": "t"}}),
    (
        pb.Command(id=11, sub_refresh=pb.SubRefreshRequest(channel="c", token="t")),
        {"id": 11, "sub_refresh": {"channel": "c", "token": "t"}},
    ),
    (pb.Command(), {}),
]


@pytest.mark.parametrize(("command", "json_form"), COMMANDS, ids=lambda v: str(v)[:20])
def test_each_command_decodes_as_its_json_form_parses(command: Message, json_form: dict[str, Any]) -> None:
    assert protobuf.decode_frame(frame(command)) == [parse_command(json_form)]


def test_one_frame_carries_several_commands_in_order() -> None:
    commands = [c for c, _ in COMMANDS]
    assert protobuf.decode_frame(frame(*commands)) == [parse_command(j) for _, j in COMMANDS]


def test_an_empty_command_is_a_pong_and_publish_without_data_is_null() -> None:
    assert protobuf.decode_frame(b"\x00") == [PONG]
    (cmd,) = protobuf.decode_frame(frame(pb.Command(id=1, publish=pb.PublishRequest(channel="c"))))
    assert cmd.request == parse_command({"id": 1, "publish": {"channel": "c"}}).request


MALFORMED = [
    b"",  # no command at all
    b"\x05\x08\x01",  # length past the end of the frame
    b"\x02\x08\x01",  # id, no method
    frame(pb.Command(publish=pb.PublishRequest(channel="c"))),  # id 0 is for send only
    b"\x0b" + b"\x08" + b"\xff" * 9 + b"\x7f",  # id past 32 bits
    b"\x0b\x08" + b"\x80" * 10,  # a varint of more than 10 bytes
    b"\x02\x0b\x00",  # a group (wire type 3)
    b"\x04\x3a\x02\x0a\x81",  # publish, channel: truncated
    b"\x06\x08\x01\x3a\x02\x08\x01",  # publish.channel (1) as a varint
    b"\x08\x08\x01\x3a\x04\x0a\x02\xc3\x28",  # publish.channel not UTF-8
    b"\x02\x00\x01",  # field number 0
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_frames_disconnect_3501(data: bytes) -> None:
    with pytest.raises(Disconnect) as exc:
        protobuf.decode_frame(data)
    assert exc.value.code == 3501


def test_a_text_frame_is_not_protobuf() -> None:
    with pytest.raises(Disconnect):
        protobuf.decode_frame('{"id":1,"connect":{}}')


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_disconnect_3501(data: bytes) -> None:
    try:
        protobuf.decode_frame(data)
    except Disconnect as exc:
        assert exc.code == 3501


# -- replies and pushes: what the JSON encoding says, as the SDK's module reads it

INFO = ClientInfo("u", "client-1", b'{"role":"admin"}', b'{"c":1}')
PUB = Publication(b'{"text":"hello"}', 42, INFO, {"k": "v"}, 1_700_000_000_000)


def test_a_publication_push_matches_the_json_one() -> None:
    reply = one_reply(protobuf.encode_publication("news", PUB))
    assert reply.id == 0 and reply.HasField("push")
    push = reply.push
    assert push.channel == "news"
    pub = push.pub
    assert (pub.data, pub.offset, dict(pub.tags), pub.time, pub.delta) == (
        PUB.data,
        42,
        {"k": "v"},
        PUB.time,
        False,
    )
    assert (pub.info.user, pub.info.client, pub.info.conn_info, pub.info.chan_info) == (
        "u",
        "client-1",
        INFO.conn_info,
        INFO.chan_info,
    )
    # the generic (dict-driven) encoder and the fast one write the same bytes
    body = codec.publication_dict(PUB)
    assert protobuf.encode_push("news", "pub", body) == protobuf.encode_publication("news", PUB)


def test_a_minimal_publication_and_a_delta() -> None:
    bare = Publication(b"1")
    reply = one_reply(protobuf.encode_publication("", bare))
    assert reply.push.channel == "" and reply.push.pub.data == b"1" and not reply.push.pub.HasField("info")
    delta = one_reply(protobuf.encode_publication("c", PUB, b"\x00patch\xff", True)).push.pub
    assert delta.delta and delta.data == b"\x00patch\xff" and delta.offset == 42


def test_replies_carry_their_result_even_when_empty() -> None:
    for method in ("publish", "unsubscribe", "ping"):
        reply = one_reply(protobuf.encode_reply(12, method, {}))
        assert reply.id == 12 and not reply.HasField("error") and reply.HasField(method)


def test_connect_reply_with_subscriptions_and_recovered_publications() -> None:
    result = {
        "client": "abc",
        "version": "1.0",
        "ping": 25,
        "pong": True,
        "expires": True,
        "ttl": 60,
        "data": codec.raw(b'{"x":1}'),
        "subs": {
            "news": {
                "recoverable": True,
                "positioned": True,
                "epoch": "ep",
                "offset": 9,
                "recovered": True,
                "publications": [codec.publication_dict(PUB)],
            }
        },
    }
    reply = one_reply(protobuf.encode_reply(1, "connect", result))
    got = MessageToDict(reply.connect, preserving_proto_field_name=True)
    assert got["client"] == "abc" and got["ping"] == 25 and got["pong"] and got["ttl"] == 60
    assert reply.connect.data == b'{"x":1}'
    sub = reply.connect.subs["news"]
    assert (sub.recoverable, sub.positioned, sub.epoch, sub.offset, sub.recovered) == (
        True,
        True,
        "ep",
        9,
        True,
    )
    assert sub.publications[0].data == PUB.data and sub.publications[0].offset == 42


def test_presence_history_rpc_errors_and_pushes() -> None:
    presence = one_reply(
        protobuf.encode_reply(2, "presence", {"presence": {"client-1": codec.info_dict(INFO)}})
    ).presence
    assert presence.presence["client-1"].user == "u" and presence.presence["client-1"].chan_info == b'{"c":1}'
    stats = one_reply(protobuf.encode_reply(3, "presence_stats", {"num_clients": 2, "num_users": 1}))
    assert (stats.presence_stats.num_clients, stats.presence_stats.num_users) == (2, 1)
    history = one_reply(
        protobuf.encode_reply(
            4, "history", {"publications": [codec.publication_dict(PUB)] * 2, "epoch": "e", "offset": 42}
        )
    ).history
    assert [p.offset for p in history.publications] == [42, 42] and history.epoch == "e"
    rpc = one_reply(protobuf.encode_reply(5, "rpc", {"data": codec.raw(b'{"ok":true}')})).rpc
    assert rpc.data == b'{"ok":true}'
    error = one_reply(protobuf.encode_error(6, codes.error_unrecoverable_position()))
    assert (error.id, error.error.code, error.error.message) == (6, 112, "unrecoverable position")
    temporary = one_reply(protobuf.encode_error(7, codes.error_internal())).error
    assert temporary.code == 100 and temporary.temporary is codes.error_internal().temporary
    unsub = one_reply(
        protobuf.encode_push("c", "unsubscribe", {"code": 2500, "reason": "insufficient state"})
    )
    assert (unsub.push.channel, unsub.push.unsubscribe.code, unsub.push.unsubscribe.reason) == (
        "c",
        2500,
        "insufficient state",
    )
    join = one_reply(protobuf.encode_push("c", "join", {"info": codec.info_dict(INFO)})).push.join
    assert join.info.user == "u" and join.info.conn_info == INFO.conn_info
    message = one_reply(protobuf.encode_push("", "message", {"data": codec.raw(b"[1,2]")})).push.message
    assert message.data == b"[1,2]"
    refresh = one_reply(protobuf.encode_push("", "refresh", {"expires": True, "ttl": 30})).push.refresh
    assert refresh.expires and refresh.ttl == 30
    subscribe = one_reply(
        protobuf.encode_push(
            "c", "subscribe", {"recoverable": True, "epoch": "e", "offset": 3, "data": codec.raw(b"1")}
        )
    ).push.subscribe
    assert (subscribe.recoverable, subscribe.epoch, subscribe.offset, subscribe.data) == (True, "e", 3, b"1")


def test_a_delta_subscribers_text_data_is_sent_as_its_bytes() -> None:
    body = codec.publication_dict(PUB, PUB.data.decode())
    assert one_reply(protobuf.encode_push("c", "pub", body)).push.pub.data == PUB.data


def test_ping_and_batching() -> None:
    assert replies(protobuf.PING) == [pb.Reply()]
    messages = [protobuf.encode_publication("c", Publication(str(i).encode(), i + 1)) for i in range(3)]
    messages.append(protobuf.PING)
    batch = protobuf.join_frame(messages)
    got = replies(batch)
    assert [r.push.pub.offset for r in got[:3]] == [1, 2, 3] and got[3] == pb.Reply()


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varints_round_trip(value: int) -> None:
    encoded = protobuf.varint(value)
    assert protobuf.read_varint(encoded + b"\x01", 0) == (value, len(encoded))


def test_negotiation() -> None:
    assert negotiate(["centrifuge-protobuf"]) == (PROTOBUF, "centrifuge-protobuf")
    assert negotiate(["centrifuge-json", "centrifuge-protobuf"]) == (PROTOBUF, "centrifuge-protobuf")
    assert negotiate(["centrifuge-json"]) == (JSON, "centrifuge-json")
    assert negotiate([]) == (JSON, None)
    assert negotiate([], "format=protobuf") == (PROTOBUF, None)
    assert negotiate([], "cf_protocol=protobuf&x=1") == (PROTOBUF, None)
    assert negotiate([], "x=protobuf") == (JSON, None)
