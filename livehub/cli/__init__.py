"""The ``livehub`` command: the typer app; each command lives in a module of this package.

``serve`` (serve, version), ``run`` (run: an app embedding a Hub), ``client`` (publish, sub),
``tokens`` (token), ``config`` (genconfig, checkconfig), ``bench`` (bench), ``codegen`` (codegen ts);
``common`` holds what they share.
"""

from __future__ import annotations

from typing import Annotated

import typer

from livehub import __version__
from livehub.cli import bench, client, codegen, config, run, serve, tokens
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
for module in (serve, run, client, tokens, config, bench, codegen):  # the order of `livehub --help`
    app.add_typer(module.commands)


def _print_version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """livehub: real-time messaging server, Centrifugo-compatible."""


def main() -> None:
    app(prog_name="livehub")
