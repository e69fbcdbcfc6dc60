"""The ``optc`` command: a click group; each subcommand lives in its own module."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import click

import optc
from optc.cli import compile, latency, measure, passes, profile, run_passes, show, targets
from optc.cli.failures import EXIT_CODES_HELP, OptcGroup

LOG_FORMAT = "optc: %(levelname)s: %(name)s: %(message)s"


class StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time, so redirections (tests) hold."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # logging must never take the command down
            self.handleError(record)


def configure_logging(verbosity: int) -> Callable[[], None]:
    """Warnings by default, ``-v`` info, ``-vv`` debug, all on stderr; returns the undo.

    The undo restores the ``optc`` logger as it was, so that running the CLI in-process
    (tests, notebooks) leaves no handler or level behind.
    """
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]
    logger = logging.getLogger("optc")
    old_level = logger.level
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    return restore


@click.group(cls=OptcGroup, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(optc.__version__, "--version", prog_name="optc",
                      message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True,
              help="Log more on stderr: -v for progress, -vv for debugging detail.")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """optc: a compiler-style model optimization pipeline.

    ONNX or PyTorch model -> optc IR -> ordered passes -> Apache TVM code for a target.
    """
    ctx.call_on_close(configure_logging(verbose))


cli.add_command(show.command)
cli.add_command(passes.command)
cli.add_command(targets.command)
cli.add_command(run_passes.command)
cli.add_command(profile.command)
cli.add_command(compile.command)
cli.add_command(measure.command)
cli.add_command(latency.group)


def main() -> None:
    """Console-script entry point (``optc = optc.cli.main:main``)."""
    cli.main(prog_name="optc")


if __name__ == "__main__":
    main()
