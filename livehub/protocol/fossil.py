"""Fossil delta encoding, as used by Centrifugo's ``delta: "fossil"`` compression.

Centrifugo clients may ask for ``delta: "fossil"`` when they subscribe to a channel.  The server then
sends each publication's data as a Fossil delta against the previous publication on that channel
(flagged ``delta: true``), and the SDKs rebuild the full payload with their own Fossil applier.  For
channels that publish large, slowly changing documents (order books, dashboards) the deltas are a
small fraction of the full payloads.  The format must be byte-compatible with fossil-scm's
``delta.c`` because every official SDK ships an applier for exactly that format.

Format: ``<target length>\\n``, then a sequence of commands, each starting with an integer ``N``:
``N@OFFSET,`` copies ``N`` bytes of the source starting at ``OFFSET``, ``N:<N bytes>`` inserts literal
bytes, and ``N;`` ends the delta, ``N`` being the checksum of the target.  Integers are written in
Fossil's base-64 digit alphabet, most significant digit first.

The encoder follows Fossil's algorithm step for step (same hash, same bucket count, same candidate
limit), so it emits the same bytes as the reference encoders; only the inner byte-matching loops are
replaced by slice comparisons so that copies cost C-speed memcmp rather than a Python loop per byte.
"""

from __future__ import annotations

import struct
from itertools import accumulate

__all__ = ["apply_delta", "checksum", "create_delta"]

NHASH = 16
"""Width of the rolling-hash window; also the size of the source blocks that get indexed."""

_MAX_CANDIDATES = 250
"""Fossil stops walking a hash chain after this many blocks, bounding work on repetitive input."""

_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_DIGIT_VALUE = {ch: value for value, ch in enumerate(_DIGITS)}


def _put_int(value: int, out: bytearray) -> None:
    """Append ``value`` in Fossil's base-64 alphabet (big-endian, no padding, ``0`` for zero)."""
    if value == 0:
        out += b"0"
        return
    digits = bytearray()
    while value > 0:
        digits.append(_DIGITS[value & 0x3F])
        value >>= 6
    digits.reverse()
    out += digits


def _digit_count(value: int) -> int:
    """Encoded length of ``value``; the encoder uses it to judge whether a copy beats a literal."""
    count, limit = 1, 64
    while value >= limit:
        count += 1
        limit <<= 6
    return count


def checksum(data: bytes) -> int:
    """Fossil's 32-bit checksum: the sum of the data read as big-endian 32-bit words, zero-padded.

    Fossil unrolls this into four byte-lane accumulators; summing whole words modulo 2**32 is the
    same arithmetic and lets ``struct`` do the per-byte work.
    """
    padded = bytes(data) + b"\0" * (-len(data) % 4)
    words: tuple[int, ...] = struct.unpack(f">{len(padded) // 4}I", padded)
    return sum(words) & 0xFFFFFFFF


def _window_hash(window: bytes) -> int:
    """Fossil's ``hash_once``: ``a`` sums the bytes and ``b`` sums the running values of ``a``, 16 bits each.

    ``b`` thus weights older bytes more, and both halves can be rolled one byte at a time
    (see ``_find_copy``).
    """
    return (sum(window) & 0xFFFF) | ((sum(accumulate(window)) & 0xFFFF) << 16)


def _index_source(source: bytes, n_hash: int) -> dict[int, list[int]]:
    """Map hash bucket -> source block numbers, newest first, exactly like Fossil's landmark/collide chains.

    Fossil indexes the non-overlapping blocks at 0, 16, 32, ... that start before ``len - NHASH``
    (so a final block ending exactly at the end is skipped) and buckets them by ``hash % n_hash``.
    Keeping bucket collisions (rather than keying by the full hash) matters for byte-identical output:
    a colliding block can still yield a match that extends backwards from it.
    """
    buckets: dict[int, list[int]] = {}
    for start in range(0, len(source) - NHASH, NHASH):
        block = source[start : start + NHASH]
        buckets.setdefault(_window_hash(block) % n_hash, []).append(start // NHASH)
    for chain in buckets.values():
        chain.reverse()
        del chain[_MAX_CANDIDATES:]
    return buckets


def _match_forward(a: bytes, ai: int, b: bytes, bi: int, limit: int) -> int:
    """Length of the common run ``a[ai:]`` / ``b[bi:]``, at most ``limit``.

    Galloping slice comparisons keep this O(log n) Python steps for long matches.
    """
    done, step = 0, 32
    while done < limit:
        size = min(step, limit - done)
        if a[ai + done : ai + done + size] == b[bi + done : bi + done + size]:
            done += size
            step *= 2
            continue
        lo, hi = 0, size  # a run of lo bytes matches, a run of hi bytes does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[ai + done + lo : ai + done + mid] == b[bi + done + lo : bi + done + mid]:
                lo = mid
            else:
                hi = mid
        return done + lo
    return done


def _match_backward(a: bytes, ai: int, b: bytes, bi: int, limit: int) -> int:
    """Length of the common run ending just before ``a[ai]`` / ``b[bi]``, at most ``limit``."""
    done, step = 0, 32
    while done < limit:
        size = min(step, limit - done)
        if a[ai - done - size : ai - done] == b[bi - done - size : bi - done]:
            done += size
            step *= 2
            continue
        lo, hi = 0, size
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[ai - done - mid : ai - done - lo] == b[bi - done - mid : bi - done - lo]:
                lo = mid
            else:
                hi = mid
        return done + lo
    return done


def _find_copy(
    source: bytes, target: bytes, base: int, buckets: dict[int, list[int]], n_hash: int
) -> tuple[int, int, int] | None:
    """Slide a window over ``target`` from ``base`` until some source block yields a worthwhile copy.

    Returns ``(literal_size, copy_size, copy_offset)`` for the first window position with an acceptable
    match (the longest one among that position's candidates), or ``None`` once the window hits the end
    of the target.  A match may also extend backwards, eating into the literal run before it.  A copy is
    only worthwhile if it is at least as long as the text needed to encode it.
    """
    first = _window_hash(target[base : base + NHASH])
    a, b = first & 0xFFFF, first >> 16
    len_src, len_out = len(source), len(target)
    i = 0
    while True:
        chain = buckets.get((a | (b << 16)) % n_hash)
        if chain:
            y = base + i
            best: tuple[int, int, int] | None = None
            for block in chain:
                start = block * NHASH
                # Most candidates are hash-bucket collisions: reject them on one byte each way.
                fwd = back = 0
                if source[start] == target[y]:
                    fwd = _match_forward(source, start, target, y, min(len_src - start, len_out - y))
                if i and start > 1 and source[start - 1] == target[y - 1]:
                    back = _match_backward(source, start, target, y, min(start - 1, i))
                cnt = fwd + back
                if cnt < 6:  # cannot pay for itself: the cost below is never under 1 + 1 + 1 + 3
                    continue
                cost = _digit_count(i - back) + _digit_count(cnt) + _digit_count(start - back) + 3
                if cnt >= cost and (best is None or cnt > best[1]):
                    best = (i - back, cnt, start - back)
            if best is not None:
                return best
        if base + i + NHASH >= len_out:
            return None
        old, new = target[base + i], target[base + i + NHASH]
        a = (a - old + new) & 0xFFFF
        b = (b - NHASH * old + a) & 0xFFFF
        i += 1


def create_delta(source: bytes, target: bytes) -> bytes:
    """Encode ``target`` as a Fossil delta against ``source`` (the channel's previous publication).

    Runs once per publication, not per subscriber, so it favours small output over raw speed, but it
    keeps per-byte Python work to the rolling hash over unmatched target bytes.
    """
    len_src, len_out = len(source), len(target)
    delta = bytearray()
    _put_int(len_out, delta)
    delta += b"\n"
    base = 0
    if len_src <= NHASH:
        # No source block can be indexed, so Fossil writes the whole target as one literal (even if empty).
        _put_int(len_out, delta)
        delta += b":" + target
        base = len_out
    else:
        n_hash = len_src // NHASH
        buckets = _index_source(source, n_hash)
        while base + NHASH < len_out:
            found = _find_copy(source, target, base, buckets, n_hash)
            if found is None:
                break
            literal, count, offset = found
            if literal:
                _put_int(literal, delta)
                delta += b":" + target[base : base + literal]
            _put_int(count, delta)
            delta += b"@"
            _put_int(offset, delta)
            delta += b","
            base += literal + count
    if base < len_out:
        _put_int(len_out - base, delta)
        delta += b":" + target[base:]
    _put_int(checksum(target), delta)
    delta += b";"
    return bytes(delta)


def _get_int(delta: bytes, pos: int, what: str) -> tuple[int, int]:
    """Read one base-64 integer at ``pos``; return it and the position after its last digit."""
    value = 0
    start = pos
    while pos < len(delta) and (digit := _DIGIT_VALUE.get(delta[pos])) is not None:
        value = (value << 6) | digit
        pos += 1
    if pos == start:
        found = "end of delta" if pos >= len(delta) else repr(delta[pos : pos + 1])
        raise ValueError(f"malformed fossil delta: expected {what} at byte {pos}, found {found}")
    return value, pos


def apply_delta(source: bytes, delta: bytes) -> bytes:
    """Rebuild the target from ``source`` and a Fossil ``delta``; raise ``ValueError`` if it is malformed.

    Stricter than Fossil's own applier (empty integers, a missing ``,`` before the end, and bytes after
    the checksum are errors) because a delta that does not parse cleanly means the stream is corrupt.
    """
    size, pos = _get_int(delta, 0, "target size")
    if delta[pos : pos + 1] != b"\n":
        raise ValueError(f"malformed fossil delta: target size not followed by newline at byte {pos}")
    pos += 1
    out = bytearray()
    while pos < len(delta):
        count, pos = _get_int(delta, pos, "command count")
        op, pos = delta[pos : pos + 1], pos + 1
        if op == b";":
            result = bytes(out)
            if pos != len(delta):
                raise ValueError(f"malformed fossil delta: {len(delta) - pos} bytes after the checksum")
            if len(result) != size:
                raise ValueError(f"malformed fossil delta: built {len(result)} bytes, header says {size}")
            if count != checksum(result):
                raise ValueError("malformed fossil delta: checksum mismatch")
            return result
        if len(out) + count > size:
            raise ValueError(f"malformed fossil delta: output exceeds the declared size {size}")
        if op == b"@":
            offset, pos = _get_int(delta, pos, "copy offset")
            if delta[pos : pos + 1] != b",":
                raise ValueError(f"malformed fossil delta: copy command not terminated by ',' at byte {pos}")
            pos += 1
            if offset + count > len(source):
                raise ValueError(f"malformed fossil delta: copy of {count}@{offset} past end of source")
            out += source[offset : offset + count]
        elif op == b":":
            if pos + count > len(delta):
                raise ValueError(f"malformed fossil delta: insert of {count} bytes runs past end of delta")
            out += delta[pos : pos + count]
            pos += count
        else:
            found = "end of delta" if not op else repr(op)
            raise ValueError(
                f"malformed fossil delta: expected '@', ':' or ';' at byte {pos - 1}, found {found}"
            )
    raise ValueError("malformed fossil delta: no terminating checksum (truncated?)")
