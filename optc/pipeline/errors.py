"""Errors raised by the pass manager.

Bad pipeline text or options are the user's to fix (exit code 2, from
``UserInputError``); a pass that crashes or leaves a broken graph is a bug in that
pass (exit code 1), reported with the pass's name and position in the pipeline.
"""

from __future__ import annotations

from optc.errors import OptcError, UserInputError


class PipelineSyntaxError(UserInputError):
    """Pipeline text or TOML that cannot be parsed, or an option value of the wrong type."""


class PassError(OptcError):
    """A pass raised an unexpected exception or returned something other than a ``Graph``."""


class PassVerificationError(PassError):
    """The graph a pass returned breaks an IR invariant (``optc.ir.verify``)."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems
