"""User-facing errors: one clear message naming the cause and the fix, a non-zero exit, no traceback wall.

Raise `ConfigError` for impossible or unknown settings (caught at start, before any model is loaded) and
`DataError` for bad input on disk (missing root, malformed split file, unreadable image, too few images).
The entry point prints `error: <message>` and exits with `exit_code`.
"""


class UserError(Exception):
    """An error the user can fix; its message says what is wrong and how to fix it."""

    exit_code = 2


class ConfigError(UserError):
    """An impossible combination or value in the composed config."""


class DataError(UserError):
    """Bad input data on disk: the message names the path and what was expected."""

    exit_code = 3
