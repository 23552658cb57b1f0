"""An AsyncAPI 3.0 document for a hub: what ``/openapi.json`` is to routes, for channels.

Each declared channel pattern becomes a channel (its ``{params}`` as AsyncAPI
parameters) with a ``receive`` operation (clients get publications) and, when clients may
publish there, a ``send`` operation. Its options (config and code merged, those that differ
from the defaults) are in the channel's ``x-livehub-options`` extension. Each RPC method
becomes a ``send`` operation with a reply.
Pydantic models give the payload schemas; their shared definitions are hoisted into
``components.schemas``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from livehub import __version__
from livehub.settings import NamespaceOptions

if TYPE_CHECKING:
    from livehub.hub import Hub

REF = "#/components/schemas/{model}"
ANY_JSON: dict[str, Any] = {"description": "Any JSON value"}


def _ident(text: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", text).strip("_") or "root"


def _payload(model: type[BaseModel] | None, schemas: dict[str, Any]) -> dict[str, Any]:
    if model is None:
        return dict(ANY_JSON)
    schema = model.model_json_schema(ref_template=REF)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _changed(options: NamespaceOptions) -> dict[str, Any]:
    """The options that differ from NamespaceOptions' defaults, as JSON."""
    defaults = NamespaceOptions()
    dumped: dict[str, Any] = options.model_dump(mode="json", exclude=set(options.model_extra or ()))
    return {name: value for name, value in dumped.items() if getattr(defaults, name, None) != value}


def _clients_publish(hub: Hub, has_on_publish: bool, options: NamespaceOptions | None) -> bool:
    if has_on_publish or hub.settings.client.insecure or options is None:
        return True
    return options.allow_publish_for_client or options.allow_publish_for_subscriber


def asyncapi_document(hub: Hub) -> dict[str, Any]:
    settings = hub.settings
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    for spec in hub.declared:
        cid = _ident(spec.pattern.pattern)
        message_id = f"{cid}.publication"
        messages[message_id] = {
            "name": spec.model.__name__ if spec.model else "Publication",
            "contentType": "application/json",
            "payload": _payload(spec.model, schemas),
        }
        channel: dict[str, Any] = {
            "address": spec.pattern.pattern,
            "messages": {"publication": {"$ref": f"#/components/messages/{message_id}"}},
        }
        if spec.description:
            channel["description"] = spec.description
        if spec.pattern.params:
            channel["parameters"] = {
                p: {"description": f"The {p} part of the channel name"} for p in spec.pattern.params
            }
        options = hub.node.rules.declared_options(spec.pattern)
        if options is not None:
            channel["x-livehub-options"] = _changed(options)
        channels[cid] = channel
        ref = {"$ref": f"#/channels/{cid}"}
        publication = [{"$ref": f"#/channels/{cid}/messages/publication"}]
        operations[f"{cid}.receive"] = {
            "action": "receive",
            "channel": ref,
            "summary": f"Publications in {spec.pattern.pattern}",
            "messages": publication,
        }
        if not _clients_publish(hub, spec.on_publish is not None, options):
            continue
        operations[f"{cid}.send"] = {
            "action": "send",
            "channel": ref,
            "summary": f"Publish to {spec.pattern.pattern}",
            "messages": publication,
        }

    for method, rpc in hub.rpcs.items():
        cid = f"rpc.{_ident(method)}"
        messages[f"{cid}.request"] = {"name": f"{method} request", "payload": _payload(rpc.request, schemas)}
        messages[f"{cid}.response"] = {
            "name": f"{method} response",
            "payload": _payload(rpc.response, schemas),
        }
        channels[cid] = {
            "address": None,
            "description": f"RPC method {method!r}, called with the protocol's rpc command",
            "messages": {
                "request": {"$ref": f"#/components/messages/{cid}.request"},
                "response": {"$ref": f"#/components/messages/{cid}.response"},
            },
        }
        operation: dict[str, Any] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "messages": [{"$ref": f"#/channels/{cid}/messages/request"}],
            "reply": {
                "channel": {"$ref": f"#/channels/{cid}"},
                "messages": [{"$ref": f"#/channels/{cid}/messages/response"}],
            },
        }
        if rpc.description:
            operation["description"] = rpc.description
        operations[cid] = operation

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": hub.title,
            "version": __version__,
            "description": "Channels and RPC methods of a livehub server (Centrifugo protocol v2, JSON).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "livehub": {
                "host": f"{settings.http_server.address}:{settings.http_server.port}",
                "protocol": "ws",
                "pathname": settings.websocket.handler_prefix,
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
