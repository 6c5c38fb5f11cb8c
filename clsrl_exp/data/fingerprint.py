"""What a dataset is, as one hash: `Splits.fingerprint` (split definition: class list, paths, labels, frozen problem
texts; never image bytes), cheap enough to compute at every skip check.

Split files are read and hashed each time (milliseconds). A folder listing (ImageNet's 1.28M files, a large image
folder) is listed once, and the authors' data tables (images inside) are read once: the fingerprint is cached in
`<cache>/fingerprint.json` under a key made of the dataset config and the path, mtime and size of every folder and
file the format names (`formats.LISTINGS`): adding, removing, renaming or rewriting a file changes a folder's or
file's mtime, so the next check reads again. A moved dataset (other path, same files) is read once more and gives
the same fingerprint.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from clsrl_exp.config import DatasetConfig
from clsrl_exp.data.formats import listing_inputs, load_splits
from clsrl_exp.fileio import atomic_write_json, read_json, spec_hash

CACHE_FILE = "fingerprint.json"


def listing_key(ds: DatasetConfig, root) -> str | None:
    """The key a folder listing's fingerprint is cached under, or None (not a listing, or a folder is missing:
    the full read then reports what is wrong)."""
    try:
        inputs = listing_inputs(ds, root)
        if inputs is None:
            return None
        stats = [(str(p), st.st_mtime_ns, st.st_size) for p in inputs for st in [os.stat(p)]]
    except OSError:
        return None
    return spec_hash(asdict(ds), stats, length=32)


def dataset_fingerprint(ds: DatasetConfig, root, cache: Path) -> str:
    """The dataset's fingerprint (cached under `cache` for folder listings)."""
    key = listing_key(ds, root)
    if key is not None:
        cached = read_json(cache / CACHE_FILE)
        if isinstance(cached, dict) and cached.get("key") == key and isinstance(cached.get("fingerprint"), str):
            return cached["fingerprint"]
    fp = load_splits(ds, root).fingerprint
    remember(cache, key, fp)
    return fp


def remember(cache: Path, key: str | None, fingerprint: str) -> None:
    """Cache a listing's fingerprint under the key taken BEFORE the listing was read (a no-op without a key)."""
    if key is not None:
        atomic_write_json(cache / CACHE_FILE, {"key": key, "fingerprint": fingerprint})
