"""Data in the forms users have, through the CLI on the tiny model (debug=fast): an image folder described by the
README's 3-line YAML (`--config-dir`) runs zero-shot, few-shot No-Thinking with a free-lunch evaluation, and
base-to-new to complete records; the data fingerprint decides skip / re-evaluate / retrain / error.

The three cells run once per module, two at a time, into one output root (~1 min on 2 cores).
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from data_fixtures import make_imagefolder, tiny_image
from helpers import TINY, cli, run_config

BIRDS = ["blue_tit", "finch", "owl", "robin", "wren"]
YAML = "name: birds\nlayout: imagefolder\nquestion: What type of bird is in the photo?\n"  # README "Your own dataset"
BASE = [o for o in TINY if not o.startswith("dataset=")] + ["dataset=birds", "shots=4", "debug=fast"]
CELLS = {
    "zeroshot": ["method=zeroshot"],
    "nothink": ["method=nothink", "eval.datasets=[birds,synthetic-colors]"],  # free lunch: another dataset too
    "base2new": ["method=nothink", "setting=base2new"],
}

SKIPPED = "already holds a complete result"  # clsrl_exp.run's skip line
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder_runs(shared, tmp_path_factory):
    """(workspace, {cell: CompletedProcess}); the image folder is `<workspace>/data_a/birds`, the user config folder
    `<workspace>/conf` (dataset/birds.yaml = the README's example)."""
    ws = tmp_path_factory.mktemp("imagefolder")
    make_imagefolder(ws / "data_a" / "birds", classes=BIRDS, counts={"train": 4, "test": 4})
    (ws / "conf" / "dataset").mkdir(parents=True)
    (ws / "conf" / "dataset" / "birds.yaml").write_text(YAML)
    cache = next(o for o in shared if o.startswith("paths.cache="))

    def one(name):
        return name, cli(["--config-dir", str(ws / "conf"), *args(name, ws / "data_a"), cache], ws / "out")

    with ThreadPoolExecutor(2) as pool:
        return ws, dict(pool.map(one, CELLS))


def args(cell: str, data_root: Path) -> list[str]:
    return [*BASE, *CELLS[cell], f"data.root={data_root}"]


def run_dir(ws: Path, cell: str, shared: list[str]) -> Path:
    cache = next(o for o in shared if o.startswith("paths.cache="))
    run, _ = run_config([*args(cell, ws / "data_a"), cache], ws / "out", config_dir=ws / "conf")
    return Path(run.run_dir)


def record(path: Path) -> dict:
    return json.loads((path / "result.json").read_text())


def test_an_image_folder_runs_every_protocol_to_complete_records(folder_runs, shared):
    ws, results = folder_runs
    for name, r in results.items():
        assert r.returncode == 0, (name, r.tail)
    zs, nt, b2n = (record(run_dir(ws, c, shared)) for c in CELLS)
    fp = zs["data"]["birds"]
    assert len(fp) == 64 and nt["data"]["birds"] == b2n["data"]["birds"] == fp
    assert [(e["dataset"], e["split"], e["n"]) for e in zs["evals"]] == [("birds", "test", 16)]
    assert zs["status"] == nt["status"] == b2n["status"] == "complete" and zs["train"] is None
    assert [(e["dataset"], e["split"]) for e in nt["evals"]] == [("birds", "test"), ("synthetic-colors", "test")]
    assert nt["train"]["steps"] == 2 and nt["train"]["examples"] == 20 and nt["train"]["data_fingerprint"] == fp
    assert {e["identity"]["data"] for e in nt["evals"]} == {fp, nt["data"]["synthetic-colors"]}
    assert [(e["split"], e["n"]) for e in b2n["evals"]] == [("base", 8), ("new", 12)]  # floor(5/2) = 2 base classes
    assert b2n["train"]["examples"] == 8  # 4 shots x the 2 base classes


def test_the_fingerprint_decides_skip_error_and_reevaluation(folder_runs, shared):
    """Moved data skips; a missing root is one clear error with the record untouched; a changed class list
    re-evaluates (the old evaluation is set aside, not deleted)."""
    ws, _ = folder_runs
    rdir = run_dir(ws, "zeroshot", shared)
    before = (rdir / "result.json").read_bytes()
    cache = next(o for o in shared if o.startswith("paths.cache="))
    conf = ["--config-dir", str(ws / "conf")]

    shutil.copytree(ws / "data_a", ws / "data_b")  # moved: same content, another root
    r = cli([*conf, *args("zeroshot", ws / "data_b"), cache], ws / "out")
    assert r.returncode == 0 and SKIPPED in r.stdout + r.stderr, r.tail
    assert (rdir / "result.json").read_bytes() == before

    r = cli([*conf, *args("zeroshot", ws / "gone"), cache], ws / "out")
    assert r.returncode == 3, r.tail
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: data root not found: {ws / 'gone'} (set data.root=... or CLSRL_DATA)"], r.tail
    assert "Traceback" not in r.stderr and (rdir / "result.json").read_bytes() == before
    assert not (rdir / "error.txt").exists()

    time.sleep(0.05)
    for key in ("train", "test"):  # the class list changes: owl -> owl_barn
        (ws / "data_b" / "birds" / key / "owl").rename(ws / "data_b" / "birds" / key / "owl_barn")
    r = cli([*conf, *args("zeroshot", ws / "data_b"), cache], ws / "out")
    assert r.returncode == 0 and SKIPPED not in r.stdout + r.stderr, r.tail
    old, new = json.loads(before), record(rdir)
    assert new["status"] == "complete" and new["data"]["birds"] != old["data"]["birds"]
    (entry,) = new["evals"]
    assert entry["identity"]["data"] == new["data"]["birds"] and entry["eval_hash"] != old["evals"][0]["eval_hash"]
    stale = json.loads((rdir / "stale" / old["data"]["birds"][:12] / "evals.json").read_text())
    assert stale == old["evals"]
    rows = [json.loads(x) for x in (rdir / "predictions.jsonl").read_text().splitlines()]
    assert {r["eval_hash"] for r in rows} == {old["evals"][0]["eval_hash"], entry["eval_hash"]}  # append-only


def test_changed_training_data_retrains_and_sets_the_old_model_aside(folder_runs, shared):
    ws, _ = folder_runs
    rdir = run_dir(ws, "nothink", shared)
    old = record(rdir)
    shutil.copytree(ws / "data_a", ws / "data_c")
    tiny_image(ws / "data_c" / "birds" / "train" / "robin" / "extra.png", 99)  # one more training image
    cache = next(o for o in shared if o.startswith("paths.cache="))
    r = cli(["--config-dir", str(ws / "conf"), *args("nothink", ws / "data_c"), cache], ws / "out")
    assert r.returncode == 0, r.tail
    assert "training data of birds changed" in r.stdout + r.stderr, r.tail
    new = record(rdir)
    assert new["status"] == "complete" and new["train"]["data_fingerprint"] == new["data"]["birds"]
    assert new["data"]["birds"] != old["data"]["birds"]
    assert new["data"]["synthetic-colors"] == old["data"]["synthetic-colors"]
    hashes = lambda rec: {e["eval_hash"] for e in rec["evals"]}
    assert len(new["evals"]) == 2 and not hashes(new) & hashes(old)  # both evaluations are of another model
    stale = rdir / "stale" / old["data"]["birds"][:12]
    assert (stale / "checkpoint" / "config.json").is_file() and (stale / "train.json").is_file()
    assert json.loads((stale / "result.json").read_text()) == old
    assert (rdir / "checkpoint" / "config.json").is_file()


def test_a_malformed_official_row_stops_the_cli_with_one_error(shared, tmp_path):
    data = tmp_path / "data" / "birds"
    make_imagefolder(data, classes=BIRDS[:2], counts={"train": 1, "test": 1})
    (data / "test.jsonl").write_text(
        json.dumps({"image": "test/finch/test_0.png", "label": "finch", "split": "test", "problem": "Q?"}) + "\n" +
        json.dumps({"image": "test/owl/test_0.png", "split": "test", "problem": "Q?"}) + "\n")
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "birds-official.yaml").write_text(
        "name: birds-official\nlayout: clsrl_official\ndataset_dir: birds\nfiles: {test: test.jsonl}\nquestion: Q?\n")
    cache = next(o for o in shared if o.startswith("paths.cache="))
    r = cli(["--config-dir", str(tmp_path / "conf"), *[o for o in TINY if not o.startswith("dataset=")],
             "dataset=birds-official", "method=zeroshot", "debug=fast", f"data.root={tmp_path / 'data'}", cache],
            tmp_path / "out", timeout=120)
    assert r.returncode == 3, r.tail
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: malformed row in {data / 'test.jsonl'}, line 2: field 'label' is missing (frozen test "
                      "rows need image, label, split and problem)"], r.tail
    assert not list((tmp_path / "out").rglob("result.json"))
