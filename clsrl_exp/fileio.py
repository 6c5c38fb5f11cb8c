"""Files that must never be seen half-written: atomic writes, an inter-process lock, a stable short hash.

Standard library only, so every layer (records, data caches, the report) can use it. A writer puts the bytes into a
temporary file in the same folder, fsyncs and renames it onto the target: a reader sees the old file or the new one,
never a mix, and a crash leaves at most a stray `.<name>.*.tmp`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, `os.replace`); returns the path.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "a" / "x.txt"
    >>> atomic_write_bytes(p, b"hi").read_bytes()
    b'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; records and reports are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """JSON (UTF-8, trailing newline; values JSON cannot hold are written with `str`)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any | None:
    """The parsed file, or None if it is absent, unreadable or not JSON (callers decide what that means).

    >>> read_json("/nonexistent/file.json") is None
    True
    """
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if needed) for the `with` block; blocks until it is free.

    Used where concurrent processes build the same cached object (the tiny model, a warm start, a zero-shot
    prediction set) or update the same record: the second process waits, then finds the work done.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def spec_hash(*parts: object, length: int = 10) -> str:
    """A short, stable hash of JSON-able parts (key order does not matter).

    >>> spec_hash({"a": 1, "b": 2}) == spec_hash({"b": 2, "a": 1})
    True
    >>> len(spec_hash("x"))
    10
    """
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
