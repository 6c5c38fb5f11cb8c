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
from helpers import REPO, TINY, cli, run_config

from clsrl_exp.evaluate import EvalTask, PredictionLog, evaluate_set
from clsrl_exp.generation.hf import HFGenerator
from clsrl_exp.prompts import eval_prompt

DATASETS = ["synthetic-colors", "synthetic-shapes"]


def task(eval_set, method, variant="eval") -> EvalTask:
    """An evaluation task over `eval_set` with the method's prompt for `variant` (a hash per variant)."""
    return EvalTask(eval_set, variant, eval_prompt(method, eval_set.split, variant), eval_hash=f"h-{variant}")


def gen(model, processor, max_new_tokens):
    return HFGenerator(model=model, processor=processor, max_new_tokens=max_new_tokens, greedy=True, num_workers=0)


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
    return {"eval_hash": f"h-{split}-{variant}", "dataset": "d", "split": split, "prompt_variant": variant,
            "id": f"img/{i}.png", "label": "red", "output": "red", "lenient": True, "strict": False,
            "output_tokens": 1}


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
    assert set(again.done("h-test-eval")) == {"img/0.png", "img/1.png", "img/2.png"}
    assert set(again.done("h-test-train")) == {"img/0.png"}
    assert again.done("h-base-eval") == {}

    again.append([_row(3)])
    assert path.read_bytes().startswith(first)  # appends never rewrite what is there
    assert len(PredictionLog(path).done("h-test-eval")) == 4


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
    keys = [(x["eval_hash"], x["dataset"], x["split"], x["prompt_variant"], x["id"]) for x in rows]
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
    res = evaluate_set(gen(model, processor, 2), processor, task(eval_set, run.method), log,
                       image_size=run.model.image_size, batch_size=4, progress=False)
    assert res.skipped == 2 and res.n == 4
    named = " ".join(res.skipped_examples)
    assert corrupt.id in named and missing.id in named
    scored = set(log.done("h-eval"))
    assert scored == {ex.id for ex in picked} - {corrupt.id, missing.id}


def test_files_missing_from_the_split_are_counted(tiny, tmp_path):
    """Images listed in the split but absent on disk (EvalSet.missing) are counted as skipped and named too."""
    from clsrl_exp.data import EvalSet, eval_sets

    run, model, processor = tiny
    (test,) = eval_sets(run, run.dataset)
    eval_set = EvalSet(test.dataset, test.split, test.question, test.examples[:3], missing=["gone/a.png"])
    res = evaluate_set(gen(model, processor, 2), processor, task(eval_set, run.method),
                       PredictionLog(tmp_path / "p.jsonl"), image_size=run.model.image_size, batch_size=8,
                       progress=False)
    assert (res.n, res.skipped) == (3, 1) and "gone/a.png" in res.skipped_examples[0]


# ------------------------------------------------------------------------------------------------- prompt variant
def test_eval_prompt_train_uses_the_training_template(tiny, shared, tmp_path):
    from clsrl_exp.cells import requested_evals
    from clsrl_exp.data import eval_sets
    from clsrl_exp.identity import train_hash
    from clsrl_exp.runtime import Device

    _, model, processor = tiny
    run, container = run_config([*TINY, "method=nothink", "eval.prompt=train", "eval.limit=4",
                                 "eval.max_new_tokens=2", *shared], tmp_path)
    assert run.eval.prompt == "train"
    m = run.method
    assert eval_prompt(m, "test", "train").template == m.train_template == (
        "{question}\n Please directly output the answer.")
    assert eval_prompt(m, "test", "eval").template == m.eval_templates["default"] != m.train_template
    (spec,) = requested_evals(run, train_hash(container))
    (es,) = eval_sets(run, run.dataset)
    tasks = [EvalTask(es, spec.variant, spec.prompt, spec.eval_hash)]
    from clsrl_exp.evaluate import evaluate_tasks

    results = evaluate_tasks(run, HFGenerator, model, processor, tasks, train_hash(container), Device(cuda=False),
                             "unused")
    assert [r.prompt_variant for r in results] == ["train"] and results[0].n == 4
    rows = [json.loads(x) for x in (Path(run.run_dir) / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["prompt_variant"] for r in rows} == {"train"}


def test_eval_prompt_train_feeds_the_training_text_to_the_model(tiny, tmp_path):
    """The text the generator receives with variant=train is the method's training prompt."""
    from clsrl_exp.data import eval_sets

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
        evaluate_set(Spy(model=model, processor=processor, max_new_tokens=1, greedy=True, num_workers=0), processor,
                     task(test, run.method, variant), PredictionLog(tmp_path / f"{variant}.jsonl"),
                     image_size=run.model.image_size, batch_size=8, limit=2, progress=False)
        assert len(seen) == 2 and all(suffix in t for t in seen), seen


def test_worker_chunks_keep_the_callers_batches_unreadable_items_included(tiny, tmp_path):
    """With preprocessing workers (the GPU path) a generation batch is exactly a run of `batch_size` items as the
    caller cut them (sharded evaluation deals whole batches to ranks): 20 items, batch 6 -> 6, 6, 6, 2, even when
    an image in the first batch cannot be read."""
    from dataclasses import replace

    from clsrl_exp.data import eval_sets
    from clsrl_exp.evaluate import chat_texts

    run, model, processor = tiny
    (test,) = eval_sets(run, run.dataset)
    examples = list(test.examples[:20])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    examples[2] = replace(examples[2], image_path=str(broken))
    texts = chat_texts(processor, examples, eval_prompt(run.method, test.split, "eval"), test.question)
    g = HFGenerator(model=model, processor=processor, max_new_tokens=1, greedy=True, num_workers=1)
    items = list(zip(examples, texts, strict=True))
    sizes = [(len(exs), len(bad)) for exs, _, bad in g.batches(items, run.model.image_size, 6)]
    assert sizes == [(5, 1), (6, 0), (6, 0), (2, 0)]


# ------------------------------------------------------------------------------------------------- free lunch
FL_COMMON = [*TINY, "shots=4", "debug=fast"]


BOTH = "eval.datasets=[synthetic-colors,synthetic-shapes]"
FL_SWEEPS = [["method=nothink", f"dataset={','.join(DATASETS)}", BOTH, "sweep_name=fl-nothink"],
             ["method=zeroshot", f"dataset={','.join(DATASETS)}", "sweep_name=fl-zeroshot"]]


def _free_lunch(root, shared):
    """The free-lunch grid as two multiruns (one Python process each, run side by side): No-Thinking trained on
    each dataset and tested on both, and the zero-shot reference on each dataset. Returns the CLI results."""
    common = [x for x in FL_COMMON if not x.startswith("dataset=")]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda s: cli(["-m", *common, *s, *shared], root), FL_SWEEPS))


def _report(root):
    import pandas as pd

    out = root / "report"
    r = cli([str(root), "--out", str(out)], None, module="clsrl_exp.report")
    assert r.returncode == 0, r.tail
    return out, pd.read_csv(out / "transfer_nothink.csv", index_col=0)


@pytest.fixture(scope="module")
def free_lunch_alone(shared, tmp_path_factory):
    root = tmp_path_factory.mktemp("fl") / "out"
    return root, _free_lunch(root, shared)


@pytest.mark.slow
def test_free_lunch_transfer_table_and_heatmap(free_lunch_alone, shared):
    root, results = free_lunch_alone
    for r in results:
        assert r.returncode == 0, r.tail
        assert "2 cells: 2 done, 0 skipped, 0 failed" in r.stdout, r.tail

    cells = [[f"dataset={d}", "method=nothink", BOTH] for d in DATASETS] + [[f"dataset={d}", "method=zeroshot"]
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

    out, table = _report(root)
    assert sorted(table.index) == DATASETS
    assert sorted(table.columns) == sorted([*DATASETS, "AVG"])
    for train_ds in DATASETS:
        expected = {col: acc[("nothink", train_ds, col)] - acc[("zeroshot", col, col)] for col in DATASETS}
        for col, value in expected.items():
            assert table.loc[train_ds, col] == pytest.approx(value, abs=1e-6), (train_ds, col)
        assert table.loc[train_ds, "AVG"] == pytest.approx(sum(expected.values()) / 2, abs=1e-6)
    png = (out / "transfer_nothink.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


@pytest.mark.slow
def test_free_lunch_after_the_fewshot_grid_reuses_every_checkpoint(free_lunch_alone, shared, tmp_path):
    """The paper-style grid (zero-shot + No-Thinking, own dataset) and then the free-lunch grid: each (method,
    dataset) is trained once, the second grid only evaluates the missing test sets, and the transfer table equals
    the one of the free-lunch grid run on its own."""
    root = tmp_path / "out"
    common = [x for x in FL_COMMON if not x.startswith("dataset=")]
    first = cli(["-m", *common, "method=zeroshot,nothink", f"dataset={','.join(DATASETS)}", "sweep_name=grid",
                 *shared], root)
    assert first.returncode == 0 and "4 cells: 4 done, 0 skipped, 0 failed" in first.stdout, first.tail
    trained = {}
    for d in DATASETS:
        run, _ = run_config([*FL_COMMON, f"dataset={d}", "method=nothink", BOTH, *shared], root)
        rec = json.loads((Path(run.run_dir) / "result.json").read_text())
        assert [e["dataset"] for e in rec["evals"]] == [d]  # the grid evaluated its own dataset only
        trained[d] = (Path(run.run_dir) / "train.json", (Path(run.run_dir) / "train.json").stat().st_mtime_ns,
                      rec["train"])

    second = _free_lunch(root, shared)
    for r in second:
        assert r.returncode == 0, r.tail
    nothink = second[0].stdout + second[0].stderr
    assert nothink.count("training already finished") == 2, second[0].tail  # no cell trained again
    assert "2 cells: 0 done, 2 skipped, 0 failed" in second[1].stdout, second[1].tail  # zero-shot: all there
    for d, (train_json, mtime, summary) in trained.items():
        run, _ = run_config([*FL_COMMON, f"dataset={d}", "method=nothink", BOTH, *shared], root)
        rec = json.loads((Path(run.run_dir) / "result.json").read_text())
        assert train_json.stat().st_mtime_ns == mtime and rec["train"] == summary
        assert sorted(e["dataset"] for e in rec["evals"]) == DATASETS
    _, table = _report(root)
    _, alone = _report(free_lunch_alone[0])
    assert table.equals(alone), (table, alone)
