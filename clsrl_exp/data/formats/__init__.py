"""Dataset formats: one reader module per on-disk layout, selected by `dataset.layout` through `FORMATS`.

Every reader is `read(ds: DatasetConfig, root) -> Splits`: raw class names (index = label) and `Item`s whose `path`
is relative to the dataset's image root, plus a fingerprint of what defines the split. Display names (rename map,
underscores -> spaces) are applied later by `clsrl_exp.data.display_name`; few-shot subsets, base/new halves and
option lists by `clsrl_exp.data.protocol`, the same for every format.

Built in: `split_json` (CoOp's split_zhou_*.json: most CoOp datasets, the synthetic ones, Fashion-MNIST;
`coop.py`), `imagenet` (classnames.txt + wnid folders; `imagenet.py`), `fgvc_aircraft` (variant lists;
`fgvc.py`), `imagefolder` (`<folder>/{train,test}/<class>/*`, or one folder split by a seeded fraction;
`imagefolder.py`), `clsrl_official` (the authors' published training rows and frozen test JSONL, each row with its
own `problem` text; `official.py`).

The dataset folder is `dataset.path` (absolute, or under the data root) if set, else `<data.root>/<dataset_dir>`
(`dataset_dir` defaults to the dataset's name). Where the data lives is never part of a run's identity; what it is
is: `Splits.fingerprint` hashes what defines the split (split file bytes, list files, or the listed paths, labels
and class names; never image bytes). Layouts that list folders name the folders whose mtimes change with the
listing (`LISTINGS`), so the fingerprint can be cached instead of listing 1.28M ImageNet files per skip check.

How to add a format: write `clsrl_exp/data/formats/<name>.py` with a reader (raise `DataError` naming the file,
line and field of any bad input), add it to `FORMATS` (or decorate it with `@register_format("<name>")`, or put its
import path `my_formats.py:read_mine` in `dataset.layout`), and write one `conf/dataset/<dataset>.yaml` per dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clsrl_exp.errors import ConfigError, DataError
from clsrl_exp.plugins import is_import_path, load_object

if TYPE_CHECKING:
    from clsrl_exp.config import DatasetConfig

SPLIT_KEYS = ("train", "val", "test")


@dataclass(frozen=True)
class Item:
    path: str  # relative to the image root, as in the split file (also the item's id)
    label: int
    classname: str  # raw, as stored (CoOp keeps underscores)
    problem: str | None = None  # verbatim problem text (question + option list) of the authors' files


@dataclass
class Splits:
    name: str
    image_root: Path
    classnames: list[str]  # raw names, index = label
    train: list[Item] = field(default_factory=list)
    val: list[Item] = field(default_factory=list)
    test: list[Item] = field(default_factory=list)
    fingerprint: str = ""  # sha256 of what defines the split (split file bytes / list files / folder listing)
    frozen: dict[str, list[Item]] | None = None  # eval split -> items with verbatim problems (authors' files)
    image_bytes: Callable[[Item], bytes | None] | None = None  # images stored inside a data file (HF datasets)


def root_path(root: str | os.PathLike | None) -> Path:
    """The data root as given: `data.root`, else env `CLSRL_DATA` (it need not exist yet).

    >>> root_path("/data/coop")
    PosixPath('/data/coop')
    """
    text = str(root) if root not in (None, "", "???") else os.environ.get("CLSRL_DATA", "")
    if not text:
        raise DataError("data root not set: pass data.root=/path/to/data or set the environment variable CLSRL_DATA")
    return Path(text).expanduser()


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data root: `data.root`, else env `CLSRL_DATA`; it must exist.

    >>> resolve_root("/nonexistent-data-root")
    Traceback (most recent call last):
    ...
    clsrl_exp.errors.DataError: data root not found: /nonexistent-data-root (set data.root=... or CLSRL_DATA)
    """
    path = root_path(root)
    if not path.is_dir():
        raise DataError(f"data root not found: {path} (set data.root=... or CLSRL_DATA)")
    return path.resolve()


def dataset_dir(ds: DatasetConfig, root: str | os.PathLike | None) -> Path:
    """The dataset folder: `dataset.path` (absolute, or under the data root), else `<data root>/<dataset_dir>`."""
    if ds.path and Path(ds.path).expanduser().is_absolute():
        path = Path(ds.path).expanduser()
        if not path.is_dir():
            raise DataError(f"dataset folder not found: {path} (dataset.path of dataset '{ds.name}')")
        return path.resolve()
    sub = ds.path or ds.dataset_dir or ds.name
    path = resolve_root(root) / sub
    if not path.is_dir():
        raise DataError(
            f"dataset folder not found: {path} (expected '{sub}/' under the data root for dataset "
            f"'{ds.name}', following CoOp's DATASETS.md layout; or set dataset.path)"
        )
    return path


def image_root(ds: DatasetConfig, root: str | os.PathLike | None) -> Path:
    base = dataset_dir(ds, root)
    return base / ds.image_dir if ds.image_dir else base


def sha256_of(chunks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def content_fingerprint(classnames: list[str], parts: dict[str, list[Item]]) -> str:
    """sha256 of the class list and every item's (path, label, problem): what a listing-based split is.

    >>> a = content_fingerprint(["x", "y"], {"train": [Item("x/1.jpg", 0, "x")]})
    >>> a == content_fingerprint(["x", "y"], {"train": [Item("x/1.jpg", 0, "x")]}), len(a)
    (True, 64)
    >>> a == content_fingerprint(["x", "z"], {"train": [Item("x/1.jpg", 0, "x")]})
    False
    """
    listing = [classnames, {k: [[it.path, it.label, it.problem] for it in v] for k, v in sorted(parts.items())}]
    return sha256_of([json.dumps(listing, ensure_ascii=False).encode()])


def classnames_from_items(where: str, splits: dict[str, list[Item]]) -> list[str]:
    """label -> classname from all splits; labels must be 0..C-1, one name per label, and C >= 2."""
    names: dict[int, str] = {}
    for key, items in splits.items():
        for i, it in enumerate(items):
            prev = names.setdefault(it.label, it.classname)
            if prev != it.classname:
                raise DataError(
                    f"inconsistent labels in {where}: {key}[{i}] gives label {it.label} the class name "
                    f"'{it.classname}' but an earlier entry named it '{prev}'"
                )
    gaps = sorted(set(range(len(names))) - set(names))
    if names and (gaps or min(names) < 0):
        raise DataError(
            f"labels in {where} must be 0..C-1 without gaps; found {len(names)} labels from {min(names)} to "
            f"{max(names)}" + (f" (missing {gaps[:5]})" if gaps else "")
        )
    return [names[i] for i in range(len(names))]


def check_classes(where: str, classnames: list[str]) -> None:
    if len(classnames) < 2:
        raise DataError(f"{where} defines {len(classnames)} class(es); classification needs at least 2")


FORMATS: dict[str, str | Callable[[DatasetConfig, str | os.PathLike | None], Splits]] = {
    "split_json": "clsrl_exp.data.formats.coop:read_split_json",
    "imagenet": "clsrl_exp.data.formats.imagenet:read_imagenet",
    "fgvc_aircraft": "clsrl_exp.data.formats.fgvc:read_fgvc_aircraft",
    "imagefolder": "clsrl_exp.data.formats.imagefolder:read_imagefolder",
    "clsrl_official": "clsrl_exp.data.formats.official:read_official",
}

# layouts whose split is costly to read -> `f(ds, root) -> list[Path]`: the folders and files whose mtimes and sizes
# change whenever the split does (a folder listing; the authors' data tables, images inside);
# `clsrl_exp.data.dataset_fingerprint` caches the fingerprint under them
LISTINGS: dict[str, str | Callable[[DatasetConfig, str | os.PathLike | None], list[Path]]] = {
    "imagenet": "clsrl_exp.data.formats.imagenet:listing_inputs",
    "imagefolder": "clsrl_exp.data.formats.imagefolder:listing_inputs",
    "clsrl_official": "clsrl_exp.data.formats.official:listing_inputs",
}


def register_format(name: str):
    """Function decorator: register a reader under a `dataset.layout` name."""

    def deco(fn):
        FORMATS[name] = fn
        return fn

    return deco


def get_format(layout: str) -> Callable[[DatasetConfig, str | os.PathLike | None], Splits]:
    """The reader for a `dataset.layout` (registry key or import path)."""
    if is_import_path(layout):
        return load_object(layout)
    if layout not in FORMATS:
        raise KeyError(layout)
    if isinstance(FORMATS[layout], str):
        FORMATS[layout] = load_object(FORMATS[layout])
    return FORMATS[layout]


def listing_inputs(ds: DatasetConfig, root: str | os.PathLike | None) -> list[Path] | None:
    """The folders whose mtimes stand for this dataset's listing, or None when its layout is not a listing."""
    fn = LISTINGS.get(ds.layout)
    if fn is None:
        return None
    if isinstance(fn, str):
        fn = LISTINGS[ds.layout] = load_object(fn)
    return fn(ds, root)


def load_splits(ds: DatasetConfig, root: str | os.PathLike | None) -> Splits:
    """Read a dataset with the reader its config names (`dataset.layout`)."""
    try:
        reader = get_format(ds.layout)
    except (KeyError, ImportError) as e:
        raise ConfigError(f"dataset '{ds.name}': unknown dataset.layout '{ds.layout}' ({e}); known: "
                          f"{', '.join(sorted(FORMATS))} or an import path (file.py:reader)") from None
    splits = reader(ds, root)
    declared = getattr(ds, "num_classes", None)
    if declared is not None and declared != len(splits.classnames):
        logging.getLogger(__name__).warning(
            "dataset '%s' declares num_classes %d but its data defines %d classes: step counts planned from the "
            "config assumed %d (fix dataset.num_classes)", ds.name, declared, len(splits.classnames), declared)
    return splits
