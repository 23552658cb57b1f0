"""The README is executable: every ```python block of README.md runs, in order, in one namespace.

A block may use ``await`` at the top level; the ``test_*`` coroutines a block defines are run
after it (the README's HubTestClient example is such a test, run against the app the block
before it defines). A block that needs what a test cannot give (a server on a fixed port, a
process that serves forever) is marked by the line before it:
``<!-- readme-test: skip (reason) -->``.
"""

import ast
import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->")


@dataclass
class Block:
    line: int
    code: str
    skip: str | None


def python_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            before = lines[i - 1] if i else ""
            marked = SKIP.search(before)
            blocks.append(Block(start + 1, "\n".join(lines[start:end]) + "\n", marked and marked["reason"]))
            i = end
        i += 1
    return blocks


def test_the_blocks_are_found_and_few_are_skipped() -> None:
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 4
    skipped = [b for b in blocks if b.skip]
    assert all(b.skip for b in skipped) and len(skipped) <= 2, [b.skip for b in skipped]


def test_the_fastapi_app_in_the_readme_is_the_example_file() -> None:
    """``examples/fastapi_app.py`` (driven by the official SDK in tests/test_example_sdk.py) is
    the README's app, line for line, after its docstring."""
    example = (ROOT / "examples/fastapi_app.py").read_text()
    docstring = ast.get_docstring(ast.parse(example))
    assert docstring
    body = example.split('"""', 2)[2].lstrip("\n")
    apps = [b.code for b in python_blocks(README.read_text()) if "app.include_router(hub.router)" in b.code]
    assert apps == [body]


async def test_every_python_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_DB", str(tmp_path / "chat.sqlite3"))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    ran = 0
    for block in python_blocks(README.read_text()):
        if block.skip:
            continue
        before = set(namespace)
        code = compile(block.code, f"README.md:{block.line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)  # the README's own code: the point of this test
        if inspect.iscoroutine(result):
            await result
        for name in sorted(set(namespace) - before):
            test = namespace[name]
            if name.startswith("test_") and inspect.iscoroutinefunction(test):
                await test()
                ran += 1
    assert ran >= 1, "the README's HubTestClient example did not run"
    assert os.listdir(tmp_path) == ["chat.sqlite3"]  # the rolls went to $CHAT_DB
