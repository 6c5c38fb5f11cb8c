"""Find, load and validate `result.json` records (`clsrl_exp.schema`); nothing is dropped silently.

A record that cannot be used (unparseable, wrong schema, incomplete, missing required keys, no eval of its own
dataset for its setting, or an older duplicate of another record) becomes a `Skipped(path, reason)` that the
report lists. Duplicates share (model, method, dataset, setting, shots, seed, prompt); the newest file (mtime) wins.

Prompt variants never mix: a record whose evaluations used several prompts (`eval.prompt`: the method's eval
template `eval`, its training template `train`, another method's eval prompt `<method>`, `empty-think`) becomes one
`Record` per variant. The default variant keeps the
method's name; any other is labelled `<method> [<variant>]` in `run["method"]` (the plain name stays in
`run["base_method"]`, the variant in `run["prompt"]`), so every table keeps it in rows of its own and only the
default is compared with the paper's numbers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clsrl_exp.errors import UserError
from clsrl_exp.schema import RESULT_FILE, SETTING_SPLITS, validate

DEFAULT_PROMPT = "eval"  # the method's own eval template: the paper's rows


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

    @property
    def prompt(self) -> str:
        return self.run.get("prompt", DEFAULT_PROMPT)

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
            found.update(p.resolve() for p in root.rglob(RESULT_FILE) if p.is_file())
    return sorted(found)


def method_label(method: str, prompt: str) -> str:
    """The name a (method, prompt variant) pair has in the tables.

    >>> method_label("clsrl", "eval"), method_label("clsrl", "nothink")
    ('clsrl', 'clsrl [nothink]')
    """
    return method if prompt == DEFAULT_PROMPT else f"{method} [{prompt}]"


def _validate(data: Any) -> str | None:
    """The reason this parsed record is unusable, or None when it is fine."""
    reason = validate(data)
    if reason is not None:
        return reason
    run, evals = data["run"], data["evals"]
    own = {(ev["dataset"], ev["split"]) for ev in evals}
    needed = SETTING_SPLITS.get(run["setting"], ("test",))
    for split in needed:
        if (run["dataset"], split) not in own:
            return f"no '{split}' eval on its own dataset {run['dataset']!r}"
    return None


def variant_views(rec: Record) -> list[Record]:
    """One record per prompt variant of its evaluations (see the module docstring)."""
    variants = list(dict.fromkeys(ev.get("prompt_variant", DEFAULT_PROMPT) for ev in rec.evals))
    out = []
    for v in variants:
        run = {**rec.run, "base_method": rec.run["method"], "prompt": v, "method": method_label(rec.run["method"], v)}
        evals = [ev for ev in rec.evals if ev.get("prompt_variant", DEFAULT_PROMPT) == v]
        out.append(Record(rec.path, rec.mtime, run, evals, rec.train, rec.identity_hash, rec.raw))
    return out


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
        if isinstance(loaded, Skipped):
            skipped.append(loaded)
            continue
        records.extend(variant_views(loaded))
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
