"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (option, file, row, config key): reported in one line, exit code 2."""


class ConfigError(UserError):
    """An invalid option value or config key."""


class DataError(UserError):
    """A missing, unreadable or malformed data file."""


class InvalidValue(ValueError):
    """A bad value of one keyword argument of a component (techniques, data splits and readers).

    Components raise it in plain terms, naming their own argument (``invalid lr: must be > 0, got -1``), never a
    command-line option; only the config edge (:func:`stabletune.config.option_errors`) rewords it as the
    option that set the value. A plain ``ValueError`` for library callers.
    """

    def __init__(self, arg: str, problem: str):
        super().__init__(f"invalid {arg}: {problem}")
        self.arg, self.problem = arg, problem
