"""User-facing errors: one clear message naming the cause and the fix, a non-zero exit, no traceback wall.

The entry point prints `error: <message>` and exits with the error's `exit_code` (README "Errors and recovery"):

| exit | error | what it means |
|---|---|---|
| 2 | `ConfigError` | an impossible, unknown or incomplete setting (caught at start, before any data or model work) |
| 3 | `DataError` | bad input on disk: missing root, malformed split or data file, unreadable image, too few images |
| 4 | `OutputError` | an output location that cannot be written (a file in the way, a read-only folder) |
| 5 | `CellBusy` | another process is running the same cell (its run directory's lock is held) |
| 128 + n | `CellInterrupted` | stopped by signal n (130 SIGINT, 143 SIGTERM) after saving its work; rerun to resume |
| 1 | anything else | a bug or an unexpected failure: traceback in the log and in `<run_dir>/error.txt` |
"""


class UserError(Exception):
    """An error the user can fix; its message says what is wrong and how to fix it."""

    exit_code = 2


class ConfigError(UserError):
    """An impossible combination or value in the composed config."""


class DataError(UserError):
    """Bad input data on disk: the message names the path and what was expected."""

    exit_code = 3


class OutputError(UserError):
    """An output location cannot be written."""

    exit_code = 4


class CellBusy(UserError):
    """Another process holds the cell's lock."""

    exit_code = 5


class CellInterrupted(UserError):
    """A signal stopped the cell at a safe point (checkpoint saved, predictions flushed)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
