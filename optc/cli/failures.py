"""How the CLI reports failures: one line on stderr and a documented exit code.

``OptcError`` subclasses carry their exit code (2 for bad input, 3 for an unmet
budget); anything else is a bug in optc and exits 1. ``OPTC_DEBUG=1`` adds the
traceback. Click's own usage errors keep click's format and exit code 2.
"""

from __future__ import annotations

import errno
import traceback
from typing import Any

import click

from optc.errors import EXIT_INTERNAL, OptcError
from optc.settings import read_settings

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  internal error: a bug in optc (OPTC_DEBUG=1 shows the traceback)
  2  bad input or usage: unreadable or invalid model, unknown op, target,
     pass or option, bad option value, unwritable output
  3  the latency budget cannot be met
"""


class OptcGroup(click.Group):
    """A click group whose commands' errors become one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort):
            raise  # click reports these itself (usage errors exit 2)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # stdout closed early (`optc show --ir m.onnx | head`): click's case
            ctx.exit(report_failure(exc))
        except Exception as exc:  # the one place that turns any failure into an exit code
            ctx.exit(report_failure(exc))


def report_failure(exc: BaseException) -> int:
    """Print ``exc`` as one line on stderr (after its traceback when debugging); its exit code."""
    if read_settings().debug:
        click.echo(traceback.format_exc().rstrip(), err=True)
    if isinstance(exc, OptcError):
        click.echo(f"optc: error: {one_line(str(exc))}", err=True)
        return int(exc.exit_code)
    click.echo(f"optc: internal error: {type(exc).__name__}: {one_line(str(exc))} "
               "(a bug in optc; rerun with OPTC_DEBUG=1 to see the traceback)", err=True)
    return EXIT_INTERNAL


def one_line(text: str) -> str:
    """Multi-line messages joined with '; ' so that stderr gets exactly one line."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or "(no message)"
