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


def append_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Append whole JSON lines under an exclusive lock (several processes share the file) and fsync; a line torn by a
    writer that died is closed first, so it stays one unreadable line instead of spoiling the next.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "log.jsonl"
    >>> _ = p.write_text('{"a": 1}\\n{"a": '); append_jsonl(p, [{"a": 2}]); read_jsonl(p)
    ([{'a': 1}, {'a': 2}], 1)
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0, os.SEEK_END)
            head = b""
            if fh.tell():
                fh.seek(-1, os.SEEK_END)
                head = b"" if fh.read(1) == b"\n" else b"\n"
            fh.write(head + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_jsonl(path: str | os.PathLike) -> tuple[list[dict], int]:
    """(the readable JSON-object lines of a file, how many lines were not): an absent file is ([], 0)."""
    try:
        text = Path(path).read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return [], 0
    rows, bad = [], 0
    for line in text.splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


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


class LockHeld(Exception):
    """`try_lock` found the lock taken; `holder` is what the holder wrote into the lock file."""

    def __init__(self, path: Path, holder: dict):
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


@contextlib.contextmanager
def try_lock(path: str | os.PathLike, holder: dict, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` for the block and write `holder` (JSON) into it; raise `LockHeld` with
    the current holder's description if another process holds it (or wait for it with `wait=True`).

    The kernel releases an flock when its process dies, so a lock left by a killed process is free again (its stale
    holder text is simply overwritten).

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / ".lock"
    >>> with try_lock(p, {"pid": 1}):
    ...     json.loads(p.read_text())["pid"]
    1
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raw = os.pread(fd, 65536, 0)
            try:
                current = json.loads(raw) if raw else {}
            except ValueError:
                current = {"raw": raw[:200].decode(errors="replace")}
            raise LockHeld(path, current) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Create `path` (a folder) if needed and prove it can be written (a probe file); raise OSError naming `what`
    otherwise. The message says whether a file is in the way."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{what} {path}: {parent} is a file, not a folder")
            break
    path.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.")
    os.close(fd)
    os.unlink(probe)
    return path


def write_sealed_json(path: str | os.PathLike, obj: dict) -> Path:
    """Write a cache file that carries the sha256 of its own content (`read_sealed_json` checks it)."""
    body = {k: v for k, v in obj.items() if k != "sha256"}
    return atomic_write_json(path, {**body, "sha256": spec_hash(body, length=64)})


def read_sealed_json(path: str | os.PathLike) -> tuple[dict | None, str | None]:
    """(content, None) for an intact sealed file; (None, why) for a truncated, edited or unreadable one; (None, None)
    when it does not exist.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "c.json"
    >>> _ = write_sealed_json(p, {"items": [1, 2]}); read_sealed_json(p)[0]["items"]
    [1, 2]
    >>> _ = p.write_text(p.read_text().replace("2", "3")); read_sealed_json(p)
    (None, 'its content does not match its checksum (edited or corrupted)')
    """
    path = Path(path)
    if not path.exists():
        return None, None
    data = read_json(path)
    if not isinstance(data, dict):
        return None, "it is not readable JSON (truncated or corrupted)"
    body = {k: v for k, v in data.items() if k != "sha256"}
    if data.get("sha256") != spec_hash(body, length=64):
        return None, "its content does not match its checksum (edited or corrupted)"
    return body, None


SEALED_DIR = ".complete"


def seal_dir(folder: str | os.PathLike, spec: object) -> None:
    """Mark a finished cache folder (a built model) with its spec and the size of every file in it."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != SEALED_DIR}
    atomic_write_json(folder / SEALED_DIR, {"spec": spec, "files": files})


def sealed_dir_ok(folder: str | os.PathLike, spec: object) -> str | None:
    """None if `folder` is a sealed cache of `spec` with every file intact (same sizes), else why not."""
    folder = Path(folder)
    seal = read_json(folder / SEALED_DIR)
    if not isinstance(seal, dict):
        return "it was not finished (no completion mark)"
    if json.loads(json.dumps(seal.get("spec"), default=str)) != json.loads(json.dumps(spec, default=str)):
        return "it was built from another spec"
    for name, size in (seal.get("files") or {}).items():
        p = folder / name
        if not p.is_file() or p.stat().st_size != size:
            return f"{name} is missing or truncated"
    return None


def use_or_rebuild(folder: str | os.PathLike, spec: object, build, what: str) -> Path:
    """The sealed cache folder of `spec`, built by `build(folder)` if absent; a corrupt or mismatched one is moved
    aside (`<folder>.corrupt-<time>`) with one warning and rebuilt. Call under a file lock."""
    import logging
    import time

    folder = Path(folder)
    if folder.exists():
        why = sealed_dir_ok(folder, spec)
        if why is None:
            return folder
        aside = folder.with_name(f"{folder.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        logging.getLogger(__name__).warning("cached %s %s is rebuilt: %s (moved to %s)", what, folder, why, aside)
        os.replace(folder, aside)
    build(folder)
    seal_dir(folder, spec)
    return folder


def spec_hash(*parts: object, length: int = 10) -> str:
    """A short, stable hash of JSON-able parts (key order does not matter).

    >>> spec_hash({"a": 1, "b": 2}) == spec_hash({"b": 2, "a": 1})
    True
    >>> len(spec_hash("x"))
    10
    """
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
