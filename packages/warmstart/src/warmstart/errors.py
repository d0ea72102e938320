"""User-facing errors.

Anything a user can cause and fix (a wrong config field, a missing file, a corrupt checkpoint) raises a
:class:`UserError`. The CLI layer prints its message on one line and exits with code 2, no traceback.
Messages name the file or field and say how to fix it.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit code 2."""


class ConfigError(UserError):
    """An invalid configuration value."""


class DataError(UserError):
    """A missing or malformed data file."""


class CheckpointError(UserError):
    """A missing, incomplete or corrupt checkpoint."""


class NonFiniteError(UserError):
    """Training produced a NaN/inf loss or gradient."""
