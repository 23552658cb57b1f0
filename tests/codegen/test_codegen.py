"""``livehub codegen ts`` in-process: what the generator writes for each schema shape, that the
output depends on the document alone, and where the command reads documents from.

The generated code is compiled by the real TypeScript compiler in test_tsc.py.
"""

from __future__ import annotations

import copy
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from examples.fastapi_app import app as example_app
from examples.fastapi_app import hub as example_hub
from livehub.asyncapi import asyncapi_document
from livehub.cli import app as cli
from livehub.codegen import CodegenError, typescript
from tests.codegen import rich_hub


def block(code: str, start: str) -> str:
    """The lines of ``code`` from the one starting with ``start`` to the next line that is ``}``."""
    lines = code.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    last = next(i for i in range(first, len(lines)) if lines[i] == "}")
    return "\n".join(lines[first : last + 1])


def members(code: str, start: str) -> list[str]:
    """The member lines of a generated interface, without doc comments, unindented."""
    inner = block(code, start).splitlines()[1:-1]
    return [line.strip() for line in inner if not line.strip().startswith(("/**", "*"))]


@pytest.fixture(scope="module")
def rich() -> str:
    return typescript(asyncapi_document(rich_hub.hub))


def test_example_models_channels_and_rpc() -> None:
    code = typescript(asyncapi_document(example_hub))
    assert members(code, "export interface ChatMessage ") == ["text: string;", "sent_at?: number;"]
    assert members(code, "export interface Roll ") == ["sides?: number;"]
    assert members(code, "export interface RollResult ") == [
        "value: number;",
        "sides: number;",
        "rolls: number;",
    ]
    assert members(code, "export interface Channels ") == [
        '"chat:{room}": { name: `chat:${string}`; data: ChatMessage };'
    ]
    assert members(code, "export interface RpcMethods ") == ["roll: { request: Roll; response: RollResult };"]
    assert '["chat:{room}", new RegExp("^chat:[^:#]+$")],' in code
    assert "/** Roll a die on the server. */" in code
    assert "@maxLength 500" in code


def test_every_schema_shape(rich: str) -> None:
    assert members(rich, "export interface Everything ") == [
        "count: number;",
        "ratio?: number;",
        "flag: boolean;",
        "maybe: number | null;",
        "either: number | string;",
        "colour: Colour;",
        "level?: Level;",
        'mode?: "fast" | "slow";',
        "one: 1;",
        "pet: Cat | Dog;",
        "pet_or_none?: Cat | Dog | null;",
        "pair: [number, string];",
        "numbers: number[];",
        "tags: string[];",
        "scores: {",
        "[key: string]: number;",
        "};",
        "blob: {",
        "[key: string]: unknown;",
        "};",
        "anything: unknown;",
        "nested: Array<{",
        "[key: string]: number[];",
        "}>;",
        "when: string;",
        "tree: Node;",
        "loose: Loose;",
        '"user-id": string;',
        "error?: ErrorModel | null;",
        "channels?: ChannelsModel | null;",
    ]
    assert 'export type Colour = "red" | "green";' in rich
    assert "export type Level = 1 | 2;" in rich
    assert members(rich, "export interface Node ") == ["name: string;", "children?: Node[];"]
    assert members(rich, "export interface Loose ") == ["id: number;", "[key: string]: unknown;"]
    assert members(rich, "export interface Cat ") == ['kind: "cat";', "lives?: number;"]
    assert members(rich, "export interface Board ") == [
        'cells: Array<Array<"x" | "o" | "">>;',
        'turn: "x" | "o";',
    ]
    # docs: the docstring (with a */ that must not end the comment), bounds, defaults
    assert " * Its doc mentions *\\/ which cannot close the generated comment." in rich
    assert "*/ which" not in rich
    assert "/** Sent as user-id */" in rich
    assert "/** @default 0.5 */" in rich


def test_names_never_shadow_typescript_or_the_module(rich: str) -> None:
    """Models called Error and Channels become ErrorModel and ChannelsModel."""
    assert "export interface ErrorModel {" in rich
    assert "export interface ChannelsModel {" in rich
    assert "export interface Error " not in rich
    assert rich.count("export interface Channels ") == 1


def test_channels_in_hub_order_with_templates_and_regexes(rich: str) -> None:
    assert members(rich, "export interface Channels ") == [
        '"news": { name: `news`; data: ErrorModel };',
        '"everything:{id}": { name: `everything:${string}`; data: Everything };',
        '"game:{id}:moves": { name: `game:${string}:moves`; data: Move };',
        '"{topic}": { name: `${string}`; data: unknown };',
    ]
    assert (
        "  : (C extends `game:${infer P0}:moves` ? ([IsParam<P0>] extends [true] ? true : false) : false)"
        ' extends true ? "game:{id}:moves"'
    ) in rich
    assert '["game:{id}:moves", new RegExp("^game:[^:#]+:moves$")],' in rich


def test_rpc_methods_sorted_quoted_and_untyped(rich: str) -> None:
    assert members(rich, "export interface RpcMethods ") == [
        "echo: { request: Everything; response: Everything };",
        '"game.state": { request: Move; response: Board };',
        "ping: { request: unknown; response: unknown };",
    ]


def test_output_depends_on_the_document_alone() -> None:
    """Twice the same text; the same from the JSON of the document (a file, a URL); the
    same when components.schemas lists the schemas in another order."""
    document = asyncapi_document(rich_hub.hub)
    first = typescript(document)
    assert typescript(asyncapi_document(rich_hub.hub)) == first
    assert typescript(json.loads(json.dumps(document))) == first
    shuffled = copy.deepcopy(document)
    schemas = shuffled["components"]["schemas"]
    shuffled["components"]["schemas"] = dict(reversed(list(schemas.items())))
    assert typescript(shuffled) == first


def test_a_hub_without_channels_or_rpcs() -> None:
    from livehub import Hub, Settings

    code = typescript(asyncapi_document(Hub(Settings())))
    assert "export interface Channels {\n}" in code
    assert "export interface RpcMethods {\n}" in code
    assert "export type PatternOf<C extends string> = C extends string ? never : never;" in code
    assert "IsParam" not in code  # unused, it would trip noUnusedLocals


def test_unreadable_documents_are_refused() -> None:
    document = asyncapi_document(example_hub)
    with pytest.raises(CodegenError, match="AsyncAPI 3"):
        typescript({**document, "asyncapi": "2.6.0"})
    dangling = copy.deepcopy(document)
    del dangling["components"]["schemas"]["RollResult"]
    with pytest.raises(CodegenError, match="RollResult"):
        typescript(dangling)


# -- the command


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_command_writes_the_file_for_an_app_a_hub_and_a_document(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = typescript(asyncapi_document(example_hub))
    out = tmp_path / "chat.ts"
    done = runner.invoke(cli, ["codegen", "ts", "examples.fastapi_app:app", "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert out.read_text() == expected
    done = runner.invoke(cli, ["codegen", "ts", "examples.fastapi_app:hub"])
    assert done.exit_code == 0, done.output
    assert done.stdout == expected
    document = tmp_path / "asyncapi.json"
    document.write_text(json.dumps(asyncapi_document(example_hub)))
    done = runner.invoke(cli, ["codegen", "ts", str(document)])
    assert done.exit_code == 0, done.output
    assert done.stdout == expected


def test_command_explains_what_it_cannot_use(runner: CliRunner, tmp_path: Path) -> None:
    cases = {
        "nosuch_module_xyz:app": "cannot import 'nosuch_module_xyz'",
        "examples.fastapi_app:nothing": "has no attribute 'nothing'",
        "examples.fastapi_app:BANNED": "neither a livehub Hub nor an app",
        "http://192.0.2.1/asyncapi.json": "not on this machine",
        str(tmp_path / "missing.json"): "cannot read",
    }
    (tmp_path / "bad.json").write_text("{not json")
    cases[str(tmp_path / "bad.json")] = "is not JSON"
    (tmp_path / "old.json").write_text('{"asyncapi": "2.6.0"}')
    cases[str(tmp_path / "old.json")] = "an AsyncAPI 3 document is needed"
    for source, message in cases.items():
        done = runner.invoke(cli, ["codegen", "ts", source])
        assert done.exit_code == 2, (source, done.output)
        assert message in " ".join(done.stderr.split()), (source, done.stderr)


class _Document(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served_document() -> Iterator[str]:
    """The example's document, served over a real loopback socket by the standard library."""
    from fastapi.testclient import TestClient

    with TestClient(example_app) as client:
        _Document.body = client.get("/asyncapi.json").content
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Document)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/asyncapi.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_command_reads_a_document_from_a_local_url(runner: CliRunner, served_document: str) -> None:
    done = runner.invoke(cli, ["codegen", "ts", served_document])
    assert done.exit_code == 0, done.output
    assert done.stdout == typescript(asyncapi_document(example_hub))


#: JSON Schema that Pydantic does not write but another producer of AsyncAPI might.
HANDMADE: dict[str, Any] = {
    "asyncapi": "3.0.0",
    "info": {"title": "handmade */ title", "version": "1"},
    "channels": {
        "feed": {
            "address": "feed:{a}-{b}",
            "messages": {"publication": {"$ref": "#/components/messages/feed"}},
        },
        "rpc.sum": {"address": None, "messages": {}},
    },
    "operations": {
        "rpc.sum": {
            "action": "send",
            "messages": [{"$ref": "#/components/messages/sum.request"}],
            "reply": {"messages": [{"$ref": "#/components/messages/sum.response"}]},
        }
    },
    "components": {
        "messages": {
            "feed": {"payload": {"$ref": "#/components/schemas/a~1b"}},
            "sum.request": {"name": "sum request", "payload": {"type": "array", "items": {"type": "number"}}},
            "sum.response": {"payload": {"type": ["number", "null"]}},
        },
        "schemas": {
            "a/b": {
                "type": "object",
                "properties": {
                    "closed": {
                        "type": "object",
                        "properties": {"x": {"type": "string"}},
                        "additionalProperties": False,
                    },
                    "both": {
                        "allOf": [
                            {"$ref": "#/components/schemas/2nd"},
                            {"type": "object", "properties": {"y": {"const": None}}},
                        ]
                    },
                    "head": {
                        "type": "array",
                        "prefixItems": [{"type": "string"}],
                        "items": {"type": "integer"},
                    },
                    "anyObject": {"type": "object"},
                    "never": False,
                    "free": True,
                    "const": {"const": {"not": "a literal"}},
                },
                "required": ["closed"],
            },
            "2nd": {"type": "object", "properties": {"z": {"type": "boolean", "deprecated": True}}},
        },
    },
}


def test_json_schema_beyond_pydantic() -> None:
    code = typescript(HANDMADE)
    assert members(code, "export interface a_b ") == [
        "closed: {",
        "x?: string;",
        "};",
        "both?: _2nd & ({",
        "y?: null;",
        "});",
        "head?: [string, ...number[]];",
        "anyObject?: {",
        "[key: string]: unknown;",
        "};",
        "never?: never;",
        "free?: unknown;",
        "const?: unknown;",
    ]
    assert "@deprecated" in code
    assert members(code, "export interface RpcMethods ") == [
        "sum: { request: number[]; response: number | null };"
    ]
    assert '"feed:{a}-{b}": { name: `feed:${string}-${string}`; data: a_b };' in code
    assert '["feed:{a}-{b}", new RegExp("^feed:[^:#]+-[^:#]+$")],' in code
    assert '// TypeScript types of the livehub hub "handmade */ title"' in code  # a // comment: harmless
