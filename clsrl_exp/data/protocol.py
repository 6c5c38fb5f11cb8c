"""The evaluation protocol on top of a loaded split: K-shot subsets, base/new halves, option lists, frozen eval sets.

Caches (small JSON, relative image paths, written atomically) under `run.data.cache_dir`:
- `<cache>/<dataset>/fewshot/shot_<K>-seed_<S>.json`: the K-shot training subset (shared by every setting, as in
  CoOp where base-to-new filters the same `shot_K-seed_S` subset); invalidated when the split's sha256 changes.
- `<cache>/<dataset>/<setting>/seed_<S>/eval_<split>.json`: every test item with its frozen option list, so
  zero-shot, SFT and RL runs are scored on identical prompts (open-set: no option list, the same test items).
- `<cache>/<dataset>/images/<sha256>.<ext>`: images stored inside the authors' data files, extracted once.

Splits that arrive frozen (the authors' files, `Splits.frozen`) skip sampling and option drawing: their training rows
and test rows are used as they are, each with its verbatim problem text and its label as written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clsrl_exp.config import DatasetConfig, RunConfig
from clsrl_exp.data.fingerprint import dataset_fingerprint, listing_key, remember
from clsrl_exp.data.formats import Item, Splits, load_splits, root_path
from clsrl_exp.data.images import image_is_readable, image_suffix
from clsrl_exp.data.synthetic import ensure_synthetic
from clsrl_exp.errors import ConfigError, DataError
from clsrl_exp.fileio import atomic_write_bytes, read_sealed_json, write_sealed_json
from clsrl_exp.plan import base_count
from clsrl_exp.prompts import option_count, option_list

log = logging.getLogger(__name__)

FEWSHOT_VERSION = 2  # 2: sealed with a checksum of the content
EVAL_VERSION = 2


@dataclass(frozen=True)
class Example:
    id: str  # stable item id: the image path relative to the dataset's image root (as in the split file)
    image_path: str  # absolute path
    label: str  # display class name (the answer string the rewards compare against)
    options: tuple[str, ...]  # display names shown in the prompt
    split: str  # "train" | "test" | "base" | "new"
    problem: str | None = None  # verbatim problem text (the authors' files); None = question + options


@dataclass
class EvalSet:
    dataset: str  # dataset config name
    split: str  # "test" (fewshot, open) | "base" | "new" (base2new)
    question: str
    examples: list[Example]
    missing: list[str] = field(default_factory=list)  # ids in the split whose image file does not exist
    classes: list[str] = field(default_factory=list)  # open-set: the label space the answer is free over (items
    # carry no option list); empty when every item carries its own options


def ensure_dataset(ds: DatasetConfig, root: str | os.PathLike | None) -> None:
    """Generate a synthetic dataset on first use (creating the root if needed); a no-op for real datasets."""
    if ds.synthetic is None:
        return
    ensure_synthetic(ds, root_path(root))


def display_name(raw: str, ds: DatasetConfig) -> str:
    """Rename map first (CoOp NEW_CNAMES), then underscores -> spaces if enabled (CoOp's prompt-time cleanup).

    >>> from clsrl_exp.config import ClassNames
    >>> ds = DatasetConfig(name="x", dataset_dir="x", question="?", classnames=ClassNames(rename={"Faces": "face"}))
    >>> [display_name(n, ds) for n in ("Faces", "car_side", "face")]
    ['face', 'car side', 'face']
    """
    name = ds.classnames.rename.get(raw, raw)
    return name.replace("_", " ") if ds.classnames.underscores_to_spaces else name


def class_halves(num_classes: int, base_split: str) -> tuple[list[int], list[int]]:
    """Base = first floor(C/2) labels (CLS-RL) or ceil(C/2) (CoCoOp `subsample_classes`); new = the rest.

    >>> class_halves(5, "floor"), class_halves(5, "ceil")
    (([0, 1], [2, 3, 4]), ([0, 1, 2], [3, 4]))
    """
    m = base_count(num_classes, base_split)
    return list(range(m)), list(range(m, num_classes))


def sample_fewshot(items: Sequence[Item], shots: int, seed: int, classnames: Sequence[str] = ()) -> list[Item]:
    """K items per label: group by label (items keep split order), then `rng.sample(group, K)` in label order.

    Same per-label `random.sample` as Dassl's `generate_fewshot_dataset`, but with our own string-seeded
    `random.Random(f"fewshot:{seed}")` instead of the global RNG seeded by `set_random_seed`, so subsets are
    reproducible on any machine/process but not bit-identical to CoOp's `shot_K-seed_S.pkl`. Unlike Dassl (which
    keeps all items of a too-small class), a class with fewer than K items is an error.

    >>> items = [Item(f"{c}{i}.jpg", c, str(c)) for c in (0, 1) for i in range(5)]
    >>> [it.path for it in sample_fewshot(items, 2, seed=1)] == [it.path for it in sample_fewshot(items, 2, seed=1)]
    True
    """
    groups: dict[int, list[Item]] = {}
    for it in items:
        groups.setdefault(it.label, []).append(it)
    for label in range(len(classnames)):
        groups.setdefault(label, [])
    rng = random.Random(f"fewshot:{seed}")
    out: list[Item] = []
    for label in sorted(groups):
        group = groups[label]
        if len(group) < shots:
            name = classnames[label] if label < len(classnames) else group[0].classname
            raise DataError(
                f"shots={shots} is larger than the smallest class: class '{name}' (label {label}) has only "
                f"{len(group)} training image(s); use shots<={len(group)}"
            )
        out.extend(rng.sample(group, shots))
    return out


# ----------------------------------------------------------------------------------------------------- caches
def _read_cache(path: Path) -> dict | None:
    """A sealed cache file's content; a truncated or edited one is reported once and rebuilt by the caller."""
    data, why = read_sealed_json(path)
    if why:
        log.warning("cache file %s is rebuilt: %s", path, why)
    return data


def cache_root(run: RunConfig, ds: DatasetConfig) -> Path:
    """`<data.cache_dir>/<dataset>` (falls back to `paths.cache` when data.cache_dir is unset)."""
    base = run.data.cache_dir if run.data.cache_dir not in (None, "", "???") else run.paths.cache
    return Path(base).expanduser() / ds.name


def fewshot_subset(run: RunConfig, ds: DatasetConfig, splits: Splits) -> list[Item]:
    """The cached K-shot subset over all classes for (dataset, run.shots, run.seed)."""
    path = cache_root(run, ds) / "fewshot" / f"shot_{run.shots}-seed_{run.seed}.json"
    key = {"dataset": ds.name, "shots": run.shots, "seed": run.seed, "split_sha256": splits.fingerprint}
    cached = _read_cache(path)
    if cached and cached.get("version") == FEWSHOT_VERSION and all(cached.get(k) == v for k, v in key.items()):
        try:
            return [Item(p, int(lab), c) for p, lab, c in cached["train"]]
        except (KeyError, TypeError, ValueError):
            pass  # unreadable cache: rebuild it below
    subset = sample_fewshot(splits.train, run.shots, run.seed, splits.classnames)
    body = {"version": FEWSHOT_VERSION, **key, "sampler": f"random.Random('fewshot:{run.seed}').sample per label"}
    write_sealed_json(path, {**body, "train": [[it.path, it.label, it.classname] for it in subset]})
    return subset


def label_space(splits: Splits, ds: DatasetConfig, labels: Sequence[int]) -> list[str]:
    """Display names of `labels` in label order; duplicates (ImageNet has a few) are listed once."""
    return list(dict.fromkeys(display_name(splits.classnames[i], ds) for i in labels))


def _space_labels(run: RunConfig, splits: Splits) -> dict[str, list[int]]:
    """Eval split name -> labels in its label space; the first entry also gives the training label space."""
    n = len(splits.classnames)
    if run.setting.name == "base2new":
        base, new = class_halves(n, run.setting.base_split)
        return {"base": base, "new": new}
    return {"test": list(range(n))}  # few-shot and open-set


def _n_options(run: RunConfig, space: Sequence[str]) -> int:
    """Options per prompt; 0 in open-set (no option list: the question alone, official `grpo_open*.py`)."""
    s = run.setting
    if s.name == "open":
        return 0
    return option_count(len(space), s.option_fraction, s.option_all_below, s.option_cap)


def _options(space: Sequence[str], label: str, n: int, seed: int, example_id: str) -> list[str]:
    return option_list(space, label, n, seed=seed, example_id=example_id) if n else []


# ----------------------------------------------------------------------------------------------------- public
def examples_from_items(items: Sequence[Item], splits: Splits, ds: DatasetConfig, run: RunConfig, labels: Sequence[int],
                        seed: int, split: str = "train", check_images: bool = True) -> list[Example]:
    """Examples for `items` with per-example option lists over the label space of `labels`, seeded by (seed, id);
    with `check_images` every image must exist and open (training stops on the first that does not)."""
    space = label_space(splits, ds, labels)
    n = _n_options(run, space)
    out = []
    for it in items:
        path = splits.image_root / it.path
        if check_images and not image_is_readable(path):
            raise DataError(f"training image missing or unreadable: {path}")
        label = display_name(it.classname, ds)
        opts = _options(space, label, n, seed, it.path)
        out.append(Example(it.path, str(path), label, tuple(opts), split))
    return out


def train_examples(run: RunConfig, ds: DatasetConfig, splits: Splits | None = None) -> list[Example]:
    """K-shot training examples (base classes only in base2new), options drawn on the fly from their label space.
    Pass `splits` when the caller already loaded them (a run reads each dataset once)."""
    if splits is None:
        ensure_dataset(ds, run.data.root)
        splits = load_splits(ds, run.data.root)
    if splits.frozen is not None:
        return _frozen_train(run, ds, splits)
    subset = fewshot_subset(run, ds, splits)
    labels = next(iter(_space_labels(run, splits).values()))  # all classes, or the base half
    keep = set(labels)
    subset = [it for it in subset if it.label in keep]  # sample over all classes first, then filter (CoOp order)
    return examples_from_items(subset, splits, ds, run, labels, run.seed)


def _eval_key(run: RunConfig, ds: DatasetConfig, split: str, splits: Splits) -> dict:
    s = run.setting
    return {
        "dataset": ds.name, "setting": s.name, "split": split, "seed": run.seed,
        "base_split": s.base_split if s.name == "base2new" else None, "option_fraction": s.option_fraction,
        "option_all_below": s.option_all_below, "option_cap": s.option_cap,
        "include_val_in_test": run.data.include_val_in_test, "split_sha256": splits.fingerprint,
    }  # fmt: skip


def _frozen_items(run: RunConfig, ds: DatasetConfig, splits: Splits, split: str, labels: list[int]) -> list[dict]:
    path = cache_root(run, ds) / run.setting.name / f"seed_{run.seed}" / f"eval_{split}.json"
    key = _eval_key(run, ds, split, splits)
    cached = _read_cache(path)
    if cached and cached.get("version") == EVAL_VERSION and cached.get("key") == key:
        items = cached.get("items")
        if isinstance(items, list) and all(isinstance(i, dict) and {"id", "label", "options"} <= i.keys()
                                           for i in items):
            return items
    if cached and cached.get("key") != key:
        was = cached.get("key") if isinstance(cached.get("key"), dict) else {}
        diff = ", ".join(f"{k}={was.get(k)!r}->{v!r}" for k, v in key.items() if was.get(k) != v)
        warnings.warn(f"rebuilding frozen eval options {path} ({diff})", stacklevel=3)
    keep = set(labels)
    pool = splits.test + (splits.val if run.data.include_val_in_test else [])
    space = label_space(splits, ds, labels)
    n = _n_options(run, space)
    items = []
    for it in pool:
        if it.label in keep:
            label = display_name(it.classname, ds)
            opts = _options(space, label, n, run.seed, it.path)
            items.append({"id": it.path, "label": label, "label_index": it.label, "options": opts})
    write_sealed_json(path, {"version": EVAL_VERSION, "key": key, "question": ds.question_in(run.setting.name),
                             "classes": space,
                             "num_options": n, "items": items})
    return items


def eval_sets(run: RunConfig, ds: DatasetConfig, splits: Splits | None = None) -> list[EvalSet]:
    """`test` (few-shot, open-set) or `base` + `new` (base2new), each with frozen option lists (none in open-set,
    which asks the dataset's open question instead); missing images reported."""
    if splits is None:
        ensure_dataset(ds, run.data.root)
        splits = load_splits(ds, run.data.root)
    out = []
    for split, labels in _space_labels(run, splits).items():
        if splits.frozen is not None:
            out.append(_frozen_eval(run, ds, splits, split))
            continue
        examples, missing = [], []
        for rec in _frozen_items(run, ds, splits, split, labels):
            path = splits.image_root / rec["id"]
            if not os.path.exists(path):
                missing.append(rec["id"])
                continue
            examples.append(Example(rec["id"], str(path), rec["label"], tuple(rec["options"]), split))
        classes = label_space(splits, ds, labels) if run.setting.name == "open" else []
        out.append(EvalSet(ds.name, split, ds.question_in(run.setting.name), examples, missing, classes))
    return out


def shuffled_labels(examples: list[Example], seed: int) -> list[Example]:
    """The shuffled-label control: the same examples with their labels permuted (prompts and images unchanged), so
    rule rewards carry no label information and nothing should be learned.

    >>> exs = [Example(str(i), "", lab, (), "train") for i, lab in enumerate("abcd")]
    >>> sorted(e.label for e in shuffled_labels(exs, 1)) == list("abcd")
    True
    """
    labels = [ex.label for ex in examples]
    random.Random(f"control:{seed}").shuffle(labels)
    return [dataclasses.replace(ex, label=lab) for ex, lab in zip(examples, labels, strict=True)]


def data_fingerprints(run: RunConfig, datasets: dict[str, DatasetConfig]) -> dict[str, str]:
    """Dataset name -> fingerprint of what it is (`clsrl_exp.data.fingerprint`); a missing or malformed dataset is a
    `DataError` here, before anything else runs."""
    out = {}
    for name, ds in datasets.items():
        ensure_dataset(ds, run.data.root)
        out[name] = dataset_fingerprint(ds, run.data.root, cache_root(run, ds))
    return out


def cell_data(run: RunConfig, missing, train: bool, fingerprints: dict[str, str] | None = None
              ) -> tuple[list, list[Example]]:
    """What one cell reads: the eval sets of its missing evaluations as (spec, EvalSet) pairs (specs from
    `clsrl_exp.cells.requested_evals`), and its training examples when `train`. Each dataset's split is read once
    (ImageNet's means listing 1.28M files) and must still have the fingerprint the cell's identity was checked with."""
    datasets = {s.dataset.name: s.dataset for s in missing}
    if train:
        datasets[run.dataset.name] = run.dataset
    splits = {}
    for name, ds in datasets.items():
        ensure_dataset(ds, run.data.root)
        key = listing_key(ds, run.data.root)
        splits[name] = load_splits(ds, run.data.root)
        remember(cache_root(run, ds), key, splits[name].fingerprint)
        want = (fingerprints or {}).get(name)
        if want is not None and want != splits[name].fingerprint:
            raise DataError(f"dataset '{name}' changed while this cell started (fingerprint {want[:12]} -> "
                            f"{splits[name].fingerprint[:12]}); run the cell again")
    by_set = {}
    for name in dict.fromkeys(s.dataset.name for s in missing):
        for es in eval_sets(run, datasets[name], splits[name]):
            by_set[(name, es.split)] = es
    sets = [(spec, by_set[(spec.dataset.name, spec.split)]) for spec in missing]
    examples = train_examples(run, run.dataset, splits[run.dataset.name]) if train else []
    return sets, examples


# ----------------------------------------------------------------------------------------------------- frozen
def _image_file(run: RunConfig, ds: DatasetConfig, splits: Splits, it: Item) -> Path:
    """Where an item's image is: under the image root, or extracted (once, content-addressed, bytes unchanged)
    into `<cache>/<dataset>/images/` when the data file stores it."""
    data = splits.image_bytes(it) if splits.image_bytes is not None else None
    if data is None:
        return splits.image_root / it.path
    path = cache_root(run, ds) / "images" / f"{hashlib.sha256(data).hexdigest()[:32]}{image_suffix(data)}"
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


def _frozen_examples(run: RunConfig, ds: DatasetConfig, splits: Splits, items: list[Item], split: str
                     ) -> tuple[list[Example], list[str]]:
    """Examples of frozen rows: verbatim problem, label as written, no option list; (examples, missing ids).
    Open-set asks the question alone, so there the rows' problems (with their option lists) are not used."""
    verbatim = run.setting.name != "open"
    out, missing = [], []
    for it in items:
        path = _image_file(run, ds, splits, it)
        if split == "train" and not image_is_readable(path):
            raise DataError(f"training image missing or unreadable: {path} (row {it.path} of dataset '{ds.name}')")
        if not path.exists():
            missing.append(it.path)
            continue
        out.append(Example(it.path, str(path), it.classname, (), split, problem=it.problem if verbatim else None))
    return out, missing


def _frozen_train(run: RunConfig, ds: DatasetConfig, splits: Splits) -> list[Example]:
    """The frozen training rows as they are; their images per class must match `shots` (the run dir says kK)."""
    if not splits.train:
        raise ConfigError(f"dataset '{ds.name}' has no training rows (dataset.files.train): it can be evaluated, "
                          "not trained on")
    per_class = Counter(Counter(it.label for it in splits.train).values()).most_common(1)[0][0]
    if per_class != run.shots:
        raise ConfigError(f"the training rows of dataset '{ds.name}' hold {per_class} images per class: run it with "
                          f"shots={per_class} (got shots={run.shots})")
    return _frozen_examples(run, ds, splits, splits.train, "train")[0]


def _frozen_eval(run: RunConfig, ds: DatasetConfig, splits: Splits, split: str) -> EvalSet:
    if split not in splits.frozen:
        raise ConfigError(f"dataset '{ds.name}' has no dataset.files.{split}: setting={run.setting.name} evaluates "
                          f"{', '.join(_space_labels(run, splits))}")
    examples, missing = _frozen_examples(run, ds, splits, splits.frozen[split], split)
    classes = list(splits.classnames) if run.setting.name == "open" else []
    return EvalSet(ds.name, split, ds.question_in(run.setting.name), examples, missing, classes)
