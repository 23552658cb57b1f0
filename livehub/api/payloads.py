"""What the server API's methods share: a request's channel, its JSON payload, a position."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from pydantic import BaseModel

from livehub.core.node import Node
from livehub.models import StreamPosition
from livehub.protocol.codes import error_bad_request


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits
        raise error_bad_request() from None


def _payload(req: BaseModel, field: str, b64_field: str) -> bytes | None:
    """Raw JSON from ``field``, or from base64 in ``b64_field`` (which wins); None if neither."""
    b64: str = getattr(req, b64_field)
    if b64:
        try:
            return _json(orjson.loads(base64.b64decode(b64, validate=True)))
        except (binascii.Error, ValueError):
            raise error_bad_request() from None
    if field in req.model_fields_set:
        return _json(getattr(req, field))
    return None


def _position(sp: StreamPosition) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sp.offset:
        out["offset"] = sp.offset
    if sp.epoch:
        out["epoch"] = sp.epoch
    return out


def _channel(node: Node, channel: str) -> str:
    """A required channel: 107 if missing, 102 if its namespace is unknown."""
    if not channel:
        raise error_bad_request()
    node.options(channel)
    return channel
