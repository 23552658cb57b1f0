"""What ``livehub codegen ts`` writes, compiled by the real TypeScript compiler against the
official centrifuge SDK's own types (both pinned in tests/codegen/package-lock.json and
installed under .cache/codegen by tests/codegen/install.sh).

* usage_*.ts must compile, under the strictest options a frontend may use;
* misuse_*.ts must not: tsc must report each line marked ``// error TSxxxx`` with that code,
  and no other line;
* the helpers' code, run by node, puts channel names in the same patterns as the server;
* and with the real SDK against examples/fastapi_app.py served by uvicorn, typedRpc,
  typedPublish and publication carry real RPC results and publications.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.fastapi_app import hub as example_hub
from livehub.asyncapi import asyncapi_document
from livehub.codegen import typescript
from tests.codegen import rich_hub
from tests.codegen.test_codegen import HANDMADE
from tests.servers import ROOT, free_port, provision, wait_port

HERE = Path(__file__).resolve().parent
MODULES = ROOT / ".cache" / "codegen" / "node_modules"
TSC = MODULES / ".bin" / "tsc"
TIMEOUT = 120

#: The options of a strict frontend: whatever the generated module does must pass them all.
OPTIONS = {
    "strict": True,
    "noEmit": True,
    "target": "ES2022",
    "module": "ESNext",
    "moduleResolution": "Bundler",
    "lib": ["ES2022", "DOM"],
    "types": [],
    "noUnusedLocals": True,
    "noUnusedParameters": True,
    "noImplicitReturns": True,
    "exactOptionalPropertyTypes": True,
    "noUncheckedIndexedAccess": True,
    "noPropertyAccessFromIndexSignature": True,
    "verbatimModuleSyntax": True,
    "isolatedModules": True,
}
ERROR = re.compile(r"^(?P<file>[\w.]+)\((?P<line>\d+),\d+\): error (?P<code>TS\d+): (?P<text>.*)$")
MARK = re.compile(r"// error (TS\d+)")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the generated chat.ts and rich.ts and the usage/misuse files."""
    # idempotent: npm ci runs again only when package-lock.json changed
    provision("tests/codegen/install.sh", "the codegen tests compile with the TypeScript compiler")
    root = tmp_path_factory.mktemp("codegen")
    (root / "chat.ts").write_text(typescript(asyncapi_document(example_hub)))
    (root / "rich.ts").write_text(typescript(asyncapi_document(rich_hub.hub)))
    for source in HERE.glob("*.ts"):
        shutil.copy(source, root / source.name)
    return root


def tsc(project: Path, files: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    """Run tsc on ``files`` with OPTIONS (and ``options``); ``centrifuge`` resolves to the pinned SDK."""
    config = {
        "compilerOptions": {**OPTIONS, **options, "paths": {"centrifuge": [str(MODULES / "centrifuge")]}},
        "files": files,
    }
    (project / "tsconfig.json").write_text(json.dumps(config, indent=2))
    return subprocess.run(
        [str(TSC), "-p", "tsconfig.json", "--pretty", "false"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_usage_compiles(project: Path) -> None:
    done = tsc(project, ["chat.ts", "rich.ts", "usage_chat.ts", "usage_rich.ts"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_misuse_fails_on_every_marked_line_and_only_there(project: Path) -> None:
    files = ["misuse_chat.ts", "misuse_rich.ts"]
    done = tsc(project, ["chat.ts", "rich.ts", *files])
    assert done.returncode == 1, done.stdout + done.stderr  # what tsc 7 exits with on errors
    reported: dict[tuple[str, int], set[str]] = {}
    for line in done.stdout.splitlines():
        m = ERROR.match(line)
        if m:
            reported.setdefault((m["file"], int(m["line"])), set()).add(m["code"])
    expected: dict[tuple[str, int], set[str]] = {}
    for name in files:
        for number, text in enumerate((project / name).read_text().splitlines(), start=1):
            if m := MARK.search(text):
                expected[(name, number)] = {m[1]}
    assert len(expected) == 26  # the misuse files' marks, so none is lost
    assert reported == expected, done.stdout
    # the messages name what is wrong
    for text in (
        "Argument of type '\"rol\"' is not assignable to parameter of type '\"roll\"'.",
        "Type 'string' is not assignable to type 'number'.",
        "'colour' does not exist in type 'Roll'.",
        "Property 'text' is missing in type '{ sent_at: number; }' but required in type 'ChatMessage'.",
        "Type '\"blue\"' is not assignable to type 'Colour'.",
        "'good' does not exist in type 'Cat'.",
    ):
        assert text in done.stdout


def test_modules_of_an_empty_hub_and_of_handmade_json_schema_compile(project: Path) -> None:
    from livehub import Hub, Settings

    (project / "empty.ts").write_text(typescript(asyncapi_document(Hub(Settings()))))
    (project / "handmade.ts").write_text(typescript(HANDMADE))
    done = tsc(project, ["empty.ts", "handmade.ts"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_helpers_find_the_pattern_the_server_finds(project: Path) -> None:
    """patternOf and publication, compiled to JavaScript and run by node, against the hub's own
    matching (Hub._find) for names that fit one pattern, several, or none."""
    out = project / "js"
    done = tsc(project, ["rich.ts"], noEmit=False, outDir=str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    (out / "package.json").write_text('{"type": "module"}')
    names = ["news", "weather", "everything:1", "everything:a:b", "game:7:moves", "game::moves"]
    names += ["game:7:moves:x", "", "a#b", "news:x", "everything:", "x.y-z"]
    script = (
        "import { patternOf, publication } from './rich.js';\n"
        f"const names = {json.dumps(names)};\n"
        "const found = names.map((n) => patternOf(n) ?? null);\n"
        "const data = publication({ channel: 'news', data: { code: 1 } }, 'news');\n"
        "const other = publication({ channel: 'news', data: { code: 1 } }, '{topic}');\n"
        "console.log(JSON.stringify({ found, data, other: other ?? null }));\n"
    )
    (out / "check.mjs").write_text(script)
    run = subprocess.run(
        ["node", "check.mjs"], cwd=out, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    server = []
    for name in names:
        match = rich_hub.hub._find(name)
        server.append(None if match is None else match[0].pattern.pattern)
    assert result["found"] == server
    assert server[:4] == ["news", "{topic}", "everything:{id}", None]  # the cases are covered
    assert result["data"] == {"code": 1}
    assert result["other"] is None


@pytest.fixture(scope="module")
def example_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """examples/fastapi_app.py served by uvicorn on a free loopback port (its rolls in a temp file)."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", str(port)]
    env = {**os.environ, "CHAT_DB": str(tmp_path_factory.mktemp("example") / "chat.sqlite3")}
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], cwd=ROOT, env=env)
    try:
        wait_port(port, proc)
        yield f"ws://127.0.0.1:{port}/connection/websocket"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


E2E = """
import { Centrifuge } from "centrifuge";
import WebSocket from "ws";
import { publication, typedPublish, typedRpc } from "./chat.js";

// The example authenticates by the X-User header: a ws WebSocket that sends it.
class AsAlice extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { headers: { "X-User": "alice" } });
  }
}
const client = new Centrifuge(process.argv[2], { websocket: AsAlice });
const timer = setTimeout(() => { console.error("timed out"); process.exit(3); }, 15000);
client.connect();
const sub = client.newSubscription("chat:lobby");
const received = new Promise((resolve) => {
  sub.on("publication", (ctx) => resolve({
    asChat: publication(ctx, "chat:{room}") ?? null,
    asOther: publication({ ...ctx, channel: "news" }, "chat:{room}") ?? null,
  }));
});
sub.subscribe();
await sub.ready(5000);
const roll = await typedRpc(client, "roll", { sides: 3 });
await typedPublish(client, "chat:lobby", { text: "typed hello" });
const got = await received;
console.log(JSON.stringify({ roll, ...got }));
clearTimeout(timer);
client.disconnect();
"""


def test_helpers_with_the_real_sdk_against_the_example(project: Path, example_url: str) -> None:
    """chat.ts compiled to JavaScript, used by the official SDK over a real socket."""
    # node resolves "centrifuge" and "ws" from the script's directory upwards: work under .cache
    with tempfile.TemporaryDirectory(dir=MODULES.parent, prefix="e2e-") as work:
        out = Path(work)
        done = tsc(project, ["chat.ts"], noEmit=False, outDir=str(out))
        assert done.returncode == 0, done.stdout + done.stderr
        (out / "package.json").write_text('{"type": "module"}')
        (out / "e2e.mjs").write_text(E2E)
        run = subprocess.run(
            ["node", "e2e.mjs", example_url],
            cwd=out,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result["roll"]["sides"] == 3
    assert 1 <= result["roll"]["value"] <= 3
    assert result["asChat"]["text"] == "typed hello"
    assert result["asChat"]["sent_at"] > 0  # stamped by the example's on_publish
    assert result["asOther"] is None
