"""``livehub codegen ts``: TypeScript types of a hub for its frontend (``livehub.codegen``).

The hub is found the way ``uvicorn`` finds an app (``module:attribute``, imported from the
current directory), or its AsyncAPI document is read from a file or from a server on this machine.
"""

from __future__ import annotations

import importlib
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from livehub.asyncapi import asyncapi_document
from livehub.cli.bench import is_loopback
from livehub.cli.common import err, fail
from livehub.codegen import CodegenError, typescript
from livehub.hub import Hub

commands = typer.Typer()
codegen = typer.Typer(
    help="Generate client code from a hub's AsyncAPI document.",
    no_args_is_help=True,
)
commands.add_typer(codegen, name="codegen")

#: The most a document fetched from a URL may weigh: a hub's document is a few kilobytes.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
FETCH_TIMEOUT = 10.0


def hubs_served(app: Any, depth: int = 0) -> list[Hub]:
    """The hubs whose AsyncAPI route an app (or router) serves: that route's endpoint is the
    hub's bound ``asyncapi`` method. Included routers and mounts are searched too."""
    found: list[Hub] = []
    for route in getattr(app, "routes", None) or ():
        owner = getattr(getattr(route, "endpoint", None), "__self__", None)
        if isinstance(owner, Hub):
            found.append(owner)
        if depth < 8:  # routers nest a few levels deep; a cycle must not loop
            for inner in (getattr(route, "original_router", None), getattr(route, "app", None)):
                if inner is not None and inner is not app:
                    found.extend(hubs_served(inner, depth + 1))
    unique: list[Hub] = []
    for hub in found:
        if all(hub is not h for h in unique):
            unique.append(hub)
    return unique


def find_hub(target: Any, module: Any, where: str) -> Hub:
    """The hub of ``target``: a Hub itself, the hub an app serves the document of, or else
    the one Hub of the module (an app whose hub serves no /asyncapi.json)."""
    if isinstance(target, Hub):
        return target
    if not hasattr(target, "routes"):
        fail(f"{where} is neither a livehub Hub nor an app that includes a hub's router (hub.router)", 2)
    hubs = hubs_served(target) or [v for v in vars(module).values() if isinstance(v, Hub)]
    if len(hubs) == 1:
        return hubs[0]
    if hubs:
        fail(f"{where} has {len(hubs)} hubs: name one of them (module:hub)", 2)
    fail(f"{where} serves no hub and its module has none", 2)


def load_target(spec: str) -> Hub:
    """Import ``module:attribute`` (``module`` alone: its ``app``) from the current directory."""
    module_name, _, attribute = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        fail(f"cannot import {module_name!r}: {exc}", 2)
    target: Any = module
    for name in (attribute or "app").split("."):
        if not hasattr(target, name):
            fail(f"{module_name!r} has no attribute {attribute or 'app'!r}", 2)
        target = getattr(target, name)
    return find_hub(target, module, spec)


def fetch_document(url: str) -> Any:
    """GET an AsyncAPI document from a server on this machine (never from elsewhere)."""
    host = urlsplit(url).hostname or ""
    if not is_loopback(host):
        fail(f"{url} is not on this machine: codegen reads documents from loopback addresses only", 2)
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except (urllib.error.URLError, OSError) as exc:
        fail(f"cannot read {url}: {exc}")
    if len(body) > MAX_DOCUMENT_BYTES:
        fail(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes: not an AsyncAPI document")
    return json.loads(body)


def read_document(source: str) -> Any:
    """The AsyncAPI document ``source`` names: a URL, a JSON file, or ``module:attribute``."""
    if source.startswith(("http://", "https://")):
        return fetch_document(source)
    path = Path(source)
    if source.endswith(".json") or path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            fail(f"cannot read {source}: {exc}", 2)
    return asyncapi_document(load_target(source))


@codegen.command(
    "ts",
    epilog="Examples:\n\n"
    "    livehub codegen ts examples.fastapi_app:app -o frontend/src/livehub.ts\n\n"
    "    livehub codegen ts myapp.realtime:hub               # to stdout\n\n"
    "    livehub codegen ts asyncapi.json -o livehub.ts\n\n"
    "    livehub codegen ts http://127.0.0.1:8000/asyncapi.json -o livehub.ts",
)
def ts(
    source: Annotated[
        str,
        typer.Argument(
            help="module:attribute of the app or Hub (imported from the current directory), "
            "an asyncapi.json file, or the URL of one on this machine.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The .ts file to write (default: standard output)."),
    ] = None,
) -> None:
    """TypeScript types of the hub's channels and RPC methods, with typed helpers for the
    official centrifuge SDK (livehub codegen ts)."""
    try:
        document = read_document(source)
    except json.JSONDecodeError as exc:
        fail(f"{source} is not JSON: {exc}", 2)
    if not isinstance(document, dict):
        fail(f"{source} is not an AsyncAPI document (a JSON object)", 2)
    try:
        code = typescript(document)
    except CodegenError as exc:
        fail(f"{source}: {exc}", 2)
    if output is None:
        sys.stdout.write(code)
        return
    try:
        output.write_text(code, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc}")
    err.print(f"wrote {output} ({code.count(chr(10))} lines)", highlight=False)
