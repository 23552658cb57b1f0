"""The sans-I/O codec: literal frames from the spec in, typed commands out; replies and
pushes in, exact frame strings out. No event loop anywhere in this file.

Frames are quoted from research/centrifugo-protocol.md §2-§4 (the ``tf`` object of the
subscribe example, elided there, is ``{}`` here).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import livehub.protocol
from livehub.models import ClientInfo, Publication, StreamPosition
from livehub.protocol import codes
from livehub.protocol.codec import (
    PING,
    decode_frame,
    encode_error,
    encode_publication,
    encode_push,
    encode_reply,
    info_dict,
    join_frame,
    raw,
)
from livehub.protocol.codes import Disconnect
from livehub.protocol.commands import (
    METHODS,
    PONG,
    ChannelParams,
    ClientCommand,
    ConnectParams,
    HistoryParams,
    PublishParams,
    Recovery,
    RefreshParams,
    RPCParams,
    SendParams,
    SubRefreshParams,
    SubscribeParams,
)


def decode_one(frame: str) -> ClientCommand:
    commands = decode_frame(frame)
    assert len(commands) == 1
    return commands[0]


# -- decoding: every method, from the spec's literal frames

SPEC_FRAMES = [
    (
        '{"id":1,"connect":{"token":"<JWT>","data":{"any":"json"},"name":"js","version":"1.2.3",'
        '"subs":{"#42":{"recover":true,"offset":7,"epoch":"XbRt"}},"headers":{}}}',
        ClientCommand(
            1,
            "connect",
            ConnectParams(
                token="<JWT>",
                data=b'{"any":"json"}',
                name="js",
                version="1.2.3",
                subs={"#42": Recovery(True, 7, "XbRt")},
            ),
        ),
    ),
    (
        '{"id":2,"subscribe":{"channel":"chat","token":"<sub JWT>","data":{},"recover":true,"offset":5,'
        '"epoch":"XbRt","positioned":true,"recoverable":true,"join_leave":true,"delta":"fossil",'
        '"flag":3,"tf":{}}}',
        ClientCommand(
            2,
            "subscribe",
            SubscribeParams(
                channel="chat",
                token="<sub JWT>",
                data=b"{}",
                recover=True,
                offset=5,
                epoch="XbRt",
                positioned=True,
                recoverable=True,
                join_leave=True,
                delta="fossil",
                flag=3,
            ),
        ),
    ),
    ('{"id":3,"unsubscribe":{"channel":"chat"}}', ClientCommand(3, "unsubscribe", ChannelParams("chat"))),
    (
        '{"id":4,"publish":{"channel":"chat","data":{"text":"hi"}}}',
        ClientCommand(4, "publish", PublishParams("chat", b'{"text":"hi"}')),
    ),
    ('{"id":5,"presence":{"channel":"chat"}}', ClientCommand(5, "presence", ChannelParams("chat"))),
    (
        '{"id":6,"presence_stats":{"channel":"chat"}}',
        ClientCommand(6, "presence_stats", ChannelParams("chat")),
    ),
    (
        '{"id":7,"history":{"channel":"chat","limit":2,"since":{"offset":3,"epoch":"XbRt"},"reverse":false}}',
        ClientCommand(7, "history", HistoryParams("chat", 2, StreamPosition(3, "XbRt"), False)),
    ),
    (
        '{"id":8,"rpc":{"method":"getTime","data":{}}}',
        ClientCommand(8, "rpc", RPCParams("getTime", b"{}")),
    ),
    ('{"send":{"data":{"any":"json"}}}', ClientCommand(0, "send", SendParams(b'{"any":"json"}'))),
    ('{"id":9,"refresh":{"token":"<new JWT>"}}', ClientCommand(9, "refresh", RefreshParams("<new JWT>"))),
    (
        '{"id":10,"sub_refresh":{"channel":"$secret","token":"<JWT>"}}',
        ClientCommand(10, "sub_refresh", SubRefreshParams("$secret", "<JWT>")),
    ),
    ('{"id":11,"ping":{}}', ClientCommand(11, "ping", None)),
]


def test_spec_frames_cover_every_method() -> None:
    assert sorted(expected.method for _, expected in SPEC_FRAMES) == sorted(METHODS)


@pytest.mark.parametrize(("frame", "expected"), SPEC_FRAMES, ids=[c.method for _, c in SPEC_FRAMES])
def test_decode_spec_frame(frame: str, expected: ClientCommand) -> None:
    assert decode_frame(frame) == [expected]
    assert decode_frame(frame.encode()) == [expected]


def test_pong_is_an_empty_object() -> None:
    assert decode_frame("{}") == [PONG]
    assert PONG.method == "" and PONG.id == 0


def test_absent_fields_take_zero_values() -> None:
    assert decode_one('{"id":1,"connect":{}}') == ClientCommand(1, "connect", ConnectParams())
    assert decode_one('{"id":1,"subscribe":{}}').request == SubscribeParams("")
    assert decode_one('{"id":1,"history":{"channel":"c"}}').request == HistoryParams("c", 0, None, False)
    assert decode_one('{"id":1,"history":{"channel":"c","since":null}}').request == HistoryParams("c")
    assert decode_one('{"id":1,"rpc":{"method":"m"}}').request == RPCParams("m", None)
    assert decode_one('{"send":{}}').request == SendParams(None)


def test_null_fields_count_as_absent() -> None:
    frame = '{"id":1,"subscribe":{"channel":"c","token":null,"offset":null,"recover":null,"data":null}}'
    assert decode_one(frame).request == SubscribeParams("c")


def test_publish_without_data_publishes_json_null() -> None:
    assert decode_one('{"id":1,"publish":{"channel":"c"}}').request == PublishParams("c", b"null")


def test_embedded_data_is_compact_json() -> None:
    command = decode_one('{"id":1,"publish":{"channel":"c","data":{ "a" : [1, 2, {"b": "é\\n"}] }}}')
    assert isinstance(command.request, PublishParams)
    assert command.request.data == '{"a":[1,2,{"b":"é\\n"}]}'.encode()
    assert b"\n" not in command.request.data


def test_history_since_zero() -> None:
    command = decode_one('{"id":1,"history":{"channel":"c","since":{},"reverse":true}}')
    assert command.request == HistoryParams("c", 0, StreamPosition(0, ""), True)


def test_first_non_null_method_wins() -> None:
    command = decode_one('{"id":1,"connect":null,"publish":{"channel":"c","data":1}}')
    assert command == ClientCommand(1, "publish", PublishParams("c", b"1"))


def test_largest_uint32_id() -> None:
    assert decode_one('{"id":4294967295,"ping":{}}').id == 4294967295


# -- decoding: batches


def test_batch_of_commands_in_order() -> None:
    frame = '{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"a"}}\n{"id":3,"ping":{}}'
    assert [(c.id, c.method) for c in decode_frame(frame)] == [(1, "connect"), (2, "subscribe"), (3, "ping")]


def test_batch_with_trailing_newline() -> None:
    frame = '{"id":1,"presence":{"channel":"a"}}\n{"id":2,"presence":{"channel":"b"}}\n'
    assert decode_frame(frame) == [
        ClientCommand(1, "presence", ChannelParams("a")),
        ClientCommand(2, "presence", ChannelParams("b")),
    ]


def test_batch_skips_blank_lines() -> None:
    frame = '\n{"id":1,"ping":{}}\n\n  \n{}\r\n\n{"id":2,"ping":{}}\n'
    assert decode_frame(frame) == [ClientCommand(1, "ping"), PONG, ClientCommand(2, "ping")]
    assert decode_frame(frame.encode()) == [ClientCommand(1, "ping"), PONG, ClientCommand(2, "ping")]


def test_batch_with_pongs_and_send() -> None:
    frame = '{}\n{"send":{"data":"x"}}\n{}'
    assert decode_frame(frame) == [PONG, ClientCommand(0, "send", SendParams(b'"x"')), PONG]


# -- decoding: malformed input closes with 3501

MALFORMED = [
    "",
    "\n\n \n",
    "{",
    '{"id":1,',
    "{'id': 1}",
    '{"id":1,"ping":{}}x',
    "nul",
    "[]",
    '[{"id":1,"ping":{}}]',
    "1",
    '"connect"',
    "null",
    "true",
    '{"id":0,"publish":{"channel":"c","data":1}}',
    '{"publish":{"channel":"c","data":1}}',
    '{"id":0,"connect":{}}',
    '{"ping":{}}',
    '{"id":0}',
    '{"id":1}',
    '{"id":-1,"ping":{}}',
    '{"id":4294967296,"ping":{}}',
    '{"id":18446744073709551616,"ping":{}}',
    '{"id":"1","ping":{}}',
    '{"id":1.0,"ping":{}}',
    '{"id":true,"ping":{}}',
    '{"id":1,"foo":{}}',
    '{"id":1,"connect":null}',
    '{"id":1,"publish":[]}',
    '{"id":1,"publish":"chat"}',
    '{"id":1,"ping":1}',
    '{"id":1,"publish":{"channel":1,"data":1}}',
    '{"id":1,"subscribe":{"channel":"c","offset":"5"}}',
    '{"id":1,"subscribe":{"channel":"c","offset":true}}',
    '{"id":1,"subscribe":{"channel":"c","offset":1.5}}',
    '{"id":1,"subscribe":{"channel":"c","recover":"true"}}',
    '{"id":1,"subscribe":{"channel":"c","recover":1}}',
    '{"id":1,"subscribe":{"channel":"c","flag":"2"}}',
    '{"id":1,"subscribe":{"channel":["c"]}}',
    '{"id":1,"connect":{"token":5}}',
    '{"id":1,"connect":{"subs":[]}}',
    '{"id":1,"connect":{"subs":{"c":true}}}',
    '{"id":1,"connect":{"subs":{"c":{"offset":"7"}}}}',
    '{"id":1,"history":{"channel":"c","since":5}}',
    '{"id":1,"history":{"channel":"c","since":{"offset":"1"}}}',
    '{"id":1,"history":{"channel":"c","since":{"epoch":1}}}',
    '{"id":1,"history":{"channel":"c","limit":"10"}}',
    '{"id":1,"history":{"channel":"c","reverse":0}}',
    '{"id":1,"rpc":{"method":{}}}',
    '{"id":1,"refresh":{"token":[]}}',
    '{"id":1,"sub_refresh":{"channel":"c","token":false}}',
    # one bad line rejects the whole frame
    '{"id":1,"ping":{}}\n{"id":2,',
    '{"id":1,"ping":{}}\n[]',
]


@pytest.mark.parametrize("frame", MALFORMED)
def test_malformed_frame_is_bad_request(frame: str) -> None:
    with pytest.raises(Disconnect) as info:
        decode_frame(frame)
    assert info.value.code == 3501
    assert info.value == codes.disconnect_bad_request()
    assert not info.value.reconnect


@pytest.mark.parametrize(
    "frame",
    [b"\xff\xfe", b'{"id":1,"publish":{"channel":"\xc3","data":1}}', b"\x00", '"\ud800"'],
    ids=["bad-utf8", "truncated-utf8", "nul", "lone-surrogate"],
)
def test_undecodable_text_is_bad_request(frame: str | bytes) -> None:
    with pytest.raises(Disconnect) as info:
        decode_frame(frame)
    assert info.value.code == 3501


@pytest.mark.parametrize("depth", [200, 253, 254, 255, 300, 2000])
def test_deeply_nested_data_never_escapes_as_another_exception(depth: int) -> None:
    frame = '{"id":1,"publish":{"channel":"c","data":' + "[" * depth + "]" * depth + "}}"
    try:
        commands = decode_frame(frame)
    except Disconnect as exc:
        assert exc.code == 3501
    else:
        request = commands[0].request
        assert isinstance(request, PublishParams)
        assert request.data == b"[" * depth + b"]" * depth


# -- decoding: fuzz. Disconnect is the only exception allowed out of the parser.

FIELD_NAMES = [
    "id",
    "channel",
    "token",
    "data",
    "name",
    "version",
    "subs",
    "recover",
    "offset",
    "epoch",
    "positioned",
    "recoverable",
    "join_leave",
    "delta",
    "flag",
    "limit",
    "since",
    "reverse",
    "method",
    *METHODS,
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)
ids = st.one_of(st.integers(min_value=-3, max_value=2**32 + 1), json_values)
commands_like = st.fixed_dictionaries(
    {"id": ids},
    optional={
        method: st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6) | json_values
        for method in METHODS
    },
)


def check_decode(frame: str | bytes) -> list[ClientCommand]:
    try:
        commands = decode_frame(frame)
    except Disconnect as exc:
        assert exc.code == 3501
        return []
    assert commands
    for command in commands:
        assert command.method in METHODS or command == PONG
        if command.method not in ("", "send"):
            assert 0 < command.id <= 0xFFFFFFFF
    return commands


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_fuzz_text(frame: str) -> None:
    check_decode(frame)


@settings(max_examples=300)
@given(st.binary())
def test_fuzz_bytes(frame: bytes) -> None:
    check_decode(frame)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzz_json_values(value: object) -> None:
    check_decode(orjson.dumps(value).decode())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands_like | json_values, min_size=1, max_size=4), st.sampled_from(["\n", "\n\n", " \n"]))
def test_fuzz_command_shaped_batches(objects: list[object], sep: str) -> None:
    frame = sep.join(orjson.dumps(obj).decode() for obj in objects)
    commands = check_decode(frame)
    if commands:
        assert len(commands) == len(objects)


@settings(max_examples=300)
@given(
    st.sampled_from([m for m in METHODS if m != "ping"]),
    st.integers(min_value=1, max_value=2**32 - 1),
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6),
)
def test_fuzz_parsed_fields_have_declared_types(method: str, cid: int, params: dict[str, object]) -> None:
    commands = check_decode(orjson.dumps({"id": cid, method: params}).decode())
    for command in commands:
        request = command.request
        assert request is not None
        for name in request.__slots__:
            value = getattr(request, name)
            if name in ("data",):
                assert value is None or isinstance(value, bytes)
                if value is not None:
                    orjson.loads(value)
            elif name in ("offset", "flag", "limit"):
                assert type(value) is int
            elif name in ("recover", "positioned", "recoverable", "join_leave", "reverse"):
                assert type(value) is bool


# -- encoding


def test_ping_is_an_empty_object() -> None:
    assert PING == "{}"


def test_reply_always_has_its_result_key() -> None:
    assert encode_reply(5, "publish", {}) == '{"id":5,"publish":{}}'
    assert encode_reply(3, "unsubscribe", {}) == '{"id":3,"unsubscribe":{}}'
    assert encode_reply(6, "presence_stats", {"num_clients": 0, "num_users": 0}) == (
        '{"id":6,"presence_stats":{"num_clients":0,"num_users":0}}'
    )
    assert encode_reply(7, "history", {"publications": [], "epoch": "XbRt", "offset": 0}) == (
        '{"id":7,"history":{"publications":[],"epoch":"XbRt","offset":0}}'
    )


def test_reply_splices_raw_data() -> None:
    frame = encode_reply(8, "rpc", {"data": raw(b'{"t": 1}')})
    assert frame == '{"id":8,"rpc":{"data":{"t": 1}}}'


def test_error_carries_message() -> None:
    assert encode_error(2, codes.error_permission_denied()) == (
        '{"id":2,"error":{"code":103,"message":"permission denied"}}'
    )
    assert (
        encode_error(1, codes.error_token_expired())
        == '{"id":1,"error":{"code":109,"message":"token expired"}}'
    )
    assert encode_error(9, codes.error_internal()) == (
        '{"id":9,"error":{"code":100,"message":"internal server error","temporary":true}}'
    )


def test_error_codes_match_the_spec() -> None:
    table = {
        100: "internal server error",
        101: "unauthorized",
        102: "unknown channel",
        103: "permission denied",
        104: "method not found",
        105: "already subscribed",
        106: "limit exceeded",
        107: "bad request",
        108: "not available",
        109: "token expired",
        110: "expired",
        111: "too many requests",
        112: "unrecoverable position",
    }
    made = [f() for name, f in vars(codes).items() if name.startswith("error_")]
    errors = {e.code: e for e in made}
    assert all(isinstance(e, codes.Error) for e in made)
    assert {code: e.message for code, e in errors.items()} == table
    assert {code for code, e in errors.items() if e.temporary} == {100, 111}


def test_each_raise_is_a_fresh_instance() -> None:
    # a shared exception instance would keep every traceback (and frame) it was raised with
    assert codes.error_bad_request() is not codes.error_bad_request()
    assert codes.disconnect_bad_request() is not codes.disconnect_bad_request()


def test_disconnect_reconnect_ranges() -> None:
    assert codes.disconnect_slow().reconnect and codes.disconnect_no_pong().reconnect
    assert not codes.disconnect_invalid_token().reconnect and not codes.disconnect_stale().reconnect
    assert Disconnect(4000, "app").reconnect and Disconnect(4499, "app").reconnect
    assert not Disconnect(4500, "app").reconnect and not Disconnect(4999, "app").reconnect
    assert Disconnect(5000, "reserved").reconnect and Disconnect(1009, "too big").reconnect
    for value in vars(codes).values():
        if isinstance(value, Disconnect):
            assert len(value.reason.encode()) < 123
            with pytest.raises(json.JSONDecodeError):
                json.loads(value.reason)  # centrifuge-js tries JSON.parse on the close reason


def test_join_and_leave_pushes() -> None:
    info = ClientInfo("42", "c1")
    assert encode_push("chat", "join", {"info": info_dict(info)}) == (
        '{"push":{"channel":"chat","join":{"info":{"user":"42","client":"c1"}}}}'
    )
    assert encode_push("chat", "leave", {"info": info_dict(info)}) == (
        '{"push":{"channel":"chat","leave":{"info":{"user":"42","client":"c1"}}}}'
    )


def test_info_always_has_user_and_client() -> None:
    assert info_dict(ClientInfo("", "")) == {"user": "", "client": ""}
    full = ClientInfo("42", "c1", conn_info=b'{"name":"A"}', chan_info=b"{}")
    assert encode_push("chat", "join", {"info": info_dict(full)}) == (
        '{"push":{"channel":"chat","join":{"info":{"user":"42","client":"c1",'
        '"conn_info":{"name":"A"},"chan_info":{}}}}}'
    )


def test_unsubscribe_push() -> None:
    u = codes.unsubscribe_insufficient_state()
    assert encode_push("chat", "unsubscribe", {"code": u.code, "reason": u.reason}) == (
        '{"push":{"channel":"chat","unsubscribe":{"code":2500,"reason":"insufficient state"}}}'
    )


def test_push_without_channel_omits_it() -> None:
    assert encode_push("", "message", {"data": raw(b'{"hello":"world"}')}) == (
        '{"push":{"message":{"data":{"hello":"world"}}}}'
    )


def test_publication_omits_zero_values_and_splices_data() -> None:
    pub = Publication(b'{"text": "hi",  "n":[1, 2]}')
    assert (
        encode_publication("chat", pub)
        == '{"push":{"channel":"chat","pub":{"data":{"text": "hi",  "n":[1, 2]}}}}'
    )


def test_publication_with_every_field() -> None:
    pub = Publication(
        b'{"text":"hi"}',
        offset=13,
        info=ClientInfo("42", "c1", b"{}", b'{"role":"x"}'),
        tags={"k": "v"},
        time=1700000000123,
    )
    assert encode_publication("chat", pub) == (
        '{"push":{"channel":"chat","pub":{"data":{"text":"hi"},'
        '"info":{"user":"42","client":"c1","conn_info":{},"chan_info":{"role":"x"}},'
        '"offset":13,"tags":{"k":"v"},"time":1700000000123}}}'
    )


def test_publication_data_override_for_deltas() -> None:
    pub = Publication(b'{"a":1}', offset=2)
    assert (
        encode_publication("c", pub, '{"a":1}')
        == '{"push":{"channel":"c","pub":{"data":"{\\"a\\":1}","offset":2}}}'
    )
    assert encode_publication("c", pub, "patch", delta=True) == (
        '{"push":{"channel":"c","pub":{"data":"patch","delta":true,"offset":2}}}'
    )


def test_non_ascii_is_written_as_utf8() -> None:
    frame = encode_reply(1, "rpc", {"data": raw('"привет"'.encode())})
    assert frame == '{"id":1,"rpc":{"data":"привет"}}'


def test_join_frame() -> None:
    a, b, c = '{"id":1,"publish":{}}', PING, '{"push":{"channel":"x","pub":{"data":1}}}'
    assert join_frame([a]) == a
    assert join_frame([a, b, c]) == a + "\n" + b + "\n" + c
    assert not join_frame([a, b]).endswith("\n")
    # what the SDKs do with a frame: trim, split on newlines, parse each
    assert [json.loads(line) for line in join_frame([a, b, c]).strip().split("\n")] == [
        {"id": 1, "publish": {}},
        {},
        {"push": {"channel": "x", "pub": {"data": 1}}},
    ]


# -- the protocol package stays sans-I/O

FORBIDDEN = {"asyncio", "starlette", "fastapi", "uvicorn", "anyio", "websockets", "redis", "nats"}
ALLOWED_LIVEHUB = {"livehub.protocol", "livehub.models"}
#: Pure functions from a forbidden package: websockets' C implementation of the frame mask XOR.
ALLOWED_PURE = {"websockets.speedups"}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            assert node.module is not None
            found.add(node.module)
    return found


PROTOCOL_FILES = sorted(Path(livehub.protocol.__file__).parent.glob("*.py"))


def test_protocol_package_has_modules() -> None:
    assert {p.name for p in PROTOCOL_FILES} >= {"__init__.py", "codec.py", "codes.py", "commands.py"}


@pytest.mark.parametrize("path", PROTOCOL_FILES, ids=[p.name for p in PROTOCOL_FILES])
def test_protocol_module_imports_no_io(path: Path) -> None:
    for module in imported_modules(path) - ALLOWED_PURE:
        assert module.split(".")[0] not in FORBIDDEN, f"{path.name} imports {module}"
        if module.split(".")[0] == "livehub":
            assert any(module == a or module.startswith(a + ".") for a in ALLOWED_LIVEHUB), (
                f"{path.name} imports {module}, which is outside the sans-I/O core"
            )


def test_models_import_no_io() -> None:
    import livehub.models

    for module in imported_modules(Path(livehub.models.__file__)):
        assert module.split(".")[0] not in FORBIDDEN | {"livehub"}
