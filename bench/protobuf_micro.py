"""Micro benchmark behind the choice of livehub's Protobuf codec: the hand-written encoder
and decoder of ``livehub.protocol.protobuf`` against the ``protobuf`` runtime (upb) with a
module generated from client.proto (centrifuge-python's ``client_pb2``, a dev dependency;
livehub does not import it).

* encode: a publication push (channel, data of 100 bytes, offset), length-delimited, as
  fan-out queues it;
* decode: a frame holding one publish command (channel, data of 100 bytes), to the typed
  command the session handles (upb: parse, then read the fields into the same dataclass).

    .venv/bin/python bench/protobuf_micro.py [iterations]
"""

from __future__ import annotations

import sys
import timeit

from centrifuge.protocol import client_pb2 as pb

from livehub.models import Publication
from livehub.protocol import protobuf
from livehub.protocol.commands import ClientCommand, PublishParams

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
DATA = b'{"text":"' + b"x" * 89 + b'"}'
assert len(DATA) == 100
CHANNEL = "chat:index"
PUB = Publication(DATA, 12345)


def upb_encode() -> bytes:
    reply = pb.Reply(push=pb.Push(channel=CHANNEL, pub=pb.Publication(data=PUB.data, offset=PUB.offset)))
    return protobuf.delimited(reply.SerializeToString())


def livehub_encode() -> bytes:
    return protobuf.encode_publication(CHANNEL, PUB)


FRAME = protobuf.delimited(
    pb.Command(id=7, publish=pb.PublishRequest(channel=CHANNEL, data=DATA)).SerializeToString()
)


def upb_decode() -> list[ClientCommand]:
    n, pos = protobuf.read_varint(FRAME, 0)
    command = pb.Command()
    command.ParseFromString(FRAME[pos : pos + n])
    publish = command.publish
    return [ClientCommand(command.id, "publish", PublishParams(publish.channel, publish.data or b"null"))]


def livehub_decode() -> list[ClientCommand]:
    return protobuf.decode_frame(FRAME)


def best(fn: object) -> float:
    """Best of 5 runs, in microseconds per call."""
    return min(timeit.repeat(fn, number=N, repeat=5)) / N * 1e6  # type: ignore[arg-type]


def main() -> None:
    assert upb_encode() == livehub_encode()
    assert upb_decode() == livehub_decode()
    for what, upb, ours in (
        ("encode pub push", upb_encode, livehub_encode),
        ("decode publish", upb_decode, livehub_decode),
    ):
        a, b = best(upb), best(ours)
        print(f"{what:>16}: upb {a:.3f} us, hand-written {b:.3f} us ({a / b:.2f}x)")


if __name__ == "__main__":
    main()
