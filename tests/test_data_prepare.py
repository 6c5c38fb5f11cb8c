"""Fashion-MNIST idx -> CoOp layout: tiny idx files written here, plus one real conversion when the package exists."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import require
from PIL import Image

from clsrl_exp.config import dataset_config
from clsrl_exp.data import display_name, load_splits
from clsrl_exp.data.prepare import FASHION_CLASSES, main, prepare_fashion_mnist
from clsrl_exp.errors import DataError

REAL = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, magic: int, compress: bool) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)


def fake_source(folder: Path, n_train: int = 40, n_test: int = 20, compress: bool = True) -> dict:
    """idx files whose image i is filled with value i % 256 and labels cycle 0..9 (so class c = items c, c+10, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = np.repeat((np.arange(n) % 256).astype(np.uint8)[:, None, None], 28 * 28, axis=1).reshape(n, 28, 28)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{part}-images-idx3-ubyte", images, 2051, compress)
        write_idx(folder / f"{part}-labels-idx1-ubyte", labels, 2049, compress)
        out[part] = (images, labels)
    return out


@pytest.mark.parametrize("compress", [True, False])
def test_prepare_writes_coop_layout_read_by_the_real_config(tmp_path, compress, capsys):
    fake_source(tmp_path / "src", compress=compress)
    target = prepare_fashion_mnist(tmp_path / "data", tmp_path / "src", size=32, train_per_class=3, val_per_class=1,
                                   test_per_class=2)
    assert target == tmp_path / "data" / "fashion_mnist"
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in (target / "images").iterdir()) == sorted(
        ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"])
    ds = dataset_config("fashion-mnist")
    s = load_splits(ds, tmp_path / "data")
    assert s.classnames == list(FASHION_CLASSES)
    assert [display_name(c, ds) for c in s.classnames][0] == "T-shirt/top"
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 20)
    # first N per class in file order: class 1 = train items 1, 11, 21 (then 31 as val)
    assert [it.path for it in s.train if it.label == 1] == [f"Trouser/train_{i:05d}.png" for i in (1, 11, 21)]
    assert [it.path for it in s.val if it.label == 1] == ["Trouser/val_00031.png"]
    with Image.open(s.image_root / "Trouser/train_00011.png") as im:
        assert (im.mode, im.size) == ("RGB", (32, 32))
        assert np.asarray(im)[16, 16].tolist() == [11, 11, 11]
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]


def test_cli_prints_and_keeps_existing(tmp_path, capsys):
    fake_source(tmp_path / "src")
    args = ["fashion-mnist", "--root", str(tmp_path / "d"), "--source", str(tmp_path / "src"), "--size", "28",
            "--train-per-class", "2", "--test-per-class", "1"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    split = tmp_path / "d" / "fashion_mnist" / "split_fashion_mnist.json"
    assert len(json.loads(split.read_text())["train"]) == 20
    assert main(args[:-4] + ["--train-per-class", "1"]) == 0
    assert "already exists" in capsys.readouterr().out
    assert len(json.loads(split.read_text())["train"]) == 20  # nothing overwritten without --force
    assert main(args[:-4] + ["--train-per-class", "1", "--force"]) == 0
    assert len(json.loads(split.read_text())["train"]) == 10


def test_missing_and_malformed_source(tmp_path, capsys):
    with pytest.raises(DataError, match=rf"Fashion-MNIST file not found: {tmp_path}/none/train-images-idx3-ubyte"
                                        r"\[\.gz\] .*apt-get install -y dataset-fashion-mnist"):
        prepare_fashion_mnist(tmp_path / "d", tmp_path / "none")
    assert main(["fashion-mnist", "--root", str(tmp_path / "d"), "--source", str(tmp_path / "none")]) == 3
    assert "error: Fashion-MNIST file not found" in capsys.readouterr().err
    fake_source(tmp_path / "src", compress=False)
    bad = tmp_path / "src" / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + bad.read_bytes()[4:])
    with pytest.raises(DataError, match=rf"malformed idx file {bad}: expected magic 2049, got 2051"):
        prepare_fashion_mnist(tmp_path / "d", tmp_path / "src")
    short = tmp_path / "src" / "train-images-idx3-ubyte"
    short.write_bytes(short.read_bytes()[:-5])
    with pytest.raises(DataError, match=rf"malformed idx file {short}: header says \[40, 28, 28\]"):
        prepare_fashion_mnist(tmp_path / "d", tmp_path / "src")
    assert not (tmp_path / "d" / "fashion_mnist").exists()


def test_real_fashion_mnist(tmp_path):
    require(None if REAL.exists() else f"no {REAL}: apt-get install dataset-fashion-mnist (done by .ci/run)")
    prepare_fashion_mnist(tmp_path, REAL, size=56, train_per_class=30, test_per_class=10)
    s = load_splits(dataset_config("fashion-mnist"), tmp_path)
    assert (len(s.train), len(s.test)) == (300, 100)
    assert sorted({it.label for it in s.train}) == list(range(10))
    with Image.open(s.image_root / s.test[0].path) as im:
        arr = np.asarray(im)
    assert arr.shape == (56, 56, 3) and arr.std() > 10  # a real picture, not a flat fill
