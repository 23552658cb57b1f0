"""What a consumed message does: an API command executed as the server HTTP API executes it.

A message is either a method and its request (``method`` named beside the payload, in a
stream entry field or a message header), or a payload ``{"method": "publish", "payload":
{...}}`` (the payload may also be a JSON string holding the request). The methods are the
server API's that change something, as Centrifugo's consumers take them: ``publish``,
``broadcast``, ``subscribe``, ``unsubscribe``, ``disconnect``, ``history_remove`` and
``refresh`` — run by ``livehub.api.operations``, so a consumed command and an HTTP call
behave the same.

:func:`execute` returns normally when the message is done with — executed, or refused for
good (bad JSON, an unknown method, a refused request: logged, so the queue can drop it
instead of delivering it forever); it raises :class:`Retry` when it failed for a reason
that may pass (the engine unreachable, an internal error), so the message is delivered
again: at least once.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from livehub.api.models import BatchCommand
from livehub.api.operations import OPERATIONS, run_guarded
from livehub.core.node import Node

log = logging.getLogger("livehub.consuming")

#: The methods a consumer executes, as Centrifugo's consumers take them.
METHODS = frozenset(
    {"publish", "broadcast", "subscribe", "unsubscribe", "disconnect", "history_remove", "refresh"}
)
#: The server API's code for an internal error: the only one worth another try.
_INTERNAL = 100


class Retry(Exception):
    """The command failed for a reason that may pass: deliver the message again."""


def _request_model(method: str) -> type[BaseModel]:
    annotation = BatchCommand.model_fields[method].annotation
    model = next(a for a in getattr(annotation, "__args__", ()) if isinstance(a, type))
    assert issubclass(model, BaseModel)
    return model


_MODELS = {method: _request_model(method) for method in METHODS}


def split(payload: bytes) -> tuple[str, bytes] | None:
    """``{"method": ..., "payload": ...}`` -> (method, request JSON); None if it is not that."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        return None
    request = body.get("payload")
    if isinstance(request, str):  # a JSON document in a string (as some CDC tools write it)
        return body["method"], request.encode()
    return body["method"], orjson.dumps(request if request is not None else {})


async def execute(node: Node, consumer: str, method: str, payload: bytes) -> None:
    """Execute one consumed command (see the module docstring); raises :class:`Retry`."""
    if not method:
        found = split(payload)
        if found is None:
            log.error(
                "consumer %s: skipping a malformed message (not JSON with method and payload)", consumer
            )
            return
        method, payload = found
    if method not in METHODS:
        log.error("consumer %s: skipping a message with method %r (not one it executes)", consumer, method)
        return
    try:
        request = _MODELS[method].model_validate_json(payload or b"{}")
    except ValidationError as exc:
        log.error("consumer %s: skipping a malformed %s request: %s", consumer, method, exc.errors()[:1])
        return
    result, error = await run_guarded(OPERATIONS[method](node, request))
    if error is not None:
        if error.code == _INTERNAL:
            raise Retry(f"{method}: {error.message}")
        log.error("consumer %s: %s refused (%d %s): skipped", consumer, method, error.code, error.message)
        return
    if method == "broadcast" and result is not None:
        _broadcast_failures(consumer, result)


def _broadcast_failures(consumer: str, result: dict[str, Any]) -> None:
    """A broadcast retries if a channel failed for a passing reason (publishers make the
    repeat harmless with an idempotency key), and logs channels refused for good."""
    errors = [r["error"] for r in result.get("responses", []) if "error" in r]
    if any(e["code"] == _INTERNAL for e in errors):
        raise Retry("broadcast: a channel failed")
    for error in errors:
        log.error(
            "consumer %s: broadcast to a channel refused (%d %s)", consumer, error["code"], error["message"]
        )


async def publish_data(
    node: Node, consumer: str, channels: list[str], data: bytes, idempotency_key: str, tags: dict[str, str]
) -> None:
    """Publication data mode: ``data`` published into ``channels`` as one broadcast."""
    channels = [c for c in channels if c]
    if not channels:
        log.info("consumer %s: skipping a message that names no channel", consumer)
        return
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        log.error("consumer %s: skipping a message whose data is not JSON", consumer)
        return
    request = {"channels": channels, "data": value, "idempotency_key": idempotency_key, "tags": tags}
    await execute(node, consumer, "broadcast", orjson.dumps(request))
