"""FGVCAircraft in CoOp's layout (datasets.md 1.2): variants.txt + images_variant_{train,val,test}.txt."""

from __future__ import annotations

import os

from clsrl_exp.config import DatasetConfig
from clsrl_exp.data.formats import (
    SPLIT_KEYS,
    Item,
    Splits,
    check_classes,
    dataset_dir,
    image_root,
    sha256_of,
)
from clsrl_exp.errors import DataError


def read_fgvc_aircraft(ds: DatasetConfig, root: str | os.PathLike | None) -> Splits:
    """FGVCAircraft: `variants.txt` (label = line index), `images_variant_{train,val,test}.txt` (`<id> <variant>`)."""
    base = dataset_dir(ds, root)
    variants_file = base / "variants.txt"
    if not variants_file.is_file():
        raise DataError(f"FGVCAircraft class list not found: {variants_file} (expected one variant per line)")
    variants_raw = variants_file.read_bytes()
    classnames = [ln.strip() for ln in variants_raw.decode().splitlines() if ln.strip()]
    check_classes(str(variants_file), classnames)
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
    return Splits(ds.name, img_root, classnames, parts["train"], parts["val"], parts["test"], sha256_of(chunks))


