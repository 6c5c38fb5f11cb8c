"""Dataset formats: one reader module per on-disk layout, selected by `dataset.layout` through `FORMATS`.

Every reader is `read(ds: DatasetConfig, root) -> Splits`: raw class names (index = label) and `Item`s whose `path`
is relative to the dataset's image root, plus a fingerprint of what defines the split. Display names (rename map,
underscores -> spaces) are applied later by `clsrl_exp.data.display_name`; few-shot subsets, base/new halves and
option lists by `clsrl_exp.data.protocol`, the same for every format.

Built in: `split_json` (CoOp's split_zhou_*.json: most CoOp datasets, the synthetic ones, Fashion-MNIST;
`coop.py`), `imagenet` (classnames.txt + wnid folders; `imagenet.py`), `fgvc_aircraft` (variant lists;
`fgvc.py`).

How to add a format: write `clsrl_exp/data/formats/<name>.py` with a reader (raise `DataError` naming the file,
line and field of any bad input), add it to `FORMATS` (or decorate it with `@register_format("<name>")`, or put its
import path `my_formats.py:read_mine` in `dataset.layout`), and write one `conf/dataset/<dataset>.yaml` per dataset.
"""

from __future__ import annotations

import hashlib
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
    path: str  # relative to the image root, as in the split file
    label: int
    classname: str  # raw, as stored (CoOp keeps underscores)


@dataclass
class Splits:
    name: str
    image_root: Path
    classnames: list[str]  # raw names, index = label
    train: list[Item] = field(default_factory=list)
    val: list[Item] = field(default_factory=list)
    test: list[Item] = field(default_factory=list)
    fingerprint: str = ""  # sha256 of what defines the split (split file bytes / list files / folder listing)


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
    path = resolve_root(root) / ds.dataset_dir
    if not path.is_dir():
        raise DataError(
            f"dataset folder not found: {path} (expected '{ds.dataset_dir}/' under the data root for dataset "
            f"'{ds.name}', following CoOp's DATASETS.md layout)"
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
