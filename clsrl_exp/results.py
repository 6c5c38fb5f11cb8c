"""Result records (`result.json`, schema 1): built from a run, written atomically, read back to skip finished cells.

```
{"schema": 1, "status": "complete",
 "run": {"method", "model", "dataset", "setting", "shots", "seed"},
 "evals": [{"dataset", "split", "n", "correct", "skipped", "accuracy", "accuracy_strict", ...}],
 "train": {"wall_s", "steps", "mean_completion_tokens", "curve": [...]} | null,
 "identity_hash": "...", "identity": {...}, ...}
```
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SCHEMA = 1
RESULT = "result.json"


def atomic_write_json(path: Path, obj: dict) -> None:
    """Write to a temp file in the same directory, fsync, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=1, ensure_ascii=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(run_dir: Path) -> dict | None:
    """The record in `run_dir`, or None if absent or unreadable."""
    path = Path(run_dir) / RESULT
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_complete(run_dir: Path, identity_hash: str) -> bool:
    """A cell is done when its record is complete and was produced by the same config identity."""
    rec = read_record(run_dir)
    return bool(rec) and rec.get("status") == "complete" and rec.get("identity_hash") == identity_hash


def run_block(container: dict) -> dict:
    return {"method": container["method"]["name"], "model": container["model"]["name"],
            "dataset": container["dataset"]["name"], "setting": container["setting"]["name"],
            "shots": container["shots"], "seed": container["seed"]}


def make_record(container: dict, *, status: str, evals: list[dict], train: dict | None, identity: dict,
                identity_hash: str, run_dir: str, extra: dict | None = None) -> dict:
    rec = {"schema": SCHEMA, "status": status, "run": run_block(container), "evals": evals, "train": train,
           "identity_hash": identity_hash, "run_dir": str(run_dir), "identity": identity}
    rec.update(extra or {})
    return rec
