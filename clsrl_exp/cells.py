"""What a cell asks for, and how much of it its run directory already holds.

A cell = one trained (or zero-shot) model, identified by its training hash, plus the evaluations it asks for: every
dataset of `eval.datasets` x the setting's splits x the prompt variant `eval.prompt`, each with its own hash
(`clsrl_exp.identity`). Used by the cell itself (`clsrl_exp.run`) and by the sweep listing, before any data is read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from clsrl_exp.config import DatasetConfig, RunConfig, dataset_config, method_config
from clsrl_exp.grids import dataset_list
from clsrl_exp.identity import eval_hash, eval_identity, train_hash
from clsrl_exp.prompts import PROMPT_VARIANTS, PromptSpec, eval_prompt
from clsrl_exp.schema import Record, read_record

SETTING_SPLITS = {"fewshot": ("test",), "base2new": ("base", "new"), "open": ("test",)}


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation a cell asks for, known before any data is read."""

    dataset: DatasetConfig
    split: str
    variant: str
    prompt: PromptSpec
    eval_hash: str
    identity: dict


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


def prompt_variant(run: RunConfig) -> str:
    """`eval.prompt` as recorded: the run's own method name is its default prompt (`eval`)."""
    return "eval" if run.eval.prompt == run.method.name else run.eval.prompt


def requested_evals(run: RunConfig, thash: str) -> list[EvalSpec]:
    """Every evaluation this cell asks for, with its identity and hash. The identity holds the whole prompt
    (template, system turn, image position, prefill), so each prompt variant is an evaluation of its own."""
    variant = prompt_variant(run)
    other = method_config(variant) if variant not in PROMPT_VARIANTS else None  # cross-prompt
    out = []
    for name in dict.fromkeys(eval_dataset_names(run)):
        ds = run.dataset if name == run.dataset.name else dataset_config(name)
        for split in eval_splits(run.setting.name):
            prompt = eval_prompt(run.method, split, variant, setting=run.setting.name, other=other,
                                 empty_think=run.eval.empty_think)
            ident = eval_identity(thash, asdict(ds), split, asdict(prompt), asdict(run.setting), run.seed,
                                  asdict(run.eval), asdict(run.data))
            out.append(EvalSpec(ds, split, variant, prompt, eval_hash(ident), ident))
    return out


def missing_evals(record: Record | None, thash: str, wanted: list[EvalSpec]) -> list[EvalSpec]:
    """The requested evaluations the record does not hold (all of them if the record is of another model)."""
    if record is None or record.identity_hash != thash:
        return list(wanted)
    have = record.eval_hashes()
    return [e for e in wanted if e.eval_hash not in have]


def cell_state(run: RunConfig, container: dict) -> tuple[str, Record | None, list[EvalSpec]]:
    """(state, record, missing evaluations); state is `complete` (nothing to do), `evaluate` (trained, evaluations
    missing), or the record's status / `pending` when training (or the whole cell) is still to run."""
    thash = train_hash(container)
    record = read_record(Path(run.run_dir))
    missing = missing_evals(record, thash, requested_evals(run, thash))
    if record is None or record.identity_hash != thash:
        return "pending", record, missing
    trained = run.train.kind == "none" or record.train is not None
    if record.status == "complete" and trained:
        return ("evaluate" if missing else "complete"), record, missing
    return record.status, record, missing
