"""Convert offline datasets into CoOp's split-json layout (datasets.md 2): `python -m clsrl_exp.data.prepare ...`.

Fashion-MNIST comes from the Debian package `dataset-fashion-mnist` (`apt-get install -y dataset-fashion-mnist`,
files in /usr/share/datasets/fashion-mnist/) or any folder with the four idx files, gzipped or not. Output:
`<root>/fashion_mnist/images/<folder>/<split>_<index>.png` + `<root>/fashion_mnist/split_fashion_mnist.json`,
read by `conf/dataset/fashion-mnist.yaml`. Train/val come from the train file, test from t10k; per class the first
N items in file order are taken (deterministic). The folder is built in a temp dir and renamed into place.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from clsrl_exp.errors import DataError, UserError

DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"
APT_HINT = "install it with `apt-get install -y dataset-fashion-mnist` or pass --source DIR"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")  # fmt: skip
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def safe_folder(name: str) -> str:
    """A file-system-safe folder name for a class.

    >>> [safe_folder(n) for n in ("T-shirt/top", "Ankle boot")]
    ['T-shirt_top', 'Ankle_boot']
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def _open_idx(source: Path, stem: str) -> tuple[Path, bytes]:
    for path in (source / f"{stem}.gz", source / stem):
        if path.is_file():
            try:
                raw = path.read_bytes()
                return path, gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise DataError(f"cannot read idx file {path}: {e}") from None
    raise DataError(f"Fashion-MNIST file not found: {source / stem}[.gz] (Debian package dataset-fashion-mnist; "
                    f"{APT_HINT})")


def read_idx(source: Path, stem: str, magic: int) -> np.ndarray:
    """Parse an idx file (big-endian header: magic, dims) into a uint8 array of shape (n, *dims)."""
    path, data = _open_idx(source, stem)
    ndim = 3 if magic == IMAGES_MAGIC else 1
    header = 4 * (1 + ndim)
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        got = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise DataError(f"malformed idx file {path}: expected magic {magic}, got {got} "
                        f"(reinstall dataset-fashion-mnist or check --source)")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) - header != int(np.prod(dims)):
        raise DataError(f"malformed idx file {path}: header says {dims} = {int(np.prod(dims))} bytes of data, "
                        f"file has {len(data) - header}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _select(labels: np.ndarray, per_class: int | None, start: dict[int, int] | None = None) -> dict[int, list[int]]:
    """First `per_class` indices of each class in file order (after skipping `start[c]` of them)."""
    out = {}
    for c in range(len(FASHION_CLASSES)):
        idx = np.flatnonzero(labels == c)[(start or {}).get(c, 0):]
        out[c] = idx[:per_class].tolist() if per_class is not None else idx.tolist()
    return out


def prepare_fashion_mnist(root: str | os.PathLike, source: str | os.PathLike = DEFAULT_SOURCE, size: int = 56,
                          train_per_class: int | None = 100, val_per_class: int = 0,
                          test_per_class: int | None = 100, force: bool = False) -> Path:
    """Write the CoOp-layout Fashion-MNIST tree under `<root>/fashion_mnist`; returns that folder."""
    root, source = Path(root).expanduser(), Path(source).expanduser()
    target = root / "fashion_mnist"
    if (target / "split_fashion_mnist.json").is_file() and not force:
        print(f"{target} already exists (pass --force to rebuild it)")
        return target
    if target.exists() and not force:
        raise DataError(f"{target} exists without split_fashion_mnist.json; remove it or pass --force")
    arrays = {}
    for part in ("train", "t10k"):
        x = read_idx(source, f"{part}-images-idx3-ubyte", IMAGES_MAGIC)
        y = read_idx(source, f"{part}-labels-idx1-ubyte", LABELS_MAGIC)
        if len(x) != len(y):
            raise DataError(f"{source}: {part} has {len(x)} images but {len(y)} labels")
        if y.size and int(y.max()) >= len(FASHION_CLASSES):
            raise DataError(f"{source}: {part} labels must be 0..9 (found {int(y.max())})")
        arrays[part] = (x, y)
    train_sel = _select(arrays["train"][1], train_per_class)
    val_sel = _select(arrays["train"][1], val_per_class, {c: len(v) for c, v in train_sel.items()})
    test_sel = _select(arrays["t10k"][1], test_per_class)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fashion_mnist.tmp-", dir=root))
    try:
        split: dict[str, list] = {"train": [], "val": [], "test": []}
        for key, part, sel in (("train", "train", train_sel), ("val", "train", val_sel), ("test", "t10k", test_sel)):
            x = arrays[part][0]
            for c, indices in sel.items():
                folder = safe_folder(FASHION_CLASSES[c])
                (tmp / "images" / folder).mkdir(parents=True, exist_ok=True)
                for i in indices:
                    rel = f"{folder}/{key}_{i:05d}.png"
                    img = Image.fromarray(x[i], "L").resize((size, size), Image.Resampling.LANCZOS).convert("RGB")
                    img.save(tmp / "images" / rel)
                    split[key].append([rel, c, FASHION_CLASSES[c]])
        (tmp / "split_fashion_mnist.json").write_text(json.dumps(split, indent=4, separators=(",", ": ")))
        os.chmod(tmp, 0o755)
        old = None
        if target.exists():  # --force: swap the new tree in, then drop the old one
            old = Path(tempfile.mkdtemp(prefix=".fashion_mnist.old-", dir=root)) / "old"
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = {k: len(v) for k, v in split.items()}
    print(f"wrote {target}: {counts} images ({size}x{size} RGB PNG, {len(FASHION_CLASSES)} classes) and "
          f"{target / 'split_fashion_mnist.json'} from {source}")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clsrl_exp.data.prepare", description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=["fashion-mnist"])
    p.add_argument("--root", default=os.environ.get("CLSRL_DATA"), help="data root (default: env CLSRL_DATA)")
    p.add_argument("--source", default=DEFAULT_SOURCE, help=f"folder with the idx files (default {DEFAULT_SOURCE})")
    p.add_argument("--size", type=int, default=56, help="output side in pixels (default 56 = Qwen2-VL min_pixels)")
    p.add_argument("--train-per-class", type=int, default=100, help="first N train images per class (-1 = all)")
    p.add_argument("--val-per-class", type=int, default=0, help="next N train images per class as val (default 0)")
    p.add_argument("--test-per-class", type=int, default=100, help="first N t10k images per class (-1 = all)")
    p.add_argument("--force", action="store_true", help="rebuild even if the folder exists")
    a = p.parse_args(argv)
    if not a.root:
        p.error("--root is required (or set CLSRL_DATA)")
    try:
        prepare_fashion_mnist(a.root, a.source, a.size, None if a.train_per_class < 0 else a.train_per_class,
                              a.val_per_class, None if a.test_per_class < 0 else a.test_per_class, a.force)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
