"""CoOp layout readers through the real conf/dataset/*.yaml files, bad-input messages, synthetic datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_fixtures import (
    CARS_CLASSES,
    DTD_CLASSES,
    FGVC_VARIANTS,
    make_dtd,
    make_eurosat_raw,
    make_fgvc,
    make_imagenet,
    make_stanford_cars,
    tiny_image,
)
from PIL import Image

from clsrl_exp.config import CONF_DIR, dataset_config
from clsrl_exp.data import FORMATS, display_name, ensure_dataset, load_image, load_splits
from clsrl_exp.errors import ConfigError, DataError


# ----------------------------------------------------------------------------------------------------- configs
def test_all_dataset_configs_load_with_paper_epochs_and_questions():
    names = sorted(p.stem for p in (CONF_DIR / "dataset").glob("*.yaml"))
    assert len(names) == 15  # the 11 CoOp datasets, 2 synthetic, Fashion-MNIST, the imagefolder template
    for name in names:
        ds = dataset_config(name)
        assert ds.name == name and ds.layout in FORMATS
        assert (CONF_DIR / "dataset" / f"{name}.yaml").read_text().startswith("#")
    assert {n: dataset_config(n).epochs for n in ("imagenet", "sun397", "eurosat", "dtd")} == {
        "imagenet": 10, "sun397": 25, "eurosat": 100, "dtd": 50}
    assert dataset_config("ucf101").question == "What actions is the person performing in the photo?"
    assert dataset_config("stanford_cars").image_dir == ""
    assert dataset_config("synthetic-shapes").synthetic.kind == "shapes"


def test_rename_maps_give_coop_display_names(tmp_path):
    euro, cal = dataset_config("eurosat"), dataset_config("caltech101")
    assert [display_name(n, cal) for n in ("Faces", "airplanes", "car_side", "face")] == [
        "face", "airplane", "car side", "face"]
    assert display_name("Annual Crop Land", euro) == "Annual Crop Land"  # released json: already renamed
    make_eurosat_raw(tmp_path)
    splits = load_splits(euro, tmp_path)
    assert [display_name(c, euro) for c in splits.classnames] == ["Annual Crop Land", "Forest", "Sea or Lake"]


# ----------------------------------------------------------------------------------------------------- layouts
def test_split_json_dtd(tmp_path):
    make_dtd(tmp_path, n_train=4, n_val=1, n_test=2)
    s = load_splits(dataset_config("dtd"), tmp_path)
    assert s.classnames == DTD_CLASSES
    assert (len(s.train), len(s.val), len(s.test)) == (20, 5, 10)
    assert s.image_root == (tmp_path / "dtd" / "images").resolve()
    assert s.train[0].path == "banded/banded_train_0.jpg" and s.train[-1].label == 4
    assert all((s.image_root / it.path).is_file() for it in s.train + s.val + s.test)
    assert len(s.fingerprint) == 64


def test_split_json_stanford_cars_paths_relative_to_dataset_dir(tmp_path):
    make_stanford_cars(tmp_path)
    s = load_splits(dataset_config("stanford_cars"), tmp_path)
    assert s.image_root == (tmp_path / "stanford_cars").resolve()
    assert s.classnames == CARS_CLASSES
    assert all(it.path.startswith("cars_train/") for it in s.train + s.val)
    assert all(it.path.startswith("cars_test/") for it in s.test)
    assert all((s.image_root / it.path).is_file() for it in s.test)


def test_imagenet_labels_follow_sorted_wnid_folders(tmp_path):
    info = make_imagenet(tmp_path, n_train=3, n_val=2)
    s = load_splits(dataset_config("imagenet"), tmp_path)
    assert s.classnames == info["names"] == ["tench", "goldfish", "great white shark"]
    assert (len(s.train), len(s.val), len(s.test)) == (9, 0, 6)
    assert s.train[0].path == "train/n01440764/n01440764_0.jpg" and s.train[0].label == 0
    assert {it.label for it in s.test if it.path.startswith("val/n01484850/")} == {2}
    assert all((s.image_root / it.path).is_file() for it in s.train + s.test)


def test_fgvc_aircraft_variant_lists(tmp_path):
    lists = make_fgvc(tmp_path, counts=(3, 2, 1))
    s = load_splits(dataset_config("fgvc_aircraft"), tmp_path)
    assert s.classnames == FGVC_VARIANTS
    assert (len(s.train), len(s.val), len(s.test)) == (15, 10, 5)
    first_id, first_variant = lists["train"][0].split(" ", 1)
    assert s.train[0].path == f"{first_id}.jpg" and s.train[0].classname == first_variant
    by_name = {it.classname: it.label for it in s.train}
    assert by_name["F/A-18"] == 2 and by_name["Cessna 172"] == 3
    assert all((s.image_root / it.path).is_file() for it in s.test)


# ----------------------------------------------------------------------------------------------------- bad input
def _dtd_json(tmp_path: Path, text: str) -> Path:
    make_dtd(tmp_path)
    path = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    path.write_text(text)
    return path


def test_missing_root(tmp_path, monkeypatch):
    msg = rf"data root not found: {tmp_path}/nope \(set data.root=\.\.\. or CLSRL_DATA\)"
    with pytest.raises(DataError, match=msg):
        load_splits(dataset_config("dtd"), tmp_path / "nope")
    monkeypatch.delenv("CLSRL_DATA", raising=False)
    with pytest.raises(DataError, match="data root not set.*CLSRL_DATA"):
        load_splits(dataset_config("dtd"), None)
    monkeypatch.setenv("CLSRL_DATA", str(tmp_path))
    make_dtd(tmp_path)
    assert len(load_splits(dataset_config("dtd"), None).classnames) == 5


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DataError, match=rf"dataset folder not found: {tmp_path}/caltech-101 .*'caltech-101/'.*"
                                        r"CoOp's DATASETS.md"):
        load_splits(dataset_config("caltech101"), tmp_path)


def test_missing_split_file(tmp_path):
    (tmp_path / "food-101" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=rf"split file not found: {tmp_path}/food-101/split_zhou_Food101.json"):
        load_splits(dataset_config("food101"), tmp_path)


@pytest.mark.parametrize(("text", "expected"), [
    ("{not json", r"split file malformed: .*split_zhou_DescribableTextures.json is not valid JSON"),
    ("[1, 2]", r"split file malformed: .*should hold a JSON object"),
    ('{"train": [], "test": []}', r"split file malformed: .*json has no 'val' key"),
    ('{"train": {}, "val": [], "test": []}', r"'train' should be a list"),
    ('{"train": [["a.jpg", 0, "x"], ["b.jpg", "zero", "y"]], "val": [], "test": []}',
     r"entry train\[1\] should be \[relative_path, int_label, classname\], got \[\"b.jpg\", \"zero\", \"y\"\]"),
    ('{"train": [["a.jpg", 0]], "val": [], "test": []}', r"entry train\[0\] should be"),
    ('{"train": [["a.jpg", 0, "x"], ["b.jpg", 0, "y"]], "val": [], "test": []}',
     r"inconsistent labels in .*train\[1\] gives label 0 the class name 'y'"),
    ('{"train": [["a.jpg", 0, "x"], ["b.jpg", 2, "y"]], "val": [], "test": []}', r"must be 0..C-1 without gaps"),
    ('{"train": [["a.jpg", 0, "x"]], "val": [], "test": []}', r"defines 1 class\(es\); .*at least 2"),
])
def test_malformed_split_file(tmp_path, text, expected):
    path = _dtd_json(tmp_path, text)
    with pytest.raises(DataError, match=expected) as e:
        load_splits(dataset_config("dtd"), tmp_path)
    assert str(path) in str(e.value)


def test_imagenet_and_fgvc_bad_input(tmp_path):
    make_imagenet(tmp_path)
    names = tmp_path / "imagenet" / "classnames.txt"
    names.write_text("n01440764 tench\n")
    with pytest.raises(DataError, match=rf"{names} has no class name for wnid folder\(s\) \['n01443537'"):
        load_splits(dataset_config("imagenet"), tmp_path)
    names.unlink()
    with pytest.raises(DataError, match=rf"ImageNet class list not found: {names}"):
        load_splits(dataset_config("imagenet"), tmp_path)
    make_fgvc(tmp_path)
    lst = tmp_path / "fgvc_aircraft" / "images_variant_val.txt"
    lst.write_text("1234567 Boeing 999\n")
    with pytest.raises(DataError, match=rf"malformed line 1 in {lst}: .*'1234567 Boeing 999'"):
        load_splits(dataset_config("fgvc_aircraft"), tmp_path)
    lst.unlink()
    with pytest.raises(DataError, match=rf"FGVCAircraft split list not found: {lst}"):
        load_splits(dataset_config("fgvc_aircraft"), tmp_path)


def test_unknown_layout_is_a_config_error(tmp_path):
    ds = dataset_config("dtd")
    ds.layout = "coco"
    with pytest.raises(ConfigError, match="unknown dataset.layout 'coco'"):
        load_splits(ds, tmp_path)


# ----------------------------------------------------------------------------------------------------- images
def test_load_image_resizes_to_rgb_square(tmp_path):
    p = tmp_path / "g.png"
    Image.new("L", (10, 6), 77).save(p)
    im = load_image(str(p), 32)
    assert (im.mode, im.size) == ("RGB", (32, 32))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=rf"image missing or unreadable: {bad}"):
        load_image(str(bad), 32)
    assert tiny_image(tmp_path / "t.jpg").is_file()


# ----------------------------------------------------------------------------------------------------- synthetic
@pytest.mark.parametrize("name", ["synthetic-colors", "synthetic-shapes"])
def test_synthetic_generates_on_first_use_and_is_deterministic(tmp_path, name):
    ds = dataset_config(name)
    ds.synthetic.n_train_per_class, ds.synthetic.n_test_per_class = 6, 3
    ensure_dataset(ds, tmp_path / "a")  # root is created for synthetic data
    s = load_splits(ds, tmp_path / "a")
    expected = ["red", "green", "blue", "yellow"] if "colors" in name else ["circle", "square", "triangle", "cross"]
    assert s.classnames == expected
    assert (len(s.train), len(s.val), len(s.test)) == (24, 0, 12)
    assert s.train[0].path == f"{expected[0]}/{expected[0]}_train_0.png"
    with Image.open(s.image_root / s.test[-1].path) as im:
        assert (im.mode, im.size) == ("RGB", (56, 56))
    ensure_dataset(ds, tmp_path / "a")  # second call: no-op
    ensure_dataset(ds, tmp_path / "b")
    a, b = tmp_path / "a" / ds.dataset_dir, tmp_path / "b" / ds.dataset_dir
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_synthetic_images_differ_by_class(tmp_path):
    import numpy as np

    ds = dataset_config("synthetic-colors")
    ds.synthetic.n_train_per_class, ds.synthetic.n_test_per_class = 10, 0
    ensure_dataset(ds, tmp_path)
    s = load_splits(ds, tmp_path)
    means = {}
    for it in s.train:
        means.setdefault(it.classname, []).append(np.asarray(Image.open(s.image_root / it.path)).mean(axis=(0, 1)))
    red, blue = np.mean(means["red"], axis=0), np.mean(means["blue"], axis=0)
    assert red[0] > red[2] and blue[2] > blue[0]


def test_synthetic_refuses_foreign_folder(tmp_path):
    ds = dataset_config("synthetic-shapes")
    (tmp_path / ds.dataset_dir).mkdir()
    with pytest.raises(DataError, match=rf"dataset folder {tmp_path}/synthetic_shapes exists but has no "
                                        r"split_synthetic_shapes.json"):
        ensure_dataset(ds, tmp_path)


def test_synthetic_race_loser_uses_winners_copy(tmp_path, monkeypatch):
    from clsrl_exp.data import synthetic

    ds = dataset_config("synthetic-colors")
    ds.synthetic.n_train_per_class, ds.synthetic.n_test_per_class = 1, 1
    real_generate = synthetic.generate

    def racing_generate(spec, out_dir, split_file, image_dir="images"):
        real_generate(spec, tmp_path / "synthetic_colors", split_file, image_dir)  # the other process wins
        (tmp_path / "synthetic_colors" / "winner").write_text("1")
        return real_generate(spec, out_dir, split_file, image_dir)

    monkeypatch.setattr(synthetic, "generate", racing_generate)
    ensure_dataset(ds, tmp_path)
    assert (tmp_path / "synthetic_colors" / "winner").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic_colors"]  # the loser's temp dir is gone
    assert len(load_splits(ds, tmp_path).train) == 4


def test_synthetic_json_is_coop_format(tmp_path):
    ds = dataset_config("synthetic-colors")
    ds.synthetic.n_train_per_class, ds.synthetic.n_test_per_class = 1, 1
    ensure_dataset(ds, tmp_path)
    data = json.loads((tmp_path / "synthetic_colors" / "split_synthetic_colors.json").read_text())
    assert set(data) == {"train", "val", "test"} and data["val"] == []
    assert data["test"][3] == ["yellow/yellow_test_0.png", 3, "yellow"]
