"""ImageNet in CoOp's layout (datasets.md 1.3): classnames.txt + images/{train,val}/<wnid>/ folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

from clsrl_exp.config import DatasetConfig
from clsrl_exp.data.formats import (
    Item,
    Splits,
    check_classes,
    dataset_dir,
    image_root,
    sha256_of,
)
from clsrl_exp.errors import DataError


def _files(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))


def listing_inputs(ds: DatasetConfig, root: str | os.PathLike | None) -> list[Path]:
    """What the listing depends on: classnames.txt and the train/val folders with every wnid folder in them (2,000
    stats instead of listing 1.28M files)."""
    base, img_root = dataset_dir(ds, root), image_root(ds, root)
    tops = [img_root / "train", img_root / "val"]
    return [base / "classnames.txt", *tops, *(t / e.name for t in tops if t.is_dir()
                                               for e in os.scandir(t) if e.is_dir())]


def read_imagenet(ds: DatasetConfig, root: str | os.PathLike | None) -> Splits:
    """ImageNet: `classnames.txt` (`<wnid> <name>`), label = index of the wnid in sorted `images/train/` folders.

    `images/val/` is the test set (CoOp uses it as val and test; here `val` stays empty). File lists are sorted
    (CoOp lists them unsorted, which is file-system dependent).
    """
    base = dataset_dir(ds, root)
    names_file = base / "classnames.txt"
    if not names_file.is_file():
        raise DataError(f"ImageNet class list not found: {names_file} (expected '<wnid> <class name>' per line)")
    wnid_name: dict[str, str] = {}
    for n, line in enumerate(names_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) != 2:
            raise DataError(f"malformed line {n} in {names_file}: expected '<wnid> <class name>', got {line!r}")
        wnid_name[parts[0]] = parts[1].strip()
    img_root = image_root(ds, root)
    train_dir, val_dir = img_root / "train", img_root / "val"
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise DataError(f"ImageNet folder not found: {d} (expected one sub-folder per wnid; CoOp's DATASETS.md)")
    wnids = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    missing = [w for w in wnids if w not in wnid_name]
    if missing:
        raise DataError(f"{names_file} has no class name for wnid folder(s) {missing[:5]} in {train_dir}")
    label_of = {w: i for i, w in enumerate(wnids)}
    classnames = [wnid_name[w] for w in wnids]
    check_classes(str(train_dir), classnames)
    parts: dict[str, list[Item]] = {"train": [], "test": []}
    for key, d in (("train", train_dir), ("test", val_dir)):
        for w in sorted(e.name for e in os.scandir(d) if e.is_dir()):
            if w not in label_of:
                raise DataError(f"ImageNet folder {d / w} has no matching class folder in {train_dir}")
            parts[key] += [Item(f"{d.name}/{w}/{f}", label_of[w], classnames[label_of[w]]) for f in _files(d / w)]
    listing = json.dumps([classnames, [(it.path, it.label) for k in ("train", "test") for it in parts[k]]])
    return Splits(ds.name, img_root, classnames, parts["train"], [], parts["test"], sha256_of([listing.encode()]))


