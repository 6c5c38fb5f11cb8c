"""The result record (`result.json`) and the files of a run directory, defined once (standard library only).

Every writer (the cell, a failed or interrupted cell, the sweep) and every reader (skip checks, the sweep listing,
the report, the learning benchmark) imports this module; the report stays free of torch.

```
<run_dir>/result.json        Record (schema 2), written atomically
<run_dir>/predictions.jsonl  one line per scored item (append-only), keyed by (eval_hash, id); with the options
                             it was shown and the reply's prefilled start (`prefill`, empty-think) if any
<run_dir>/train.json         TrainSummary of the finished training
<run_dir>/checkpoint/        the trained model + processor
<run_dir>/trainer/           resumable checkpoints, wall clock, log_history.jsonl (every logged step)
<run_dir>/error.txt          the traceback of the last failure
<run_dir>/stale/<fp>/        work set aside because the data it used changed (`fp` = that data's fingerprint)
```

A run directory belongs to one *training* identity (`identity_hash`); each evaluation of its model carries its own
`eval_hash`, so evaluating the same checkpoint on more datasets or prompt variants appends entries to `evals`
instead of training again. What the data was is recorded too: `data` (dataset name -> fingerprint), the training
data's fingerprint in `train.data_fingerprint` and each evaluation's in its `identity["data"]`. Schema 1 records
(one identity for training and evaluation) are still read.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clsrl_exp.fileio import atomic_write_json, read_json

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)

RESULT_FILE = "result.json"
PREDICTIONS_FILE = "predictions.jsonl"
TRAIN_FILE = "train.json"
ERROR_FILE = "error.txt"
CHECKPOINT_DIR = "checkpoint"
TRAINER_DIR = "trainer"
LOG_HISTORY_FILE = "log_history.jsonl"  # under TRAINER_DIR

STATUSES = ("running", "complete", "failed", "interrupted")
# the evaluation splits each setting's record holds on its own dataset (base-to-new: two label spaces)
SETTING_SPLITS = {"fewshot": ("test",), "base2new": ("base", "new"), "open": ("test",)}
RUN_KEYS = ("method", "model", "dataset", "setting", "shots", "seed")


@dataclass
class RunInfo:
    """What a cell is, in the words of the tables."""

    method: str
    model: str
    dataset: str
    setting: str
    shots: int | None
    seed: int


@dataclass
class EvalEntry:
    """One evaluation of the run's model: one dataset, one split, one prompt variant."""

    dataset: str
    split: str  # test (few-shot, open) | base | new (base-to-new)
    prompt_variant: str  # eval (the method's eval template) | train | <method name> | empty-think ...
    n: int  # items scored
    correct: int  # lenient (the paper's rule)
    correct_strict: int
    skipped: int  # missing or unreadable images (never scored as wrong)
    accuracy: float  # percent, lenient
    accuracy_strict: float
    eval_hash: str | None = None  # identity of this evaluation (model identity + dataset, split, variant, settings)
    backend: str | None = None  # generation backend that produced the predictions
    skipped_examples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    mean_output_tokens: float = 0.0
    identity: dict[str, Any] = field(default_factory=dict)  # what eval_hash was computed from
    classes: list[str] = field(default_factory=list)  # open-set: the label space the answers are free over (each
    # prediction line carries the options it was shown instead, so closed-set entries leave this empty)


@dataclass
class TrainSummary:
    kind: str  # grpo | sft
    steps: int
    wall_s: float
    examples: int
    mean_completion_tokens: float | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)  # held-out accuracy during training
    final_log: dict[str, float] = field(default_factory=dict)  # the last logged step's metrics
    log_history: str | None = None  # relative path of the full history (every logged step)
    data_fingerprint: str | None = None  # what the training data was (clsrl_exp.data.fingerprint)


@dataclass
class Record:
    status: str
    run: RunInfo
    identity_hash: str  # the training identity (= the run directory's hash)
    run_dir: str
    evals: list[EvalEntry] = field(default_factory=list)
    train: TrainSummary | None = None
    identity: dict[str, Any] = field(default_factory=dict)  # what identity_hash was computed from
    error: str | None = None
    model_path: str | None = None
    rollout: str | None = None
    data: dict[str, str] = field(default_factory=dict)  # dataset name -> fingerprint of the data its work used
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def eval_hashes(self) -> set[str]:
        return {e.eval_hash for e in self.evals if e.eval_hash}


def make_eval(dataset: str, split: str, variant: str, *, n: int, correct: int, correct_strict: int, skipped: int,
              **kw: Any) -> EvalEntry:
    """An `EvalEntry` with its accuracies computed from the counts (percent, 2 decimals; 0 when nothing scored).

    >>> e = make_eval("dtd", "test", "eval", n=3, correct=2, correct_strict=1, skipped=0)
    >>> e.accuracy, e.accuracy_strict
    (66.67, 33.33)
    """
    acc = lambda c: round(100.0 * c / n, 2) if n else 0.0
    return EvalEntry(dataset, split, variant, n, correct, correct_strict, skipped, acc(correct),
                     acc(correct_strict), **kw)


# ----------------------------------------------------------------------------------------------------- reading
def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate(data: Any, *, need_complete: bool = True) -> str | None:
    """Why this parsed record cannot be used by the tables, or None when it can.

    >>> validate({"schema": 9})
    'wrong schema: expected one of (1, 2), got 9'
    >>> validate({"schema": 2, "status": "running"})
    "incomplete: status='running'"
    """
    if not isinstance(data, dict):
        return "corrupt: not a JSON object"
    if data.get("schema") not in READABLE_VERSIONS:
        return f"wrong schema: expected one of {READABLE_VERSIONS}, got {data.get('schema')!r}"
    if need_complete and data.get("status") != "complete":
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
    if not isinstance(evals, list) or (need_complete and not evals):
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
    return None


def from_dict(data: dict[str, Any]) -> Record:
    """A `Record` from a parsed file (schema 1 or 2); raises ValueError naming the problem."""
    reason = validate(data, need_complete=False)
    if reason:
        raise ValueError(reason)
    evals = []
    for ev in data["evals"]:
        known = {k: v for k, v in ev.items() if k in EvalEntry.__dataclass_fields__}
        known.setdefault("prompt_variant", "eval")
        for key in ("n", "correct", "correct_strict", "skipped"):
            known.setdefault(key, 0)
        known.setdefault("accuracy_strict", known["accuracy"])
        evals.append(EvalEntry(**known))
    train = data.get("train")
    if isinstance(train, dict):
        train = TrainSummary(**{k: v for k, v in train.items() if k in TrainSummary.__dataclass_fields__})
    fields = {k: v for k, v in data.items() if k in Record.__dataclass_fields__ and k not in ("run", "evals", "train")}
    fields.setdefault("identity_hash", "")
    fields.setdefault("run_dir", "")
    return Record(run=RunInfo(**{k: data["run"][k] for k in RUN_KEYS}), evals=evals, train=train, **fields)


def read_raw(run_dir: str | Path) -> dict[str, Any] | None:
    """The parsed `result.json` of a run directory, or None if absent or unreadable."""
    data = read_json(Path(run_dir) / RESULT_FILE)
    return data if isinstance(data, dict) else None


def read_record(run_dir: str | Path) -> Record | None:
    """The run directory's record, or None if absent, unreadable or malformed."""
    data = read_raw(run_dir)
    try:
        return from_dict(data) if data is not None else None
    except (ValueError, TypeError):
        return None


def write_record(run_dir: str | Path, record: Record) -> Path:
    return atomic_write_json(Path(run_dir) / RESULT_FILE, record.to_dict())


def mark(run_dir: str | Path, status: str, error: str | None = None) -> dict[str, Any]:
    """Set the status (and error) of an existing record without touching anything else; a minimal record when the
    cell stopped before writing one. Returns the written dict."""
    assert status in STATUSES, status
    data = read_raw(run_dir) or {"schema": SCHEMA_VERSION, "run_dir": str(run_dir), "evals": []}
    data.update(status=status, error=error)
    atomic_write_json(Path(run_dir) / RESULT_FILE, data)
    return data
