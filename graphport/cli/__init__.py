"""The ``graphport`` command line: parse arguments, call the library, print.

Errors graphport raises on purpose become one line on stderr and a non-zero exit code;
a traceback appears only with ``-vv`` (debug). Progress goes to stderr, results to
stdout, so ``--json`` output can be piped.

One module per command group (export.py, transform.py, validate.py, run.py, evaluate.py,
bench.py, deploy.py, info.py, sweep.py), their shared options in common.py; this module
holds the group, registers the commands and runs them (``main``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from graphport import __version__
from graphport.cli import bench, deploy, evaluate, export, info, run, sweep, transform, validate
from graphport.errors import GraphportError
from graphport.verbosity import set_verbosity

logger = logging.getLogger("graphport.cli")


class _Group(click.Group):
    """Turns graphport errors into one clear message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GraphportError as e:
            logger.debug("Traceback:", exc_info=True)
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def _level(verbose: int, quiet: bool) -> int | None:
    if quiet:
        return logging.ERROR
    if verbose:
        return logging.DEBUG if verbose > 1 else logging.INFO
    return None  # the environment variable, else INFO (a CLI shows its progress)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="graphport")
@click.option("-v", "--verbose", count=True, help="More output (-vv: debug, with tracebacks).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only.")
def cli(verbose: int, quiet: bool) -> None:
    """Export Transformers models to graphs, run them, and prove parity with eager.

    The verbosity can also be set with GRAPHPORT_VERBOSITY=debug|info|warning|error.
    """
    set_verbosity(_level(verbose, quiet), default=logging.INFO)


for _command in (
    export.export,
    validate.validate,
    run.run,
    run.generate,
    info.inspect,
    transform.optimize,
    transform.quantize,
    bench.bench,
    evaluate.evaluate,
    deploy.deploy,
    info.list_,
    info.env,
    sweep.sweep,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="graphport")


__all__ = ["cli", "main"]
