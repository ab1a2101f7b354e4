"""The ``micro-sym`` command line.

Each subcommand lives in its own module in this package and exposes ``register(app)``; modules are
discovered automatically, so adding a command never means editing this file. Command modules import
torch/escnn inside the command body, keeping ``micro-sym --help`` fast.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import warnings

import typer

from micro_sym import __version__
from micro_sym.errors import MicroSymError

app = typer.Typer(
    name="micro-sym",
    help="Find grains and crystal orientations in micrographs and tomography volumes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"micro-sym {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
):
    """micro-sym: symmetry-aware microstructure analysis."""


for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_mod}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    # Libraries that log or warn on stderr (tifffile on damaged files; escnn, at import, that py3nj is
    # missing, which only makes it slower) would add lines to our one-line errors.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message=".*py3nj.*")
    try:
        app(args=argv, standalone_mode=True)
    except MicroSymError as err:
        typer.echo(f"micro-sym: error: {err}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("micro-sym: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
