"""Readers for the CoOp on-disk layouts (datasets.md 1.1-1.3): split JSON, ImageNet folders, FGVCAircraft lists.

Every reader returns `Splits`: raw class names (index = label) and `Item`s whose `path` is relative to the
dataset's image root, exactly as stored in CoOp's `split_zhou_*.json`. Display names (rename map, underscores ->
spaces) are applied later by `clsrl_exp.data.display_name`. `LAYOUTS` maps `DatasetConfig.layout` to its reader.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clsrl_exp.config import DatasetConfig
from clsrl_exp.errors import ConfigError, DataError

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


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data root: `data.root`, else env `CLSRL_DATA`; it must exist.

    >>> resolve_root("/nonexistent-data-root")
    Traceback (most recent call last):
    ...
    clsrl_exp.errors.DataError: data root not found: /nonexistent-data-root (set data.root=... or CLSRL_DATA)
    """
    text = str(root) if root not in (None, "", "???") else os.environ.get("CLSRL_DATA", "")
    if not text:
        raise DataError("data root not set: pass data.root=/path/to/data or set the environment variable CLSRL_DATA")
    path = Path(text).expanduser()
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


def _sha256(chunks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def _classnames_from_items(where: str, splits: dict[str, list[Item]]) -> list[str]:
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


def _check_classes(where: str, classnames: list[str]) -> None:
    if len(classnames) < 2:
        raise DataError(f"{where} defines {len(classnames)} class(es); classification needs at least 2")


# ----------------------------------------------------------------------------------------------------- split_json
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
    classnames = _classnames_from_items(str(path), parts)
    _check_classes(str(path), classnames)
    img_root = image_root(ds, root)
    return Splits(ds.name, img_root, classnames, parts["train"], parts["val"], parts["test"], _sha256([raw]))


# ----------------------------------------------------------------------------------------------------- imagenet
def _files(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))


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
    _check_classes(str(train_dir), classnames)
    parts: dict[str, list[Item]] = {"train": [], "test": []}
    for key, d in (("train", train_dir), ("test", val_dir)):
        for w in sorted(e.name for e in os.scandir(d) if e.is_dir()):
            if w not in label_of:
                raise DataError(f"ImageNet folder {d / w} has no matching class folder in {train_dir}")
            parts[key] += [Item(f"{d.name}/{w}/{f}", label_of[w], classnames[label_of[w]]) for f in _files(d / w)]
    listing = json.dumps([classnames, [(it.path, it.label) for k in ("train", "test") for it in parts[k]]])
    return Splits(ds.name, img_root, classnames, parts["train"], [], parts["test"], _sha256([listing.encode()]))


# ----------------------------------------------------------------------------------------------------- fgvc
def read_fgvc_aircraft(ds: DatasetConfig, root: str | os.PathLike | None) -> Splits:
    """FGVCAircraft: `variants.txt` (label = line index), `images_variant_{train,val,test}.txt` (`<id> <variant>`)."""
    base = dataset_dir(ds, root)
    variants_file = base / "variants.txt"
    if not variants_file.is_file():
        raise DataError(f"FGVCAircraft class list not found: {variants_file} (expected one variant per line)")
    variants_raw = variants_file.read_bytes()
    classnames = [ln.strip() for ln in variants_raw.decode().splitlines() if ln.strip()]
    _check_classes(str(variants_file), classnames)
    label_of = {c: i for i, c in enumerate(classnames)}
    chunks, parts = [variants_raw], {}
    for key in SPLIT_KEYS:
        path = base / f"images_variant_{key}.txt"
        if not path.is_file():
            raise DataError(f"FGVCAircraft split list not found: {path} (expected '<image id> <variant>' per line)")
        raw = path.read_bytes()
        chunks.append(raw)
        items = []
        for n, line in enumerate(raw.decode().splitlines(), 1):
            if not line.strip():
                continue
            words = line.strip().split(" ")
            variant = " ".join(words[1:])
            if len(words) < 2 or variant not in label_of:
                raise DataError(
                    f"malformed line {n} in {path}: expected '<image id> <variant from variants.txt>', got {line!r}"
                )
            items.append(Item(f"{words[0]}.jpg", label_of[variant], variant))
        parts[key] = items
    img_root = image_root(ds, root)
    return Splits(ds.name, img_root, classnames, parts["train"], parts["val"], parts["test"], _sha256(chunks))


LAYOUTS: dict[str, Callable[[DatasetConfig, str | os.PathLike | None], Splits]] = {
    "split_json": read_split_json,
    "imagenet": read_imagenet,
    "fgvc_aircraft": read_fgvc_aircraft,
}


def load_splits(ds: DatasetConfig, root: str | os.PathLike | None) -> Splits:
    """Read a dataset with the reader its config names (`dataset.layout`)."""
    reader = LAYOUTS.get(ds.layout)
    if reader is None:
        raise ConfigError(f"dataset '{ds.name}': unknown dataset.layout '{ds.layout}'; known: {sorted(LAYOUTS)}")
    return reader(ds, root)
