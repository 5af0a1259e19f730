"""Exceptions shared across kp3d."""


class UserError(Exception):
    """An error caused by the user's input (a file, a flag, a config value).

    The CLI prints its message, which must name the file and the problem, without a traceback and
    exits with status 2.
    """


class DataError(UserError, ValueError):
    """A data file is unreadable or malformed; the message names the file (and row, if any)."""


class ConfigError(UserError, ValueError):
    """A configuration value or key is invalid; the message lists the valid choices."""
