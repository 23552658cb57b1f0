"""One consumed command -> the server API operation it names, as Centrifugo's consumers do.

``method`` is a server API method (``publish``, ``broadcast``, ``batch``, ...) and ``payload``
its request as JSON. A refusal (bad request, unknown channel, ...) is logged and skipped: trying
again would fail again. An internal error (the engine unreachable) raises ``Retry``: the
consumer keeps the command and tries it again later, so nothing is lost; publishers that
cannot tolerate a duplicate when a retried batch had partly succeeded set idempotency keys.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import ValidationError

from livehub.api.models import BatchCommand, BatchRequest
from livehub.api.operations import OPERATIONS, batch, run_guarded
from livehub.core.node import Node

log = logging.getLogger("livehub.consumers")

#: The server API's internal error: the one worth trying again.
INTERNAL = 100


class Retry(Exception):
    """The command failed for a reason that may pass (the engine unavailable)."""


def _internal(result: dict[str, Any] | None) -> bool:
    """Any internal error among a broadcast's or a batch's per-item replies."""
    if not result:
        return False
    items = result.get("responses") or result.get("replies") or []
    return any((item.get("error") or {}).get("code") == INTERNAL for item in items if isinstance(item, dict))


async def dispatch(node: Node, method: str, payload: bytes) -> None:
    """Run one command; raises Retry when it should be run again, returns otherwise."""
    try:
        if method == "batch":
            op = batch(node, BatchRequest.model_validate_json(payload or b"{}"))
        elif method in OPERATIONS:
            command = BatchCommand.model_validate({method: orjson.loads(payload or b"{}")})
            op = OPERATIONS[method](node, getattr(command, method))
        else:
            log.error("consumed command %r: no such server API method, skipped", method)
            return
    except (ValidationError, orjson.JSONDecodeError) as exc:
        log.error("consumed command %r: bad payload, skipped: %s", method, exc)
        return
    result, error = await run_guarded(op)
    if (error is not None and error.code == INTERNAL) or _internal(result):
        raise Retry(f"{method}: internal error")
    if error is not None:
        log.error("consumed command %r refused, skipped: %s %s", method, error.code, error.message)


def split(payload: bytes) -> tuple[str, bytes] | None:
    """A message without a method beside it: ``{"method": ..., "payload": ...}`` -> (method,
    request JSON); the request may also be a JSON string holding it (as CDC tools write it).
    None if the payload is not that."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        return None
    request = body.get("payload")
    if isinstance(request, str):
        return body["method"], request.encode()
    return body["method"], orjson.dumps(request if request is not None else {})


async def execute(node: Node, consumer: str, method: str, payload: bytes) -> None:
    """A message of a queue: the method beside the payload, or in it (:func:`split`);
    raises Retry as :func:`dispatch` does."""
    if not method:
        found = split(payload)
        if found is None:
            log.error(
                "consumer %s: skipping a malformed message (not JSON with method and payload)", consumer
            )
            return
        method, payload = found
    await dispatch(node, method, payload)


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
    await dispatch(node, "broadcast", orjson.dumps(request))
