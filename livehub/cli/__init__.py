"""The ``livehub`` command: the typer app; each command lives in a module of this package.

``serve`` (serve, version), ``run`` (run: an app embedding a Hub), ``client`` (publish, sub),
``tokens`` (token), ``config`` (genconfig, checkconfig), ``bench`` (bench); ``common`` holds
what they share.
"""

from __future__ import annotations

import typer

from livehub.cli import bench, client, config, run, serve, tokens
from livehub.cli.serve import bind_sockets
from livehub.serving import DrainingServer

__all__ = ["DrainingServer", "app", "bind_sockets", "main"]

app = typer.Typer(
    help="livehub: real-time messaging server, Centrifugo-compatible.",
    epilog="Quick start (each command has --help with examples):\n\n"
    "    livehub genconfig                                  # config.json with fresh keys\n\n"
    "    livehub serve --config config.json\n\n"
    "    livehub sub news --config config.json              # in another terminal\n\n"
    '    livehub publish news \'{"text": "hi"}\' --config config.json',
    no_args_is_help=True,
)
for module in (serve, run, client, tokens, config, bench):  # the order of `livehub --help`
    app.add_typer(module.commands)


def main() -> None:
    app(prog_name="livehub")
