"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (option, file, row, config key): reported in one line, exit code 2."""


class ConfigError(UserError):
    """An invalid option value or config key."""


class DataError(UserError):
    """A missing, unreadable or malformed data file."""
