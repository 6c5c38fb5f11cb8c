"""Data for CLS-RL runs: CoOp layouts on disk -> K-shot training examples and frozen multiple-choice eval sets.

The run code uses exactly this API:

- `ensure_dataset(ds, root)`: generate a synthetic dataset on first use (no-op for real ones).
- `load_splits(ds, root) -> Splits`: the raw split (`formats/`: one reader per `dataset.layout`).
- `display_name(raw, ds)`: the class name shown in prompts and compared by rewards.
- `train_examples(run, ds) -> list[Example]`: the K-shot subset (base classes only in base2new) with options.
- `eval_sets(run, ds) -> list[EvalSet]`: `test` (few-shot) or `base` + `new` (base2new), options frozen on disk.
- `cell_data(run, missing, train)`: what one cell reads (each split once).
- `data_fingerprints(run, datasets)`: what each dataset is (split definition hash; part of every identity).
- `load_image(path, size)`: open, RGB, LANCZOS resize to (size, size).
- `shuffled_labels(examples, seed)`: the shuffled-label control (labels permuted across examples).

The data root is `data.root` (or env `CLSRL_DATA`); caches go to `data.cache_dir` (see `protocol.py`). Formats:
`formats/` (CoOp layouts, `imagefolder`, the authors' files `clsrl_official`); `fingerprint.py` says what a dataset
is; `python -m clsrl_exp.data.export` writes a frozen eval set in the authors' JSONL format.
"""

from clsrl_exp.data.formats import FORMATS, Item, Splits, load_splits, resolve_root
from clsrl_exp.data.images import image_is_readable, load_image
from clsrl_exp.data.protocol import (
    EvalSet,
    Example,
    cell_data,
    class_halves,
    data_fingerprints,
    display_name,
    ensure_dataset,
    eval_sets,
    examples_from_items,
    fewshot_subset,
    label_space,
    sample_fewshot,
    shuffled_labels,
    train_examples,
)

__all__ = [
    "FORMATS",
    "EvalSet",
    "Example",
    "Item",
    "Splits",
    "cell_data",
    "class_halves",
    "data_fingerprints",
    "display_name",
    "ensure_dataset",
    "eval_sets",
    "examples_from_items",
    "fewshot_subset",
    "image_is_readable",
    "label_space",
    "load_image",
    "load_splits",
    "resolve_root",
    "sample_fewshot",
    "shuffled_labels",
    "train_examples",
]
