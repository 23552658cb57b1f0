"""The benchmark's RPC server: ``livehub serve`` plus one RPC method, ``echo``.

``livehub serve`` registers no RPC handler, so the RPC round-trip figure of ``make bench``
runs this instead: the same app (``create_app``), uvicorn settings (``draining_server``) and listening
sockets as ``livehub serve``, with a hub that answers ``{"rpc": {"method": "echo", "data": X}}``
with ``{"rpc": {"data": X}}``. One process, in the foreground (the benchmark reads its CPU and memory)::

    .venv/bin/python bench/rpc_app.py --config bench/fanout.toml --port 18765
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from livehub import Client, Hub
from livehub.app import create_app
from livehub.cli import bind_sockets
from livehub.serving import draining_server
from livehub.settings import load_settings


def build(config: str | None) -> Any:
    settings = load_settings(config)
    hub = Hub(settings)

    @hub.rpc("echo")
    async def echo(client: Client, request: Any) -> Any:
        """Returns the request's data unchanged."""
        return request

    return settings, create_app(settings, hub=hub, demos=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18765)
    p.add_argument("--log-level", default="warning")
    a = p.parse_args()
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings, app = build(a.config)
    server = draining_server(app, app.state.node, a.log_level)
    server.run(sockets=bind_sockets(a.host, a.port))


if __name__ == "__main__":
    main()
