"""A folder of class folders (torchvision's `ImageFolder` habit), for "run CLS-RL on my dataset" with one YAML.

Either `<folder>/train/<class>/*` + `<folder>/test/<class>/*` (+ optional `<folder>/val/<class>/*`), or one
`<folder>/<class>/*` split per class by `dataset.folder_split` (a seeded fraction of the sorted files held out as
test, and optionally val). Class names are the train folder names in sorted order (label = index, as torchvision and
CoOp's folder datasets); prompts show them with the CoOp display rules (`dataset.classnames`: rename map, then
underscores -> spaces). Image files are the files directly in a class folder with an image suffix; hidden files
and anything else are ignored.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from clsrl_exp.config import DatasetConfig
from clsrl_exp.data.formats import Item, Splits, check_classes, content_fingerprint, dataset_dir
from clsrl_exp.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
SPLIT_DIRS = ("train", "val", "test")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _images(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder)
                  if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_SUFFIXES))


def _has_split_dirs(base: Path) -> bool:
    return (base / "train").is_dir() or (base / "test").is_dir()


def holdout(files: list[str], test: float, val: float, seed: int, key: str) -> dict[str, list[str]]:
    """Split one class's files: a seeded shuffle (by `seed` and the class folder), then the first round(test x n)
    are test, the next round(val x n) val, the rest train; each part keeps the sorted order.

    >>> parts = holdout([f"{i}.jpg" for i in range(10)], 0.3, 0.1, seed=0, key="cat")
    >>> [len(parts[k]) for k in ("train", "val", "test")]
    [6, 1, 3]
    >>> parts == holdout([f"{i}.jpg" for i in range(10)], 0.3, 0.1, seed=0, key="cat")
    True
    """
    order = list(files)
    random.Random(f"holdout:{seed}:{key}").shuffle(order)
    n_test, n_val = round(test * len(order)), round(val * len(order))
    chosen = {"test": set(order[:n_test]), "val": set(order[n_test:n_test + n_val])}
    chosen["train"] = set(order[n_test + n_val:])
    return {k: [f for f in files if f in chosen[k]] for k in SPLIT_DIRS}


def listing_inputs(ds: DatasetConfig, root) -> list[Path]:
    """The folders whose entries define the listing: the dataset folder, its split folders and every class folder."""
    base = dataset_dir(ds, root)
    tops = [base / d for d in SPLIT_DIRS if (base / d).is_dir()] if _has_split_dirs(base) else [base]
    return [base, *tops, *(top / c for top in tops for c in _class_dirs(top))]


def read_imagefolder(ds: DatasetConfig, root) -> Splits:
    """`<folder>/{train,val,test}/<class>/*` or `<folder>/<class>/*` split by `dataset.folder_split`."""
    base = dataset_dir(ds, root)
    parts: dict[str, list[Item]] = {k: [] for k in SPLIT_DIRS}
    if _has_split_dirs(base):
        for need in ("train", "test"):
            if not (base / need).is_dir():
                raise DataError(f"image folder {base} has no {need}/ folder: expected {base}/train/<class>/* and "
                                f"{base}/test/<class>/* (val/ optional), or only class folders to split by "
                                "dataset.folder_split")
        classnames = _class_dirs(base / "train")
        label_of = {c: i for i, c in enumerate(classnames)}
        for key in SPLIT_DIRS:
            if not (base / key).is_dir():
                continue
            for cname in _class_dirs(base / key):
                if cname not in label_of:
                    raise DataError(f"class folder {base / key / cname} has no match in {base / 'train'}: every "
                                    f"{key} class needs a train folder of the same name (classes: "
                                    f"{', '.join(classnames[:8])}{', ...' if len(classnames) > 8 else ''})")
                parts[key] += [Item(f"{key}/{cname}/{f}", label_of[cname], cname)
                               for f in _images(base / key / cname)]
        where = base / "train"
    else:
        fs = ds.folder_split
        if not (0 < fs.test < 1 and 0 <= fs.val < 1 and fs.test + fs.val < 1):
            raise ConfigError(f"dataset '{ds.name}': dataset.folder_split needs 0 < test < 1, 0 <= val < 1 and "
                              f"test + val < 1 (got test={fs.test}, val={fs.val})")
        classnames = _class_dirs(base)
        for label, cname in enumerate(classnames):
            split = holdout(_images(base / cname), fs.test, fs.val, fs.seed, cname)
            for key in SPLIT_DIRS:
                parts[key] += [Item(f"{cname}/{f}", label, cname) for f in split[key]]
        where = base
    check_classes(f"image folder {where}", classnames)
    have = {it.label for it in parts["train"]}
    empty = [c for i, c in enumerate(classnames) if i not in have]
    if empty:
        raise DataError(f"class folder(s) without training images in {where}: {', '.join(empty[:5])} (image "
                        f"files end in {', '.join(IMAGE_SUFFIXES)}; one-folder datasets need >= 2 images per class)")
    if not parts["test"]:
        raise DataError(f"image folder {base} has no test images")
    fp = content_fingerprint(classnames, parts)
    return Splits(ds.name, base, classnames, parts["train"], parts["val"], parts["test"], fp)
