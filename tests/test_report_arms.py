"""The report's arms beyond Table 5: Qwen2-VL-7B (v6 Tables 7/12, Think-After-Answer), open-set (v6 Table 11),
prompt variants as rows of their own (cross-prompt, empty-think) and the rule-based think/answer consistency table;
hand-made records and prediction logs, every expected value computed by hand below."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from helpers import one_row

from clsrl_exp.report import build_report, paper, tables
from clsrl_exp.report.__main__ import main

M2B, M7B = "qwen2vl-2b", "qwen2vl-7b"
OPTS = ["banded", "zigzagged", "marbled"]


def _write(root: Path, name: str, method: str, dataset: str, seed: int, evals: list[dict], *, model=M2B,
           setting="fewshot", rows: list[dict] = ()) -> Path:
    """A schema-2 record (+ its prediction log) under root/name; evals: dicts with dataset, split, accuracy and
    optionally prompt_variant, eval_hash, classes."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    full = [{"split": "test", "prompt_variant": "eval", "n": 100, "correct": 0, "correct_strict": 0, "skipped": 0,
             "accuracy_strict": ev["accuracy"], **ev} for ev in evals]
    rec = {"schema": 2, "status": "complete", "identity_hash": name.replace("/", "-"), "run_dir": str(run_dir),
           "run": {"method": method, "model": model, "dataset": dataset, "setting": setting, "shots": 4,
                   "seed": seed},
           "evals": full, "train": {"kind": "grpo", "steps": 10, "wall_s": 60.0}}
    (run_dir / "result.json").write_text(json.dumps(rec))
    if rows:
        (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def _pred(eval_hash: str, output: str, label: str, lenient: bool, options=OPTS, **extra) -> dict:
    row = {"eval_hash": eval_hash, "dataset": "dtd", "split": "test", "prompt_variant": "eval", "id": output[:20],
           "label": label, "output": output, "lenient": lenient, "strict": lenient, "output_tokens": 9, **extra}
    if options is not None:
        row["options"] = list(options)
    return row


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("arms")
    # Tables 7/12: every 7B arm 1 point above the paper on every dataset; adaptive on two datasets only
    for method in ("clsrl", "think-after-answer", "nothink"):
        for ds, value in paper.FEWSHOT_7B[method].items():
            _write(root, f"7b/{method}/{ds}", method, ds, 1, [{"dataset": ds, "accuracy": value + 1.0}], model=M7B)
    for ds in ("dtd", "eurosat"):
        _write(root, f"7b/adaptive/{ds}", "adaptive", ds, 1,
               [{"dataset": ds, "accuracy": paper.FEWSHOT_7B["adaptive"][ds]}], model=M7B)
    # Table 11 (open-set): zero-shot on all five datasets at the paper's numbers, clsrl on two
    for ds, value in paper.OPEN["zeroshot"].items():
        _write(root, f"open/zeroshot/{ds}", "zeroshot", ds, 1, [{"dataset": ds, "accuracy": value}], setting="open")
    _write(root, "open/clsrl/imagenet", "clsrl", "imagenet", 1, [{"dataset": "imagenet", "accuracy": 60.0}],
           setting="open")
    flowers = ["pink primrose", "rose", "sunflower"]
    _write(root, "open/clsrl/oxford_flowers", "clsrl", "oxford_flowers", 1,
           [{"dataset": "oxford_flowers", "accuracy": 50.0, "eval_hash": "o1", "classes": flowers}], setting="open",
           rows=[_pred("o1", "<think>Yellow petals: a sunflower.</think><answer>sunflower</answer>", "sunflower",
                       True, options=[], dataset="oxford_flowers"),
                 _pred("o1", "<think>Red petals, a rose.</think><answer>pink primrose</answer>", "sunflower", False,
                       options=[], dataset="oxford_flowers")])
    # one clsrl checkpoint (dtd, seed 1) evaluated with its own prompt, the No-Thinking prompt (cross-prompt), an
    # empty think block (empty-think) and on another dataset; seed 2 with its own prompt only
    _write(root, "fs/clsrl/dtd/s1", "clsrl", "dtd", 1, [
        {"dataset": "dtd", "accuracy": 60.0, "eval_hash": "e1"},
        {"dataset": "dtd", "accuracy": 50.0, "eval_hash": "e1x", "prompt_variant": "empty-think"},
        {"dataset": "dtd", "accuracy": 72.0, "eval_hash": "e1n", "prompt_variant": "nothink"},
        {"dataset": "eurosat", "accuracy": 40.0, "eval_hash": "e3"},
    ], rows=[
        _pred("e1", "<think>Stripes in bands: banded.</think><answer>banded</answer>", "banded", True),  # agree
        _pred("e1", "<think>Not marbled; the lines zigzag, so zigzagged.</think><answer>zigzagged</answer>",
              "banded", False),  # agree (marbled is negated), wrong
        _pred("e1", "<think>It looks marbled.</think><answer>banded</answer>", "banded", True),  # disagree, right
        _pred("e1", "<think>Hard to tell.</think><answer>marbled</answer>", "banded", False),  # no class, wrong
        _pred("e1", "<think>Banded, not zigzagged.</think><answer>zigzagged</answer>", "zigzagged", True),  # dis.
        _pred("e1", "marbled", "marbled", True),  # no think block: not analysed
        _pred("e1", "<think>banded</think><answer>banded</answer>", "banded", True, options=None),  # no options
        _pred("e1x", "<answer>banded</answer>", "banded", True, prefill="<think></think>",
              prompt_variant="empty-think"),  # the forced empty block names nothing
        _pred("e1x", "<think>marbled</think><answer>marbled</answer>", "banded", False, prefill="<think></think>",
              prompt_variant="empty-think"),  # a second, written think block: agree
        _pred("e1n", "banded", "banded", True, prompt_variant="nothink"),
        _pred("e3", "<think>a river</think><answer>River</answer>", "River", True, dataset="eurosat",
              options=["River", "Forest"]),  # another dataset: not in the own-dataset analysis
    ])
    _write(root, "fs/clsrl/dtd/s2", "clsrl", "dtd", 2, [{"dataset": "dtd", "accuracy": 80.0, "eval_hash": "e2"}],
           rows=[_pred("e2", "<think>banded</think><answer>banded</answer>", "banded", True)])
    _write(root, "fs/nothink/dtd/s1", "nothink", "dtd", 1, [{"dataset": "dtd", "accuracy": 75.0, "eval_hash": "n1"}],
           rows=[_pred("n1", "banded", "banded", True)])
    return root


@pytest.fixture(scope="module")
def report(runs):
    return build_report([runs])


@pytest.fixture(scope="module")
def out(runs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rep") / "report"
    assert main([str(runs), "--out", str(path)]) == 0
    return path


# ------------------------------------------------------------------------------------------------ paper data
def test_paper_7b_and_open_averages_recompute():
    for method, printed in paper.FEWSHOT_7B_AVERAGE.items():
        assert round(sum(paper.FEWSHOT_7B[method].values()) / 4, 2) == printed, method
    for method, printed in paper.OPEN_AVERAGE.items():
        assert round(sum(paper.OPEN[method].values()) / 5, 2) == printed, method
    assert paper.FEWSHOT_7B["think-after-answer"] == {"dtd": 76.29, "eurosat": 62.95, "oxford_flowers": 94.84,
                                                      "stanford_cars": 89.32}
    assert paper.OPEN["nothink"]["oxford_pets"] == 86.07 and paper.OPEN["clsrl"]["oxford_pets"] == 89.94


# ------------------------------------------------------------------------------------------------ Tables 7/12
def test_7b_rows_sit_beside_tables_7_12(report):
    fs = report.fewshot
    r = one_row(fs, model=M7B, method="think-after-answer", dataset="eurosat")
    assert (r["mean"], r["paper"]) == (63.95, 62.95) and r["diff"] == pytest.approx(1.0)
    avg = one_row(fs, model=M7B, method="think-after-answer", dataset="Average")
    assert avg["paper"] == 80.85 and avg["n_datasets"] == 4 and avg["mean"] == pytest.approx(81.85)
    assert one_row(fs, model=M7B, method="clsrl", dataset="Average")["paper"] == 77.29  # the printed one
    partial = one_row(fs, model=M7B, method="adaptive", dataset="Average")  # two datasets: the paper's mean over them
    assert partial["paper"] == pytest.approx((79.60 + 56.62) / 2) and partial["diff"] == pytest.approx(0.0)
    wide = tables.fewshot_wide(fs, M7B, 4)
    order = list(wide["method"])
    assert order.index("clsrl") < order.index("think-after-answer") < order.index("nothink") < order.index(
        "adaptive")  # clsrl_exp.report.paper.METHODS order
    assert one_row(wide, method="think-after-answer (paper)")["stanford_cars"] == 89.32


# ------------------------------------------------------------------------------------------------ Table 11
def test_open_set_table_beside_table_11(report):
    op = report.open
    assert set(op["model"]) == {M2B} and "imagenet" in set(op["dataset"])
    zs = one_row(op, method="zeroshot", dataset="Average")
    assert zs["paper"] == 52.63 and zs["mean"] == pytest.approx(52.632) and zs["n_datasets"] == 5
    r = one_row(op, method="clsrl", dataset="imagenet")
    assert (r["mean"], r["paper"]) == (60.0, 54.84) and r["diff"] == pytest.approx(5.16)
    avg = one_row(op, method="clsrl", dataset="Average")  # imagenet + flowers: the paper's mean over those two
    assert avg["mean"] == 55.0 and avg["paper"] == pytest.approx((54.84 + 67.64) / 2)
    assert "open" not in set(report.fewshot.get("setting", pd.Series(dtype=str)))  # never in the few-shot table
    assert not ((report.fewshot["model"] == M2B) & (report.fewshot["dataset"] == "imagenet")).any()


# ------------------------------------------------------------------------------------------------ variants
def test_cross_prompt_and_empty_think_are_rows_of_their_own(report):
    fs = report.fewshot
    own = one_row(fs, model=M2B, method="clsrl", dataset="dtd")
    assert (own["mean"], own["n_seeds"], own["paper"]) == (70.0, 2, 69.92)
    assert own["std"] == pytest.approx(math.sqrt(200))
    cross = one_row(fs, model=M2B, method="clsrl [nothink]", dataset="dtd")
    empty = one_row(fs, model=M2B, method="clsrl [empty-think]", dataset="dtd")
    assert (cross["mean"], cross["n_seeds"], empty["mean"], empty["n_seeds"]) == (72.0, 1, 50.0, 1)
    assert math.isnan(cross["paper"]) and math.isnan(empty["paper"])  # never compared with the paper
    assert one_row(fs, model=M2B, method="nothink", dataset="dtd")["mean"] == 75.0  # not mixed with clsrl [nothink]


# ------------------------------------------------------------------------------------------------ consistency
def test_consistency_table_hand_computed(report):
    c = report.consistency
    own = one_row(c, method="clsrl", dataset="dtd")
    # seed 1: agree (right), agree (wrong), disagree (right), no class (wrong), disagree (right); seed 2: agree
    assert (own["n_seeds"], own["n_think"], own["n_unanalysed"]) == (2, 6, 1)
    assert (own["n_agree"], own["n_disagree"], own["n_no_class"]) == (3, 2, 1)
    assert (own["agree"], own["disagree"], own["no_class"]) == pytest.approx((50.0, 100 / 3, 100 / 6))
    assert (own["acc_agree"], own["acc_disagree"], own["acc_no_class"]) == pytest.approx((200 / 3, 100.0, 0.0))
    assert own["acc_think"] == pytest.approx(400 / 6)
    empty = one_row(c, method="clsrl [empty-think]", dataset="dtd")
    assert (empty["n_think"], empty["n_agree"], empty["n_no_class"], empty["n_disagree"]) == (2, 1, 1, 0)
    assert (empty["acc_agree"], empty["acc_no_class"]) == (0.0, 100.0) and math.isnan(empty["acc_disagree"])
    op = one_row(c, method="clsrl", dataset="oxford_flowers")  # open-set: the eval's classes are the options
    assert (op["setting"], op["n_think"], op["agree"], op["disagree"]) == ("open", 2, 50.0, 50.0)
    assert (op["acc_agree"], op["acc_disagree"]) == (100.0, 0.0)
    assert set(c["method"]) == {"clsrl", "clsrl [empty-think]"}  # no think block: no row (nothink, cross-prompt)
    assert "eurosat" not in set(c["dataset"])  # own-dataset evaluations only


def test_report_files_and_sections(out):
    assert list(pd.read_csv(out / "consistency.csv").columns) == [
        "model", "setting", "shots", "method", "dataset", "split", "n_seeds", "n_think", "agree", "disagree",
        "no_class", "acc_agree", "acc_disagree", "acc_no_class", "acc_think", "n_agree", "n_disagree", "n_no_class",
        "n_unanalysed"]
    op = pd.read_csv(out / "open.csv")
    assert one_row(op, method="zeroshot", dataset="Average")["paper"] == 52.63
    md = (out / "report.md").read_text()
    for text in ["## Open-set few-shot accuracy (%)", "qwen2vl-2b, 4-shot (ours vs paper, v6 Table 11)",
                 "qwen2vl-7b, 4-shot (ours vs paper, v6 Tables 7/12)", "qwen2vl-2b, 4-shot (ours vs paper, v6 Table 5)",
                 "## Think/answer consistency (rule-based)", "| think-after-answer (paper) ",
                 "Note: `clsrl [empty-think]`: no paper numbers: v6 Table 17",
                 "Note: `clsrl [nothink]`: no paper numbers: the nothink method's eval template (cross-prompt): "
                 "v6 Fig. 7(b)"]:
        assert text in md, text
    tex = (out / "report.tex").read_text()
    assert "Think/answer consistency" in tex and "think-after-answer" in tex
