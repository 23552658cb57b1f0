"""Tests for the Fossil delta codec behind Centrifugo's ``delta: "fossil"`` subscriptions.

The hand-worked vectors pin the wire format; the property tests check round trips; and the
``centrifuge-python`` SDK's own applier is used as an independent decoder, since real clients
will decode what this server encodes.
"""

from __future__ import annotations

import json
import random

import pytest
from centrifuge.fossil import apply_delta as sdk_apply_delta  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from livehub.protocol.fossil import apply_delta, checksum, create_delta

DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"


def enc(value: int) -> bytes:
    """Fossil's base-64 integer, written independently of the module under test."""
    text = ""
    while True:
        text = DIGITS[value % 64] + text
        value //= 64
        if value == 0:
            return text.encode()


def lane_checksum(data: bytes) -> int:
    """Fossil's checksum as delta.c describes it: four byte lanes, folded, then the 1-3 byte tail."""
    lanes = [0, 0, 0, 0]
    whole = len(data) - len(data) % 4
    for k in range(whole):
        lanes[k % 4] += data[k]
    total = lanes[3] + (lanes[2] << 8) + (lanes[1] << 16) + (lanes[0] << 24)
    for k, byte in enumerate(data[whole:]):
        total += byte << (24 - 8 * k)
    return total & 0xFFFFFFFF


def roundtrip(source: bytes, target: bytes) -> bytes:
    delta = create_delta(source, target)
    assert apply_delta(source, delta) == target
    assert sdk_apply_delta(source, delta) == target
    return delta


# --- hand-worked vectors -------------------------------------------------------------------------


def test_checksum_hand_values() -> None:
    # "hell" + "o wo" + "rld\0" as big-endian words: 0x68656c6c + 0x6f20776f + 0x726c6400, mod 2**32.
    assert checksum(b"hello world") == 0x49F247DB
    assert checksum(b"abc") == 0x61626300
    assert checksum(b"") == 0
    assert checksum(b"\xff\xff\xff\xff\x00\x00\x00\x01") == 0  # wraps modulo 2**32


def test_integer_alphabet() -> None:
    assert enc(0) == b"0"
    assert enc(36) == b"_"
    assert enc(63) == b"~"
    assert enc(100) == b"1_"
    assert enc(0x49F247DB) == b"19x_VR"


def test_empty_source_is_one_insert() -> None:
    # "B" = 11 bytes; checksum 0x49F247DB = 1|9|60|36|31|27 in 6-bit groups = "19x_VR".
    assert roundtrip(b"", b"hello world") == b"B\nB:hello world19x_VR;"


def test_source_up_to_16_bytes_is_one_insert_even_if_identical() -> None:
    # Fossil cannot index a source of NHASH bytes or fewer; checksum 0x61626300 -> "1XObC0".
    assert roundtrip(b"abc", b"abc") == b"3\n3:abc1XObC0;"
    assert create_delta(b"x" * 16, b"x" * 17).startswith(b"H\nH:")


def test_identical_input_is_a_single_copy() -> None:
    data = bytes(range(100))
    # len 100 = "1_"; checksum of words (4k, 4k+1, 4k+2, 4k+3) for k < 25 = 0xB4CDE6FB = "2poURw".
    assert roundtrip(data, data) == b"1_\n1_@0,2poURw;"


def test_insertion_in_the_middle() -> None:
    source = bytes(range(100))
    target = source[:50] + b"XYZ" + source[50:]
    # Copy 50 ("n") from 0; the window next finds block 4 at target offset 67 and extends 14 bytes
    # backwards, leaving a 3-byte literal and a 50-byte copy from offset 50.
    assert roundtrip(source, target) == b"1c\nn@0,3:XYZn@n," + enc(checksum(target)) + b";"


def test_empty_target() -> None:
    assert roundtrip(bytes(range(40)), b"") == b"0\n0;"
    assert roundtrip(b"tiny", b"") == b"0\n0:0;"


def test_apply_hand_written_delta() -> None:
    target = b"world, hello"
    delta = b"C\n5@6,2:, 5@0," + enc(checksum(target)) + b";"
    assert apply_delta(b"hello world", delta) == target
    assert sdk_apply_delta(b"hello world", delta) == target


# --- properties ------------------------------------------------------------------------------------


@given(st.binary(max_size=600))
def test_checksum_matches_byte_lane_definition(data: bytes) -> None:
    assert checksum(data) == lane_checksum(data)


@given(st.binary(max_size=2000), st.binary(max_size=2000))
def test_roundtrip_random_bytes(source: bytes, target: bytes) -> None:
    roundtrip(source, target)


@given(st.integers(17, 4000), st.randoms(use_true_random=False))
def test_identical_random_input_is_a_single_copy(size: int, rnd: random.Random) -> None:
    data = rnd.randbytes(size)
    assert roundtrip(data, data) == enc(size) + b"\n" + enc(size) + b"@0," + enc(checksum(data)) + b";"


EDIT = st.tuples(
    st.sampled_from(["insert", "delete", "replace"]),
    st.floats(0, 1),
    st.binary(min_size=1, max_size=40),
)


def mutate(base: bytes, edits: list[tuple[str, float, bytes]]) -> bytes:
    out = bytearray(base)
    for kind, where, data in edits:
        pos = int(where * len(out))
        if kind == "insert":
            out[pos:pos] = data
        elif kind == "delete":
            del out[pos : pos + len(data)]
        else:
            out[pos : pos + len(data)] = data
    return bytes(out)


@given(st.integers(0, 5000), st.randoms(use_true_random=False), st.lists(EDIT, max_size=6))
def test_roundtrip_mutated_random_base(
    size: int, rnd: random.Random, edits: list[tuple[str, float, bytes]]
) -> None:
    base = rnd.randbytes(size)
    target = mutate(base, edits)
    delta = roundtrip(base, target)
    if size >= 1024 and len(edits) <= 4:
        assert len(delta) < len(target) // 2


@given(st.binary(max_size=3000), st.lists(EDIT, max_size=6))
def test_roundtrip_mutated_low_entropy_base(base: bytes, edits: list[tuple[str, float, bytes]]) -> None:
    roundtrip(base, mutate(base, edits))


@settings(max_examples=20, deadline=None)
@given(st.integers(5000, 60000), st.binary(min_size=1, max_size=8))
def test_roundtrip_highly_repetitive(size: int, unit: bytes) -> None:
    # Long hash chains of identical blocks exercise Fossil's 250-candidate limit: only the newest
    # 250 blocks are tried, so copies come in runs of at most ~4000 bytes, but still compress well.
    base = (unit * (size // len(unit) + 1))[:size]
    target = base[: size // 2] + b"<edit>" + base[size // 2 :]
    assert len(roundtrip(base, target)) < len(target) // 50


# --- realistic payload -----------------------------------------------------------------------------


def test_json_document_with_one_changed_field() -> None:
    rnd = random.Random(7)
    doc = {
        "channel": "prices:book",
        "levels": [
            {"price": f"{rnd.uniform(600000, 620000):.2f}", "size": rnd.randint(1, 99999)} for _ in range(50)
        ],
        "lastUpdate": 1727632299611,
    }
    source = json.dumps(doc).encode()
    doc["levels"][25]["size"] = 4242  # type: ignore[index]
    target = json.dumps(doc).encode()
    assert 2000 <= len(target) <= 3000
    delta = roundtrip(source, target)
    assert len(delta) < 40, delta
    assert b":424" in delta  # the trailing "2" of 4242 happens to be copied from the source


# --- malformed deltas ----------------------------------------------------------------------------

SOURCE = bytes(range(100))
TARGET = SOURCE[:50] + b"XYZ" + SOURCE[50:]
GOOD = b"1c\nn@0,3:XYZn@n," + enc(checksum(TARGET)) + b";"


def test_good_delta_for_malformed_cases() -> None:
    assert apply_delta(SOURCE, GOOD) == TARGET


@pytest.mark.parametrize(
    ("delta", "message"),
    [
        (GOOD[:-1] + b"0;", "checksum"),  # wrong checksum value
        (GOOD.replace(b"XYZ", b"XYQ"), "checksum"),  # corrupted literal
        (b"1b" + GOOD[2:], "size"),  # header one byte too small
        (b"1d" + GOOD[2:], "header says"),  # header one byte too large
        (b"", "target size"),
        (b"1c", "newline"),
        (b"1c;", "newline"),
        (b"1c\n", "checksum"),  # truncated before any command
        (b"1c\nn@0", "','"),  # copy without terminator
        (b"1c\nn@o,", "past end of source"),  # 50 bytes at offset 50 + 24 > 100
        (b"1c\n9:XYZ", "past end of delta"),
        (b"1c\n3?XYZ", "'?'"),
        (b"1c\n@0,", "command count"),
        (GOOD + b"junk", "after the checksum"),
    ],
)
def test_malformed_delta_raises(delta: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_delta(SOURCE, delta)


def test_every_truncation_raises() -> None:
    for end in range(len(GOOD)):
        with pytest.raises(ValueError, match="malformed fossil delta"):
            apply_delta(SOURCE, GOOD[:end])


@given(st.binary(max_size=64))
def test_garbage_raises_only_value_error(delta: bytes) -> None:
    try:
        apply_delta(SOURCE, delta)
    except ValueError:
        pass
