"""Errors a user can act on, each carrying the CLI exit code documented in the README.

Exit codes: 0 ok; 1 internal error (a bug: please report it); 2 bad input or usage
(unreadable or invalid model, unknown op, target or pass, bad options); 3 the latency
budget cannot be met.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_BUDGET = 3


class OptcError(Exception):
    """Base of every error optc reports to users as one line instead of a traceback."""

    exit_code = EXIT_INTERNAL


class UserInputError(OptcError):
    """The user's model, file, option or name is wrong; exit code 2."""

    exit_code = EXIT_BAD_INPUT


class InvalidModelError(UserInputError):
    """A model file is unreadable, malformed, or breaks an IR invariant."""


class UnsupportedOpError(UserInputError):
    """An operator has no rule (interpreter, cost model or code generator)."""

    def __init__(self, op: str, where: str, domain: str = "") -> None:
        full = f"{domain}::{op}" if domain else op
        super().__init__(f"operator {full!r} is not supported by {where}")
        self.op = op
        self.domain = domain


class UnknownNameError(UserInputError):
    """An unknown pass, target, cost model or option name."""


class PluginError(UserInputError):
    """A plugin could not be loaded, or two plugins claim the same name."""


class BudgetNotMetError(OptcError):
    """No candidate meets the latency budget; exit code 3."""

    exit_code = EXIT_BUDGET
