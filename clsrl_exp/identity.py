"""Run identity: which parts of a resolved config define a trained model and each evaluation of it.

Two identities, so a checkpoint is trained once however many times it is evaluated:

- the **training identity** (`train_identity`): model, method (minus its evaluation templates), dataset, setting,
  shots, seed and the training settings (rollout included for GRPO). It names the run directory
  `<setting>/<dataset>/<method>/<model>/k<shots>-s<seed>-<hash>` under `paths.runs` (readable, no timestamps), so a
  sweep finds finished cells and every rank of a multi-GPU job agrees on the directory;
- an **evaluation identity** per (dataset, split, prompt) (`eval_identity`): the training hash + the evaluated
  dataset's config, the prompt it is asked with and the evaluation settings. A cell is complete when its record
  holds an entry for every evaluation it asks for; asking for more (free-lunch datasets, another prompt variant)
  evaluates only those.

Where outputs and data live (`paths`, `data.root`, `dataset.path`), how runs are logged, and speed-only knobs
(`eval.batch_size`, `train.image_cache`) are never identity. What the data is, is: each evaluation's identity holds
its dataset's fingerprint (`clsrl_exp.data.fingerprint`) and the training data's; the training data's fingerprint
cannot name the run directory (the path is derived when the config is composed, before any data is read), so it is
stored with the training and checked when the cell runs (`clsrl_exp.cells`). Pure functions over plain containers;
no import from a higher layer.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from clsrl_exp.fileio import spec_hash
from clsrl_exp.plugins import file_of

# top-level keys that never change what is trained
NON_TRAINING = ("hydra", "paths", "logger", "data", "eval", "run_dir", "sweep_name", "wait_for_lock")
# dataset keys that say where the data is, not what it is
DATASET_LOCATION = ("path",)
# training settings that change speed and memory only: the image cache feeds the model bit-identical inputs
# (tests/test_imagecache.py), so turning it on or off keeps the run directory
SPEED_ONLY_TRAIN = ("image_cache", "image_cache_mb")
# evaluation settings that change predictions (eval.batch_size, eval.datasets and the curve settings do not)
EVAL_KEYS = ("backend", "max_new_tokens", "greedy", "limit")
# dataset keys used by one setting only: left out of both identities elsewhere, so the other settings' hashes do
# not depend on them (a dataset gaining an open-set question keeps its few-shot and base-to-new runs)
SETTING_ONLY_DATASET_KEYS = {"open_question": "open"}


def _dataset_for(dataset: dict, setting: str | None) -> dict:
    """The dataset config without the keys that do not apply to `setting`.

    >>> _dataset_for({"name": "f", "open_question": "Flower?"}, "fewshot"), _dataset_for({"name": "f"}, "open")
    ({'name': 'f'}, {'name': 'f'})
    >>> _dataset_for({"name": "f", "open_question": "Flower?"}, "open")
    {'name': 'f', 'open_question': 'Flower?'}
    """
    only = SETTING_ONLY_DATASET_KEYS
    return {k: v for k, v in dataset.items() if k not in only or (only[k] == setting and v is not None)}


def _file_sha(path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return None


def train_identity(container: dict) -> dict:
    """The part of a resolved config that defines the trained model (what a sweep compares to skip training).

    Zero-shot (`train.kind: none`) drops shots, training and rollout settings: k1 and k16 zero-shot cells are the
    same model. A reward loaded from a user file adds that file's content hash, so editing it retrains.
    """
    ident = json.loads(json.dumps({k: v for k, v in container.items() if k not in NON_TRAINING}, default=str))
    if isinstance(ident.get("dataset"), dict):
        ident["dataset"] = _dataset_for(ident["dataset"], (ident.get("setting") or {}).get("name"))
    method = ident.get("method")
    if isinstance(method, dict):
        method.pop("eval_templates", None)
        files = {r["name"]: _file_sha(f) for r in method.get("rewards") or []
                 if isinstance(r, dict) and (f := file_of(str(r.get("name", ""))))}
        if files:
            ident["reward_files"] = files
    if isinstance(ident.get("dataset"), dict):
        for key in DATASET_LOCATION:
            ident["dataset"].pop(key, None)
    for key in SPEED_ONLY_TRAIN:
        (ident.get("train") or {}).pop(key, None)
    kind = (ident.get("train") or {}).get("kind")
    if kind == "none":
        for key in ("train", "shots", "rollout"):
            ident.pop(key, None)
    elif kind == "sft":
        ident.pop("rollout", None)
    return ident


def train_hash(container: dict) -> str:
    return spec_hash(train_identity(container))


def run_relpath(container: dict) -> str:
    """`<setting>/<dataset>/<method>/<model>/k<shots>-s<seed>-<hash>`: readable, unique per training identity."""
    c = container
    return (f"{c['setting']['name']}/{c['dataset']['name']}/{c['method']['name']}/{c['model']['name']}/"
            f"k{c['shots']}-s{c['seed']}-{train_hash(c)}")


def eval_identity(train_hash_: str, dataset: dict, split: str, prompt: dict, setting: dict, seed: int,
                  eval_settings: dict, data: dict, fingerprint: str | None = None,
                  trained_on: str | None = None) -> dict:
    """What one evaluation's predictions depend on: the model (its training hash and the fingerprint of the data it
    was trained on), the evaluated dataset's config (not its location) and content (`fingerprint`), the split, the
    exact prompt (template, system turn, image position, any prefill), the option-list protocol (setting, seed,
    whether validation images count as test) and the generation settings. The setting's `reward_kwargs` shape
    training only (the model hash holds them)."""
    ds = {k: v for k, v in _dataset_for(copy.deepcopy(dataset), setting.get("name")).items()
          if k not in ("epochs", *DATASET_LOCATION)}
    setting = {k: v for k, v in setting.items() if k != "reward_kwargs"}
    ident = {"model": train_hash_, "dataset": ds, "split": split, "prompt": prompt, "setting": setting,
             "seed": seed, "generation": {k: eval_settings.get(k) for k in EVAL_KEYS},
             "include_val_in_test": data.get("include_val_in_test", False)}
    if fingerprint is not None:
        ident["data"] = fingerprint
    if trained_on is not None:
        ident["trained_on"] = trained_on
    return ident


def eval_hash(identity: dict[str, Any]) -> str:
    return spec_hash(identity)
