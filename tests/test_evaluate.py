"""Evaluation: a killed evaluation resumes with complete, duplicate-free predictions (the lines already written are
kept byte for byte); unreadable images are skipped and named; eval.prompt=train scores with the training template;
free lunch: tiny runs with eval.datasets=[synthetic-colors,synthetic-shapes] + zero-shot runs give the 2x2 transfer
table (accuracy - zero-shot accuracy) and its heatmap through `python -m clsrl_exp.report`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

try:
    from tests.conftest import REPO, TINY, cli, run_config
except ImportError:  # tests/ itself on sys.path
    from conftest import REPO, TINY, cli, run_config

from clsrl_exp.evaluate import PredictionLog, eval_template, evaluate_set

DATASETS = ["synthetic-colors", "synthetic-shapes"]




@pytest.fixture(scope="module")
def tiny(session_root, tiny_path):
    """(run config, model, processor) of the tiny model, loaded once."""
    import torch

    from clsrl_exp.models import load_model, load_processor

    torch.set_num_threads(1)
    run, _ = run_config([*TINY, "method=nothink"], session_root)
    return run, load_model(tiny_path, run.model, cuda=False), load_processor(tiny_path, run.model)


# ------------------------------------------------------------------------------------------------- prediction log
def _row(i: int, variant: str = "eval", split: str = "test") -> dict:
    return {"dataset": "d", "split": split, "prompt_variant": variant, "id": f"img/{i}.png", "label": "red",
            "output": "red", "lenient": True, "strict": False, "output_tokens": 1}


def test_prediction_log_is_append_only_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "sub" / "predictions.jsonl"
    log = PredictionLog(path)
    assert log.rows == {} and path.parent.is_dir()
    log.append([_row(0), _row(1)])
    log.append([_row(2), _row(0, variant="train")])
    first = path.read_bytes()
    assert first.count(b"\n") == 4

    with open(path, "ab") as fh:  # killed mid-write: half a JSON line, no newline
        fh.write(b'{"dataset": "d", "split": "test", "prompt_va')
    again = PredictionLog(path)
    assert path.read_bytes() == first  # the torn line is cut off the file, the rest kept byte for byte
    assert set(again.done("d", "test", "eval")) == {"img/0.png", "img/1.png", "img/2.png"}
    assert set(again.done("d", "test", "train")) == {"img/0.png"}
    assert again.done("d", "base", "eval") == {}

    again.append([_row(3)])
    assert path.read_bytes().startswith(first)  # appends never rewrite what is there
    assert len(PredictionLog(path).done("d", "test", "eval")) == 4


def test_prediction_log_reads_a_complete_file_unchanged(tmp_path):
    path = tmp_path / "p.jsonl"
    PredictionLog(path).append([_row(i) for i in range(3)])
    data = path.read_bytes()
    assert len(PredictionLog(path).rows) == 3 and path.read_bytes() == data


# ------------------------------------------------------------------------------------------------- kill + resume
KILL = ["method=zeroshot", "eval.limit=48", "eval.batch_size=8", "eval.cache_zeroshot=false",
        "eval.max_new_tokens=256"]  # ~0.5-1 s per batch of 8 on 2 cores: time to kill it between batches


@pytest.mark.slow
def test_killed_evaluation_resumes_complete_without_duplicates(shared, tmp_path):
    root = tmp_path / "out"
    args = [*TINY, *KILL, *shared]
    run, _ = run_config(args, root)
    run_dir = Path(run.run_dir)
    preds = run_dir / "predictions.jsonl"

    env = dict(os.environ, CLSRL_OUTPUTS=str(root))
    proc = subprocess.Popen([sys.executable, "-m", "clsrl_exp", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if preds.exists() and preds.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"evaluation ended before it could be killed:\n{proc.stderr.read()[-3000:]}"
        proc.kill()  # SIGKILL: no cleanup, no flush
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        proc.stderr.close()

    data = preds.read_bytes()
    prefix = data[: data.rfind(b"\n") + 1]  # the complete lines written before the kill
    n_before = prefix.count(b"\n")
    assert 2 <= n_before < 48, n_before
    rec = json.loads((run_dir / "result.json").read_text())
    assert rec["status"] == "running"  # the killed cell is not complete
    with open(preds, "ab") as fh:  # and a crash mid-write left half a line
        fh.write(b'{"dataset": "synthetic-colors", "split": "test", "prompt_variant": "ev')

    r = cli(args, root)
    assert r.returncode == 0, r.tail
    final = preds.read_bytes()
    assert final.startswith(prefix)  # lines from before the kill unchanged, byte for byte
    rows = [json.loads(x) for x in final.decode().splitlines()]  # every line parses: the torn one is gone
    keys = [(x["dataset"], x["split"], x["prompt_variant"], x["id"]) for x in rows]
    assert len(rows) == 48 and len(set(keys)) == 48
    assert len({x["id"] for x in rows}) == 48
    rec = json.loads((run_dir / "result.json").read_text())
    assert rec["status"] == "complete"
    (ev,) = rec["evals"]
    assert ev["n"] == 48 and ev["correct"] == sum(x["lenient"] for x in rows)
    # the resumed run scored only what was missing
    assert f"{48 - n_before} items ({n_before} already scored)" in r.stderr + r.stdout, r.tail


# ------------------------------------------------------------------------------------------------- bad images
def test_unreadable_and_missing_images_are_skipped_and_named(tiny, tmp_path):
    from clsrl_exp.data import EvalSet, eval_sets
    from clsrl_exp.evaluate import HFGenerator

    run, model, processor = tiny
    (test,) = eval_sets(run, run.dataset)
    picked = test.examples[:6]
    corrupt, missing = picked[1], picked[4]
    examples = []
    for ex in picked:
        dst = tmp_path / ex.id
        dst.parent.mkdir(parents=True, exist_ok=True)
        if ex is corrupt:
            dst.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        elif ex is not missing:
            shutil.copy(ex.image_path, dst)
        examples.append(type(ex)(ex.id, str(dst), ex.label, ex.options, ex.split))
    eval_set = EvalSet(test.dataset, test.split, test.question, examples)
    log = PredictionLog(tmp_path / "predictions.jsonl")
    gen = HFGenerator(model, processor, max_new_tokens=2)
    res = evaluate_set(gen, processor, eval_set, run.method, log, variant="eval", image_size=run.model.image_size,
                       batch_size=4, progress=False)
    rec = res.record()
    assert rec["skipped"] == 2 and rec["n"] == 4
    named = " ".join(rec["skipped_examples"])
    assert corrupt.id in named and missing.id in named
    scored = set(log.done(test.dataset, test.split, "eval"))
    assert scored == {ex.id for ex in picked} - {corrupt.id, missing.id}


def test_files_missing_from_the_split_are_counted(tiny, tmp_path):
    """Images listed in the split but absent on disk (EvalSet.missing) are counted as skipped and named too."""
    from clsrl_exp.data import EvalSet, eval_sets
    from clsrl_exp.evaluate import HFGenerator

    run, model, processor = tiny
    (test,) = eval_sets(run, run.dataset)
    eval_set = EvalSet(test.dataset, test.split, test.question, test.examples[:3], missing=["gone/a.png"])
    res = evaluate_set(HFGenerator(model, processor, max_new_tokens=2), processor, eval_set, run.method,
                       PredictionLog(tmp_path / "p.jsonl"), variant="eval", image_size=run.model.image_size,
                       batch_size=8, progress=False)
    assert (res.n, res.skipped) == (3, 1) and "gone/a.png" in res.skipped_examples[0]


# ------------------------------------------------------------------------------------------------- prompt variant
def test_eval_prompt_train_uses_the_training_template(tiny, shared, tmp_path):
    from clsrl_exp.config import identity_hash
    from clsrl_exp.data import eval_sets
    from clsrl_exp.run import evaluate
    from clsrl_exp.train.grpo import Device

    _, model, processor = tiny
    run, container = run_config([*TINY, "method=nothink", "eval.prompt=train", "eval.limit=4",
                                 "eval.max_new_tokens=2", *shared], tmp_path)
    assert run.eval.prompt == "train"
    m = run.method
    assert eval_template(m, "test", "train") == m.train_template == "{question}\n Please directly output the answer."
    assert eval_template(m, "test", "eval") == m.eval_templates["default"] != m.train_template
    results = evaluate(run, model, processor, eval_sets(run, run.dataset), identity_hash(container), Device(cuda=False),
                       "unused")
    assert [r.prompt_variant for r in results] == ["train"] and results[0].n == 4
    rows = [json.loads(x) for x in (Path(run.run_dir) / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["prompt_variant"] for r in rows} == {"train"}


def test_eval_prompt_train_feeds_the_training_text_to_the_model(tiny, tmp_path):
    """The text the generator receives with variant=train is the method's training prompt."""
    from clsrl_exp.data import eval_sets
    from clsrl_exp.evaluate import HFGenerator

    run, model, processor = tiny
    (test,) = eval_sets(run, run.dataset)
    seen = []

    class Spy(HFGenerator):
        def batches(self, items, image_size, batch_size):
            seen.extend(text for _, text in items)
            return super().batches(items, image_size, batch_size)

    for variant, suffix in (("train", "].\n Please directly output the answer.<|im_end|>"),
                            ("eval", "]. Please directly output the answer name.<|im_end|>")):
        seen.clear()
        evaluate_set(Spy(model, processor, max_new_tokens=1), processor, test, run.method,
                     PredictionLog(tmp_path / f"{variant}.jsonl"), variant=variant, image_size=run.model.image_size,
                     batch_size=8, limit=2, progress=False)
        assert len(seen) == 2 and all(suffix in t for t in seen), seen


# ------------------------------------------------------------------------------------------------- free lunch
FL_COMMON = [*TINY, "shots=4", "debug=fast"]


@pytest.mark.slow
def test_free_lunch_transfer_table_and_heatmap(shared, tmp_path):
    """Two multiruns (one Python process each, run side by side) give the four cells: No-Thinking trained on each
    dataset and tested on both, and the zero-shot reference on each dataset."""
    import pandas as pd

    root = tmp_path / "out"
    both = "eval.datasets=[synthetic-colors,synthetic-shapes]"
    common = [x for x in FL_COMMON if not x.startswith("dataset=")]
    sweeps = [["method=nothink", f"dataset={','.join(DATASETS)}", both, "sweep_name=fl-nothink"],
              ["method=zeroshot", f"dataset={','.join(DATASETS)}", "sweep_name=fl-zeroshot"]]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda s: cli(["-m", *common, *s, *shared], root), sweeps))
    for r in results:
        assert r.returncode == 0, r.tail
        assert "2 cells: 2 done, 0 skipped, 0 failed" in r.stdout, r.tail

    cells = [[f"dataset={d}", "method=nothink", both] for d in DATASETS] + [[f"dataset={d}", "method=zeroshot"]
                                                                          for d in DATASETS]
    acc = {}  # (method, trained on, evaluated on) -> accuracy, read from the records by hand
    for cell in cells:
        run, _ = run_config([*FL_COMMON, *cell, *shared], root)  # a multirun cell lands in the single-run dir
        rec = json.loads((Path(run.run_dir) / "result.json").read_text())
        assert rec["status"] == "complete"
        for ev in rec["evals"]:
            assert ev["split"] == "test" and ev["n"] == 16
            acc[(rec["run"]["method"], rec["run"]["dataset"], ev["dataset"])] = float(ev["accuracy"])
    assert len(acc) == 2 * 2 + 2  # 2 trained rows x 2 columns + 2 zero-shot references

    out = root / "report"
    r = cli([str(root), "--out", str(out)], None, module="clsrl_exp.report")
    assert r.returncode == 0, r.tail
    table = pd.read_csv(out / "transfer_nothink.csv", index_col=0)
    assert sorted(table.index) == DATASETS
    assert sorted(table.columns) == sorted([*DATASETS, "AVG"])
    for train_ds in DATASETS:
        expected = {col: acc[("nothink", train_ds, col)] - acc[("zeroshot", col, col)] for col in DATASETS}
        for col, value in expected.items():
            assert table.loc[train_ds, col] == pytest.approx(value, abs=1e-6), (train_ds, col)
        assert table.loc[train_ds, "AVG"] == pytest.approx(sum(expected.values()) / 2, abs=1e-6)
    png = (out / "transfer_nothink.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
