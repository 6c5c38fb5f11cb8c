"""Generated 4-class datasets (colours, shapes) written in CoOp's split-JSON layout, so the real loader reads them.

`ensure_synthetic(ds, root)` generates `<root>/<dataset_dir>/` on first use: images go to
`images/<class>/<class>_<split>_<i>.png`, the split file to `<dataset_dir>/<split_file>`. Generation happens in a
temporary folder next to the target that is renamed into place, so a crash leaves nothing half-written and two
racing processes are safe (the loser discards its copy and uses the winner's). Pixels are a pure function of
`synthetic.seed`, the class and the split index, so a second generation is byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clsrl_exp.config import DatasetConfig, SyntheticSpec
from clsrl_exp.errors import ConfigError, DataError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 40),
    "blue": (40, 60, 220),
    "yellow": (230, 210, 40),
}
SHAPES = ("circle", "square", "triangle", "cross")
CLASSES = {"colors": tuple(COLORS), "shapes": SHAPES}
SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


def _rng(seed: int, cls: int, split: str, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, cls, SPLIT_INDEX[split], i])


def _finish(canvas: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    arr = np.asarray(canvas, dtype=np.float64) + rng.normal(0.0, sigma, size=(canvas.height, canvas.width, 3))
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def color_image(color: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A jittered class colour filling an ellipse or rectangle with corners in [0, s/4] and [3s/4, s-1].

    >>> color_image("red", 56, np.random.default_rng(0)).size
    (56, 56)
    """
    grey = 255 if rng.random() < 0.5 else int(rng.integers(90, 161))
    canvas = Image.new("RGB", (size, size), (grey, grey, grey))
    base = np.array(COLORS[color])
    fill = tuple(int(v) for v in np.clip(base + rng.integers(-30, 31, size=3), 0, 255))
    lo, hi = size // 4, size - 1
    x0, y0 = (int(v) for v in rng.integers(0, lo + 1, size=2))
    x1, y1 = (int(v) for v in rng.integers(3 * size // 4, hi + 1, size=2))
    draw = ImageDraw.Draw(canvas)
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return _finish(canvas, rng, 40.0)


def shape_image(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A large shape (side >= 50% of the image) in a random colour at a jittered position on a light background.

    >>> shape_image("cross", 56, np.random.default_rng(0)).mode
    'RGB'
    """
    grey = 255 if rng.random() < 0.5 else int(rng.integers(200, 241))
    canvas = Image.new("RGB", (size, size), (grey, grey, grey))
    fill = tuple(int(v) for v in rng.integers(0, 181, size=3))  # darker than the background
    side = int(rng.integers(size // 2, int(size * 0.9) + 1))
    x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    x1, y1 = x0 + side - 1, y0 + side - 1
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    elif shape == "cross":
        t = side // 3
        draw.rectangle((x0 + t, y0, x1 - t, y1), fill=fill)
        draw.rectangle((x0, y0 + t, x1, y1 - t), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return _finish(canvas, rng, 20.0)


def generate(spec: SyntheticSpec, out_dir: Path, split_file: str, image_dir: str = "images") -> dict[str, list]:
    """Write every image and the CoOp split JSON into `out_dir`; returns the split dict."""
    if spec.kind not in CLASSES:
        raise ConfigError(f"dataset.synthetic.kind must be one of {sorted(CLASSES)} (got '{spec.kind}')")
    draw_one = color_image if spec.kind == "colors" else shape_image
    counts = {"train": spec.n_train_per_class, "val": spec.n_val_per_class, "test": spec.n_test_per_class}
    split: dict[str, list] = {k: [] for k in counts}
    for label, cname in enumerate(CLASSES[spec.kind]):
        (out_dir / image_dir / cname).mkdir(parents=True, exist_ok=True)
        for key, n in counts.items():
            for i in range(n):
                rel = f"{cname}/{cname}_{key}_{i}.png"
                draw_one(cname, spec.size, _rng(spec.seed, label, key, i)).save(out_dir / image_dir / rel)
                split[key].append([rel, label, cname])
    (out_dir / split_file).write_text(json.dumps(split, indent=4, separators=(",", ": ")))
    return split


def ensure_synthetic(ds: DatasetConfig, root: str | os.PathLike) -> Path:
    """Generate the dataset under `<root>/<dataset_dir>` unless its split file exists; returns the dataset dir."""
    if ds.synthetic is None:
        raise ConfigError(f"dataset '{ds.name}' has no dataset.synthetic spec")
    if not ds.split_file:
        raise ConfigError(f"synthetic dataset '{ds.name}' needs dataset.split_file")
    root = Path(root).expanduser()
    target = root / ds.dataset_dir
    if (target / ds.split_file).is_file():
        return target
    if target.exists():
        raise DataError(
            f"dataset folder {target} exists but has no {ds.split_file}; remove the folder to regenerate "
            f"the synthetic dataset '{ds.name}'"
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ds.dataset_dir}.tmp-", dir=root))
    try:
        generate(ds.synthetic, tmp, ds.split_file, ds.image_dir or ".")
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        try:
            os.rename(tmp, target)  # atomic; fails if another process got there first
        except OSError:
            if not (target / ds.split_file).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
