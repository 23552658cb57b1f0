"""The layers stay apart: the protocol is pure, and nothing cycles through the package root."""

from __future__ import annotations

import subprocess
import sys

from tests.servers import ROOT


def test_the_protocol_imports_without_fastapi_or_asyncio() -> None:
    code = (
        "import sys\n"
        "import livehub.protocol.websocket, livehub.protocol.codec, livehub.protocol.commands\n"
        "import livehub.protocol.fossil, livehub.protocol.codes\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'fastapi', 'starlette', 'asyncio', 'pydantic', 'uvicorn'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_package_root_loads_its_names_on_first_use() -> None:
    code = (
        "import sys, livehub\n"
        "assert 'livehub.hub' not in sys.modules and 'fastapi' not in sys.modules\n"
        "from livehub import Hub, Client, Settings, Error\n"
        "assert Hub.__module__ == 'livehub.hub' and Error.__module__ == 'livehub.protocol.codes'\n"
        "print(sorted(n for n in dir(livehub) if not n.startswith('_')) == sorted(livehub.__all__[:-1]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
