"""What a cell asks for, and how much of it its run directory already holds.

A cell = one trained (or zero-shot) model, identified by its training hash, plus the evaluations it asks for: every
dataset of `eval.datasets` x the setting's splits x the prompt variant `eval.prompt`, each with its own hash
(`clsrl_exp.identity`). Used by the cell itself (`clsrl_exp.run`) and by the sweep listing.

What the data is belongs to both identities: each evaluation's hash includes its dataset's fingerprint, and the
training's fingerprint is stored with it (`train.data_fingerprint`; the record's `data` while training runs). So a
check reads every split definition the cell uses (`clsrl_exp.data.data_fingerprints`): a moved dataset with the
same content still skips, a changed one re-evaluates (and retrains, if it is the training data), and a missing one
is a `DataError` before anything is touched. Work done on data that has changed is set aside under
`<run_dir>/stale/<its fingerprint>/`, never deleted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clsrl_exp.config import DatasetConfig, RunConfig, dataset_config, method_config
from clsrl_exp.fileio import atomic_write_json, file_lock, read_json
from clsrl_exp.grids import dataset_list
from clsrl_exp.identity import eval_hash, eval_identity, train_hash
from clsrl_exp.prompts import PROMPT_VARIANTS, PromptSpec, eval_prompt
from clsrl_exp.schema import (
    CHECKPOINT_DIR,
    ERROR_FILE,
    PREDICTIONS_FILE,
    RESULT_FILE,
    SETTING_SPLITS,
    TRAIN_FILE,
    TRAINER_DIR,
    EvalEntry,
    Record,
    read_record,
)

log = logging.getLogger(__name__)
STALE_DIR = "stale"
TRAINING_FILES = (CHECKPOINT_DIR, TRAINER_DIR, TRAIN_FILE, PREDICTIONS_FILE, ERROR_FILE, RESULT_FILE)


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation a cell asks for, with its identity (dataset content included) and hash."""

    dataset: DatasetConfig
    split: str
    variant: str
    prompt: PromptSpec
    eval_hash: str
    identity: dict


@dataclass
class CellState:
    """`state`: `complete` (nothing to do), `evaluate` (trained, evaluations missing), `retrain` (the training data
    changed since the model was trained), or the record's status / `pending` when training (or the whole cell) is
    still to run."""

    state: str
    record: Record | None
    missing: list[EvalSpec]
    fingerprints: dict[str, str] = field(default_factory=dict)  # dataset name -> fingerprint, for every dataset read
    stale_training: str | None = None  # with `retrain`: the fingerprint the existing training used


def eval_splits(setting: str) -> tuple[str, ...]:
    """The evaluation splits of a setting: few-shot and open-set `test`; base-to-new `base` and `new` (separate
    label spaces)."""
    return SETTING_SPLITS[setting]


def eval_dataset_names(run: RunConfig) -> list[str]:
    """`eval.datasets`: null = the run's own dataset, `all` = `eval.all_datasets` (a dataset list of
    `clsrl_exp.grids`, e.g. `paper`, or an explicit list), a name, or a list."""
    d = run.eval.datasets
    if d is None:
        return [run.dataset.name]
    if d == "all":
        every = run.eval.all_datasets
        return dataset_list(every) if isinstance(every, str) else list(every)
    if isinstance(d, str):
        return [d]
    return list(d)


def cell_datasets(run: RunConfig) -> dict[str, DatasetConfig]:
    """Every dataset the cell reads: its training dataset (unless zero-shot), then each evaluated one."""
    out = {run.dataset.name: run.dataset} if run.train.kind != "none" else {}
    for name in eval_dataset_names(run):
        out.setdefault(name, run.dataset if name == run.dataset.name else dataset_config(name))
    return out


def prompt_variant(run: RunConfig) -> str:
    """`eval.prompt` as recorded: the run's own method name is its default prompt (`eval`)."""
    return "eval" if run.eval.prompt == run.method.name else run.eval.prompt


def requested_evals(run: RunConfig, thash: str, fingerprints: dict[str, str] | None = None) -> list[EvalSpec]:
    """Every evaluation this cell asks for, with its identity and hash. The identity holds the whole prompt
    (template, system turn, image position, prefill), so each prompt variant is an evaluation of its own, and the
    data fingerprints when given (the cell always gives them): the evaluated dataset's and the training dataset's (a
    model trained on other data is another model, whatever the training hash says)."""
    variant = prompt_variant(run)
    other = method_config(variant) if variant not in PROMPT_VARIANTS else None  # cross-prompt
    fps = fingerprints or {}
    trained_on = fps.get(run.dataset.name) if run.train.kind != "none" else None
    out = []
    for name in dict.fromkeys(eval_dataset_names(run)):
        ds = run.dataset if name == run.dataset.name else dataset_config(name)
        for split in eval_splits(run.setting.name):
            prompt = eval_prompt(run.method, split, variant, setting=run.setting.name, other=other,
                                 empty_think=run.eval.empty_think)
            ident = eval_identity(thash, asdict(ds), split, asdict(prompt), asdict(run.setting), run.seed,
                                  asdict(run.eval), asdict(run.data), fps.get(name), trained_on)
            out.append(EvalSpec(ds, split, variant, prompt, eval_hash(ident), ident))
    return out


def missing_evals(record: Record | None, thash: str, wanted: list[EvalSpec]) -> list[EvalSpec]:
    """The requested evaluations the record does not hold (all of them if the record is of another model)."""
    if record is None or record.identity_hash != thash:
        return list(wanted)
    have = record.eval_hashes()
    return [e for e in wanted if e.eval_hash not in have]


def training_fingerprint(record: Record | None, dataset: str) -> str | None:
    """The fingerprint of the data the record's training used: the finished training's, else the one recorded when
    the (interrupted) training started; None for records older than data fingerprints."""
    if record is None:
        return None
    return (record.train.data_fingerprint if record.train else None) or record.data.get(dataset)


def cell_state(run: RunConfig, container: dict, *, listing: bool = False) -> CellState:
    """How much of the cell is done. Reads the split definition of every dataset the cell uses (a `DataError` if
    one is missing), except for `listing` a cell without a record of its own (pending whatever the data is)."""
    from clsrl_exp.data import data_fingerprints

    thash = train_hash(container)
    record = read_record(Path(run.run_dir))
    ours = record is not None and record.identity_hash == thash
    if listing and not ours:
        return CellState("pending", record, [])
    fps = data_fingerprints(run, cell_datasets(run))
    wanted = requested_evals(run, thash, fps)
    if not ours:
        return CellState("pending", record, wanted, fps)
    if run.train.kind != "none":
        used = training_fingerprint(record, run.dataset.name)
        if used is not None and used != fps[run.dataset.name]:
            return CellState("retrain", record, wanted, fps, stale_training=used)
    missing = missing_evals(record, thash, wanted)
    trained = run.train.kind == "none" or record.train is not None
    if record.status == "complete" and trained:
        return CellState("evaluate" if missing else "complete", record, missing, fps)
    return CellState(record.status, record, missing, fps)


# ----------------------------------------------------------------------------------------------------- stale work
def _stale_dir(run_dir: Path, fingerprint: str | None) -> Path:
    name = fingerprint[:12] if fingerprint else "no-fingerprint"
    dest, n = run_dir / STALE_DIR / name, 1
    while dest.exists():
        n += 1
        dest = run_dir / STALE_DIR / f"{name}-{n}"
    return dest


def set_aside_training(run_dir: Path, dataset: str, used: str) -> Path | None:
    """Move a training done on data that has changed (checkpoint, trainer state, predictions, record) to
    `<run_dir>/stale/<fingerprint>/`. Every rank may call it: under a lock, only the first finds the stale record
    and moves it; returns the folder, or None when there was nothing (left) to move."""
    with file_lock(run_dir / ".stale.lock"):
        if training_fingerprint(read_record(run_dir), dataset) != used:
            return None
        dest = _stale_dir(run_dir, used)
        dest.mkdir(parents=True)
        for name in TRAINING_FILES:
            if (run_dir / name).exists():
                os.replace(run_dir / name, dest / name)
    return dest


def set_aside_evals(run_dir: Path, record: Record, fingerprints: dict[str, str]) -> list[EvalEntry]:
    """The record's evaluations that are still current; entries of a dataset in `fingerprints` evaluated on other
    data (or before fingerprints existed) are appended to `<run_dir>/stale/<their fingerprint>/evals.json` (their
    predictions stay in predictions.jsonl under their own eval hash)."""
    keep, stale = [], {}
    for e in record.evals:
        used = (e.identity or {}).get("data")
        if e.dataset in fingerprints and used != fingerprints[e.dataset]:
            stale.setdefault(used, []).append(e)
        else:
            keep.append(e)
    for used, entries in stale.items():
        name = used[:12] if used else "no-fingerprint"
        path = run_dir / STALE_DIR / name / "evals.json"
        old = read_json(path)
        atomic_write_json(path, (old if isinstance(old, list) else []) + [asdict(e) for e in entries])
        names = sorted({e.dataset for e in entries})
        log.warning("data of %s changed since it was evaluated (fingerprint %s): %d evaluation(s) set aside in %s; "
                    "evaluating again", ", ".join(names), name, len(entries), path.parent)
    return keep
