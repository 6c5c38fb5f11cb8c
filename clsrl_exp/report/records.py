"""Find, load and validate `result.json` records; nothing is dropped silently.

A record that cannot be used (unparseable, wrong schema, incomplete, missing required keys, no eval of its own
dataset for its setting, or an older duplicate of another record) becomes a `Skipped(path, reason)` that the
report lists. Duplicates share (model, method, dataset, setting, shots, seed); the newest file (mtime) wins.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clsrl_exp.errors import UserError

SCHEMA = 1
RUN_KEYS = ("method", "model", "dataset", "setting", "shots", "seed")
RESULT_NAME = "result.json"


class RunRootNotFound(UserError):
    """A RUN_ROOT given on the command line does not exist."""

    exit_code = 2

    def __init__(self, path: Path | str):
        super().__init__(f"run root not found: {path}")
        self.path = path


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Record:
    """One complete, validated result record."""

    path: str
    mtime: float
    run: dict[str, Any]
    evals: list[dict[str, Any]]
    train: dict[str, Any] | None = None
    identity_hash: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> tuple:
        return tuple(self.run[k] for k in ("model", "method", "dataset", "setting", "shots", "seed"))

    def accuracy(self, dataset: str, split: str, strict: bool = False) -> float | None:
        """Accuracy of the first eval on (dataset, split), or None."""
        for ev in self.evals:
            if ev["dataset"] == dataset and ev["split"] == split:
                value = ev.get("accuracy_strict") if strict else ev["accuracy"]
                return None if value is None else float(value)
        return None


def find_result_files(roots: list[str | Path]) -> list[Path]:
    """All `result.json` under the roots (recursively), sorted and de-duplicated; a root may be the file itself."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise RunRootNotFound(root)
        if root.is_file():
            found.add(root.resolve())
        else:
            found.update(p.resolve() for p in root.rglob(RESULT_NAME) if p.is_file())
    return sorted(found)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate(data: Any) -> str | None:
    """The reason this parsed record is unusable, or None when it is fine."""
    if not isinstance(data, dict):
        return "corrupt: not a JSON object"
    if data.get("schema") != SCHEMA:
        return f"wrong schema: expected {SCHEMA}, got {data.get('schema')!r}"
    if data.get("status") != "complete":
        return f"incomplete: status={data.get('status')!r}"
    run = data.get("run")
    if not isinstance(run, dict):
        return "corrupt: missing key 'run'"
    for key in RUN_KEYS:
        if key not in run:
            return f"corrupt: missing key 'run.{key}'"
    for key in ("method", "model", "dataset", "setting"):
        if not isinstance(run[key], str) or not run[key]:
            return f"corrupt: 'run.{key}' must be a non-empty string"
    if run["shots"] is not None and not isinstance(run["shots"], int):
        return "corrupt: 'run.shots' must be an integer"
    evals = data.get("evals")
    if not isinstance(evals, list) or not evals:
        return "corrupt: missing or empty 'evals'"
    for i, ev in enumerate(evals):
        if not isinstance(ev, dict):
            return f"corrupt: evals[{i}] is not an object"
        for key in ("dataset", "split", "accuracy"):
            if key not in ev:
                return f"corrupt: missing key 'evals[{i}].{key}'"
        if not _is_number(ev["accuracy"]) or math.isnan(ev["accuracy"]):
            return f"corrupt: 'evals[{i}].accuracy' is not a number"
        strict = ev.get("accuracy_strict")
        if strict is not None and not _is_number(strict):
            return f"corrupt: 'evals[{i}].accuracy_strict' is not a number"
    train = data.get("train")
    if train is not None and not isinstance(train, dict):
        return "corrupt: 'train' must be an object or null"
    if isinstance(train, dict) and train.get("curve") is not None and not isinstance(train["curve"], list):
        return "corrupt: 'train.curve' must be a list"
    # the eval the tables need for this setting
    own = {(ev["dataset"], ev["split"]) for ev in evals}
    needed = ("base", "new") if run["setting"] == "base2new" else ("test",)
    for split in needed:
        if (run["dataset"], split) not in own:
            return f"no '{split}' eval on its own dataset {run['dataset']!r}"
    return None


def load_record(path: str | Path) -> Record | Skipped:
    """Parse and validate one file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        mtime = os.stat(path).st_mtime
    except OSError as exc:
        return Skipped(str(path), f"unreadable: {exc.strerror or exc}")
    try:
        data = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return Skipped(str(path), f"corrupt: unparseable JSON ({getattr(exc, 'msg', None) or exc})")
    reason = _validate(data)
    if reason is not None:
        return Skipped(str(path), reason)
    return Record(
        path=str(path),
        mtime=mtime,
        run=dict(data["run"]),
        evals=[dict(ev) for ev in data["evals"]],
        train=data.get("train"),
        identity_hash=data.get("identity_hash"),
        raw=data,
    )


def load_records(roots: list[str | Path]) -> tuple[list[Record], list[Skipped]]:
    """Load every record under the roots; returns (complete unique records, skipped with reasons)."""
    records: list[Record] = []
    skipped: list[Skipped] = []
    for path in find_result_files(roots):
        loaded = load_record(path)
        (skipped if isinstance(loaded, Skipped) else records).append(loaded)
    # newest first (mtime, then path for a deterministic tie-break): the first of each key is kept
    records.sort(key=lambda r: (-r.mtime, r.path))
    kept: dict[tuple, Record] = {}
    for rec in records:
        if rec.key in kept:
            skipped.append(Skipped(rec.path, f"duplicate of {kept[rec.key].path}"))
        else:
            kept[rec.key] = rec
    skipped.sort(key=lambda s: s.path)
    return sorted(kept.values(), key=lambda r: r.path), skipped
