"""CoOp's split JSON (`split_zhou_<Name>.json`, datasets.md 1.1): most CoOp datasets, the synthetic ones and
Fashion-MNIST. `{"train"|"val"|"test": [[relative_path, label, classname], ...]}`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from clsrl_exp.config import DatasetConfig
from clsrl_exp.data.formats import (
    SPLIT_KEYS,
    Item,
    Splits,
    check_classes,
    classnames_from_items,
    dataset_dir,
    image_root,
    sha256_of,
)
from clsrl_exp.errors import ConfigError, DataError


def _parse_entry(path: Path, key: str, i: int, entry: object) -> Item:
    ok = isinstance(entry, list | tuple) and len(entry) == 3 and isinstance(entry[0], str) and entry[0]
    ok = ok and isinstance(entry[2], str) and not isinstance(entry[1], bool)
    label = None
    if ok:
        try:
            label = int(entry[1])  # CoOp's read_split casts with int()
        except (TypeError, ValueError):
            ok = False
    if not ok:
        shown = json.dumps(entry)[:120]
        raise DataError(
            f"split file malformed: {path}: entry {key}[{i}] should be [relative_path, int_label, classname], "
            f"got {shown}"
        )
    return Item(entry[0].lstrip("/"), label, entry[2])


def read_split_json(ds: DatasetConfig, root: str | os.PathLike | None) -> Splits:
    """CoOp `split_zhou_<Name>.json`: `{"train"|"val"|"test": [[relpath, label, classname], ...]}`."""
    base = dataset_dir(ds, root)
    if not ds.split_file:
        raise ConfigError(f"dataset '{ds.name}' uses layout split_json but sets no dataset.split_file")
    path = base / ds.split_file
    if not path.is_file():
        raise DataError(
            f"split file not found: {path} (expected CoOp's {ds.split_file} in {base}; see CoOp's DATASETS.md)"
        )
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"split file malformed: {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"split file malformed: {path} should hold a JSON object with keys train, val, test")
    for key in SPLIT_KEYS:
        if key not in data:
            raise DataError(f"split file malformed: {path} has no '{key}' key (expected keys train, val, test)")
        if not isinstance(data[key], list):
            raise DataError(f"split file malformed: {path}: '{key}' should be a list of entries")
    parts = {k: [_parse_entry(path, k, i, e) for i, e in enumerate(data[k])] for k in SPLIT_KEYS}
    classnames = classnames_from_items(str(path), parts)
    check_classes(str(path), classnames)
    img_root = image_root(ds, root)
    return Splits(ds.name, img_root, classnames, parts["train"], parts["val"], parts["test"], sha256_of([raw]))


