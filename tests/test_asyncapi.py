"""The hub's AsyncAPI document validates against the official AsyncAPI 3.0.0 JSON schema.

The schema comes from npm ``@asyncapi/specs`` (pinned in tests/peers/node/package-lock.json,
installed by scripts/provision_peers.sh).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from examples.fastapi_app import app
from tests.servers import ROOT

SCHEMA = ROOT / "tests/peers/node/node_modules/@asyncapi/specs/schemas/3.0.0.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    assert SCHEMA.is_file(), f"{SCHEMA} is missing: run bash scripts/provision_peers.sh"
    schema = json.loads(SCHEMA.read_text())
    registry: Registry[Any] = Registry().with_resource(
        schema["$id"], Resource.from_contents(schema, default_specification=DRAFT7)
    )
    return jsonschema.Draft7Validator(schema, registry=registry.crawl())


def document() -> dict[str, Any]:
    with TestClient(app) as client:
        response = client.get("/asyncapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def test_document_is_valid_asyncapi_3(validator: jsonschema.Draft7Validator) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document())]
    assert errors == []


def test_validator_rejects_a_broken_document(validator: jsonschema.Draft7Validator) -> None:
    """The check above can fail: a document with a malformed channel does not pass."""
    doc = document()
    doc["channels"]["chat_room"]["address"] = 42
    assert list(validator.iter_errors(doc))


def test_document_describes_channels_and_rpc() -> None:
    doc = document()
    assert doc["operations"]["chat_room.send"]["action"] == "send"
    assert doc["operations"]["chat_room.receive"]["action"] == "receive"
    request = doc["components"]["messages"]["rpc.roll.request"]["payload"]
    assert request == {"$ref": "#/components/schemas/Roll"}
    assert doc["operations"]["rpc.roll"]["description"] == "Roll a die on the server."
