"""Miniature CoOp layouts on disk with real tiny image files, for the data tests (datasets.md 1.1-1.3).

Each `make_*` writes under `root` exactly the folders and files the real dataset has (so the real configs in
conf/dataset/ read them) and returns what it wrote. `make_run` builds a `RunConfig` pointing at `root`.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from clsrl_exp.config import DataConfig, DatasetConfig, RunConfig, SettingConfig, dataset_config

DTD_CLASSES = ["banded", "blotchy", "braided", "bubbly", "bumpy"]
IMAGENET_CLASSES = {"n01443537": "goldfish", "n01440764": "tench", "n01484850": "great white shark"}
FGVC_VARIANTS = ["707-320", "A300B4", "F/A-18", "Cessna 172", "DHC-1"]
CARS_CLASSES = ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Audi R8 Coupe"]


def tiny_image(path: Path, seed: int = 0) -> Path:
    """An 8x8 RGB image (format from the suffix: .jpg or .png) whose colour depends on `seed`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((seed * 53) % 256, (seed * 97) % 256, (seed * 191) % 256)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def write_split_dataset(root: Path, ds: DatasetConfig, classes: list[str], counts: dict[str, int],
                        relpath=lambda cname, key, i: f"{cname}/{cname}_{key}_{i}.jpg") -> dict[str, list]:
    """Images + CoOp split JSON for a split_json dataset config; `counts` = images per class per split."""
    img_root = root / ds.dataset_dir / ds.image_dir if ds.image_dir else root / ds.dataset_dir
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    n = 0
    for label, cname in enumerate(classes):
        for key in ("train", "val", "test"):
            for i in range(counts.get(key, 0)):
                rel = relpath(cname, key, i)
                tiny_image(img_root / rel, n)
                n += 1
                split[key].append([rel, label, cname])
    (root / ds.dataset_dir / ds.split_file).write_text(json.dumps(split, indent=4))
    return split


def make_dtd(root: Path, classes: list[str] | None = None, n_train: int = 4, n_val: int = 1,
             n_test: int = 2) -> dict[str, list]:
    """dtd/images/<class>/<class>_<split>_<i>.jpg + dtd/split_zhou_DescribableTextures.json."""
    return write_split_dataset(root, dataset_config("dtd"), classes or DTD_CLASSES,
                               {"train": n_train, "val": n_val, "test": n_test})


def make_stanford_cars(root: Path, n_train: int = 3, n_val: int = 1, n_test: int = 2) -> dict[str, list]:
    """stanford_cars/cars_{train,test}/<5-digit>.jpg, split paths relative to the dataset dir itself."""
    counter = iter(range(1, 10**5))

    def rel(cname: str, key: str, i: int) -> str:
        return f"cars_{'test' if key == 'test' else 'train'}/{next(counter):05d}.jpg"

    return write_split_dataset(root, dataset_config("stanford_cars"), CARS_CLASSES,
                               {"train": n_train, "val": n_val, "test": n_test}, rel)


def make_eurosat_raw(root: Path) -> dict[str, list]:
    """EuroSAT with *raw* folder names as class names (the rename map then gives CoOp's NEW_CNAMES)."""
    return write_split_dataset(root, dataset_config("eurosat"), ["AnnualCrop", "Forest", "SeaLake"],
                               {"train": 2, "test": 1})


def make_imagenet(root: Path, classes: dict[str, str] | None = None, n_train: int = 3, n_val: int = 2) -> dict:
    """imagenet/classnames.txt + imagenet/images/{train,val}/<wnid>/<wnid>_<i>.JPEG-like files (.jpg here)."""
    classes = classes or IMAGENET_CLASSES
    base = root / "imagenet"
    base.mkdir(parents=True, exist_ok=True)
    (base / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in classes.items()))
    n = 0
    for wnid in classes:
        for split, count in (("train", n_train), ("val", n_val)):
            for i in range(count):
                tiny_image(base / "images" / split / wnid / f"{wnid}_{i}.jpg", n)
                n += 1
    return {"wnids": sorted(classes), "names": [classes[w] for w in sorted(classes)]}


def make_fgvc(root: Path, variants: list[str] | None = None, counts: tuple[int, int, int] = (3, 2, 2)) -> dict:
    """fgvc_aircraft/variants.txt + images_variant_{train,val,test}.txt + images/<id>.jpg."""
    variants = variants or FGVC_VARIANTS
    base = root / "fgvc_aircraft"
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "variants.txt").write_text("\n".join(variants) + "\n")
    image_id, lists = 1000000, {}
    for key, count in zip(("train", "val", "test"), counts, strict=True):
        lines = []
        for v in variants:
            for _ in range(count):
                image_id += 1
                tiny_image(base / "images" / f"{image_id}.jpg", image_id)
                lines.append(f"{image_id} {v}")
        (base / f"images_variant_{key}.txt").write_text("\n".join(lines) + "\n")
        lists[key] = lines
    return lists


def make_run(root: Path, cache: Path, ds: DatasetConfig | str, *, setting: str = "fewshot", shots: int = 2,
             seed: int = 1, base_split: str = "floor", include_val: bool = False, **setting_kw) -> RunConfig:
    """A RunConfig (direct dataclass construction) whose data.root/cache_dir point at the test folders."""
    ds = dataset_config(ds) if isinstance(ds, str) else ds
    fraction = 0.8 if setting == "base2new" else 0.4
    st = SettingConfig(name=setting, base_split=base_split, option_fraction=setting_kw.pop("option_fraction", fraction),
                       **setting_kw)
    return RunConfig(dataset=ds, data=DataConfig(root=str(root), cache_dir=str(cache), include_val_in_test=include_val),
                     setting=st, shots=shots, seed=seed)


BIRDS = ["Zebra_finch", "blue_tit", "robin"]  # sorted case-sensitively: capitals first (as torchvision, CoOp)


def make_imagefolder(base: Path, classes: list[str] | None = None, counts: dict[str, int] | None = None,
                     split_dirs: bool = True) -> Path:
    """`<base>/{train,val,test}/<class>/<split>_<i>.png` (split_dirs, `counts` images per class per split) or
    `<base>/<class>/img_<i>.png` (`counts["all"]` per class); every class folder also holds a non-image file and a
    hidden image that readers must ignore."""
    classes = classes or BIRDS
    counts = counts or ({"train": 5, "val": 1, "test": 2} if split_dirs else {"all": 10})
    n = 0
    for cname in classes:
        for key, count in counts.items():
            folder = base / key / cname if split_dirs else base / cname
            for i in range(count):
                tiny_image(folder / f"{key if split_dirs else 'img'}_{i}.png", n)
                n += 1
            if count:
                (folder / "notes.txt").write_text("not an image")
                tiny_image(folder / ".hidden.png", 1)
    return base


def imagefolder_config(name: str, path: Path, **kw) -> DatasetConfig:
    """The conf/dataset/imagefolder.yaml template as a user would fill it in."""
    from dataclasses import replace

    return replace(dataset_config("imagefolder"), name=name, dataset_dir=name, path=str(path), **kw)
