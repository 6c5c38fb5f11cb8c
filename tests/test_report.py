"""Tests for `clsrl_exp.report`: hand-made result.json records -> tables, files and the CLI, checked literally."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import one_row

from clsrl_exp.report import build_report, load_records, paper, tables
from clsrl_exp.report.__main__ import main
from clsrl_exp.report.tables import harmonic

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
M2B = "qwen2vl-2b"


def _write(root: Path, name: str, method: str, dataset: str, seed, evals, *, setting="fewshot", shots=4,
           model=M2B, train=None, status="complete", mtime=None, **extra) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True, exist_ok=True)
    rec = {"schema": 1, "status": status,
           "run": {"method": method, "model": model, "dataset": dataset, "setting": setting, "shots": shots,
                   "seed": seed},
           "evals": [{"dataset": d, "split": s, "n": 100, "correct": int(a), "skipped": 0, "accuracy": a,
                      **({} if st is None else {"accuracy_strict": st})} for d, s, a, st in evals],
           "train": train, "identity_hash": f"h{abs(hash(name)) % 10**8}", "run_dir": str(run_dir), **extra}
    path = run_dir / "result.json"
    path.write_text(json.dumps(rec))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _train(wall_s, tokens, steps=600, curve=None):
    return {"wall_s": wall_s, "steps": steps, "mean_completion_tokens": tokens,
            **({} if curve is None else {"curve": curve})}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    # few-shot nothink: dtd over three seeds (70, 72, 74 -> mean 72, std 2), eurosat one seed
    dtd_curve = [{"step": 0, "dataset": "dtd", "split": "test", "accuracy": 54.0},
                 {"step": 10, "dataset": "dtd", "split": "test", "accuracy": 70.0}]
    for seed, acc, strict, wall, tok in [(1, 70.0, 68.0, 5640.0, 6.0), (2, 72.0, 70.0, 6000.0, 6.2),
                                         (3, 74.0, 72.0, 6360.0, 6.4)]:
        _write(root, f"fs/nothink/dtd/s{seed}", "nothink", "dtd", seed, [("dtd", "test", acc, strict)],
               train=_train(wall, tok, curve=dtd_curve if seed == 1 else None), unknown_field={"x": 1})
    _write(root, "fs/nothink/eurosat/s1", "nothink", "eurosat", 1, [("eurosat", "test", 60.0, 59.0)],
           train=_train(3000.0, 5.0))
    # zero-shot references: dtd seeds 1 and 2 (50, 54 -> mean 52), eurosat seed 1 (40)
    _write(root, "fs/zeroshot/dtd/s1", "zeroshot", "dtd", 1, [("dtd", "test", 50.0, 49.0)], shots=0)
    _write(root, "fs/zeroshot/dtd/s2", "zeroshot", "dtd", 2, [("dtd", "test", 54.0, 53.0)], shots=0)
    _write(root, "fs/zeroshot/eurosat/s1", "zeroshot", "eurosat", 1, [("eurosat", "test", 40.0, 39.0)], shots=0)
    # free-lunch clsrl: trained on dtd (seed 1) / eurosat (seed 3), evaluated on several datasets
    _write(root, "fl/clsrl/dtd/s1", "clsrl", "dtd", 1,
           [("dtd", "test", 65.0, 60.0), ("eurosat", "test", 45.0, None), ("oxford_pets", "test", 80.0, None)],
           train=_train(12000.0, 250.0, curve=[{"step": 0, "dataset": "dtd", "split": "test", "accuracy": 54.0},
                                               {"step": 10, "dataset": "dtd", "split": "test", "accuracy": 60.0}]))
    _write(root, "fl/clsrl/eurosat/s3", "clsrl", "eurosat", 3,
           [("eurosat", "test", 48.0, 47.0), ("dtd", "test", 52.0, None)], train=_train(6000.0, 200.0))
    # base-to-new nothink: dtd B=90 N=10 (H 18), eurosat B=10 N=90 (H 18); Average H(50, 50) = 50, not 18
    _write(root, "b2n/nothink/dtd/s1", "nothink", "dtd", 1, [("dtd", "base", 88.0, None), ("dtd", "new", 8.0, None)],
           setting="base2new", train=_train(1000.0, 6.0))
    _write(root, "b2n/nothink/dtd/s2", "nothink", "dtd", 2, [("dtd", "base", 92.0, None), ("dtd", "new", 12.0, None)],
           setting="base2new", train=_train(1000.0, 6.0))
    _write(root, "b2n/nothink/eurosat/s1", "nothink", "eurosat", 1,
           [("eurosat", "base", 10.0, None), ("eurosat", "new", 90.0, None)], setting="base2new",
           train=_train(1000.0, 6.0))
    # another model: unknown datasets and an unknown method (ordering, no paper numbers)
    for method, ds, acc in [("mystery", "synthetic-shapes", 30.0), ("nothink", "synthetic-shapes", 40.0),
                            ("nothink", "synthetic-colors", 50.0), ("nothink", "dtd", 60.0)]:
        _write(root, f"tiny/{method}/{ds}", method, ds, 0, [(ds, "test", acc, acc)], model="tiny",
               train=_train(10.0, 3.0))
    # bad records
    _write(root, "bad/incomplete", "nothink", "dtd", 9, [("dtd", "test", 1.0, 1.0)], status="running")
    (root / "bad/corrupt").mkdir(parents=True)
    (root / "bad/corrupt/result.json").write_text("{not json")
    p = _write(root, "bad/schema", "nothink", "dtd", 8, [("dtd", "test", 1.0, 1.0)])
    p.write_text(json.dumps({**json.loads(p.read_text()), "schema": 99}))  # a version this code cannot read
    p = _write(root, "bad/noseed", "nothink", "dtd", 7, [("dtd", "test", 1.0, 1.0)])
    data = json.loads(p.read_text())
    del data["run"]["seed"]
    p.write_text(json.dumps(data))
    # an older duplicate of nothink/dtd/seed 1 with a wrong number: must not reach the tables
    _write(root, "old/nothink/dtd/s1", "nothink", "dtd", 1, [("dtd", "test", 10.0, 10.0)], mtime=1_000_000.0)
    return root


@pytest.fixture(scope="module")
def report(runs):
    return build_report([runs])


@pytest.fixture(scope="module")
def cli_out(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "report"
    assert main([str(runs), "--out", str(out)]) == 0
    return out


# ------------------------------------------------------------------------------------------------ paper data
@pytest.mark.parametrize("method,printed", [("zeroshot", 62.21), ("sft", 70.65), ("clsrl", 81.25), ("nothink", 84.39)])
def test_paper_fewshot_average_recomputes(method, printed):
    values = paper.FEWSHOT[method]
    assert list(values) == list(paper.DATASETS)
    assert paper.FEWSHOT_AVERAGE[method] == printed
    assert abs(sum(values.values()) / 11 - printed) < 0.01
    assert paper.FEWSHOT["sft"]["dtd"] == 71.336 and paper.FEWSHOT["nothink"]["dtd"] == 73.52


@pytest.mark.parametrize("method", ["zeroshot", "sft", "clsrl", "nothink"])
def test_paper_base2new_average_h_is_h_of_means(method):
    b, n, h = paper.BASE2NEW_AVERAGE[method]
    assert abs(harmonic(b, n) - h) < 0.01
    assert set(paper.BASE2NEW[method]) == set(paper.DATASETS)
    for base, new, hh in paper.BASE2NEW[method].values():
        assert abs(harmonic(base, new) - hh) < 0.01


@pytest.mark.parametrize("method", ["clsrl", "nothink"])
def test_paper_transfer_rows_and_diagonal(method):
    m = paper.TRANSFER[method]
    for train, row in m.items():
        assert abs(sum(row[d] for d in paper.DATASETS) / 11 - row["AVG"]) < 0.011, train
        # the diagonal is Table 5 minus zero-shot
        assert abs(row[train] - (paper.FEWSHOT[method][train] - paper.FEWSHOT["zeroshot"][train])) < 0.011, train


# ------------------------------------------------------------------------------------------------ records
def test_skipped_records_listed_with_reasons(runs):
    records, skipped = load_records([runs])
    reasons = {Path(s.path).parent.relative_to(runs).as_posix(): s.reason for s in skipped}
    assert set(reasons) == {"bad/incomplete", "bad/corrupt", "bad/schema", "bad/noseed", "old/nothink/dtd/s1"}
    assert reasons["bad/incomplete"].startswith("incomplete")
    assert "unparseable JSON" in reasons["bad/corrupt"]
    assert "wrong schema" in reasons["bad/schema"]
    assert "run.seed" in reasons["bad/noseed"]
    assert reasons["old/nothink/dtd/s1"] == f"duplicate of {runs.resolve() / 'fs/nothink/dtd/s1/result.json'}"
    assert len(records) == 16
    kept = [r for r in records if r.key == (M2B, "nothink", "dtd", "fewshot", 4, 1)]
    assert len(kept) == 1 and kept[0].accuracy("dtd", "test") == 70.0


# ------------------------------------------------------------------------------------------------ tables
def test_fewshot_mean_std_paper_diff(report):
    df = report.fewshot
    assert list(df.columns[:6]) == ["method", "dataset", "shots", "mean", "std", "n_seeds"]
    r = one_row(df, model=M2B, method="nothink", dataset="dtd")
    assert (r["mean"], r["std"], r["n_seeds"], r["shots"]) == (72.0, 2.0, 3, 4)  # duplicate (10.0) excluded
    assert r["mean_strict"] == 70.0
    assert r["paper"] == 73.52 and r["diff"] == pytest.approx(-1.52)
    r = one_row(df, model=M2B, method="nothink", dataset="eurosat")
    assert r["mean"] == 60.0 and math.isnan(r["std"]) and r["n_seeds"] == 1
    assert r["paper"] == 58.02 and r["diff"] == pytest.approx(1.98)
    r = one_row(df, model=M2B, method="zeroshot", dataset="dtd")  # zero-shot matches the paper at any shots
    assert (r["mean"], r["n_seeds"], r["paper"]) == (52.0, 2, 54.79)
    r = one_row(df, model=M2B, method="clsrl", dataset="dtd")
    assert (r["mean"], r["paper"]) == (65.0, 69.92)


def test_fewshot_average_rows(report):
    df = report.fewshot
    r = one_row(df, model=M2B, method="nothink", dataset="Average")
    assert r["mean"] == 66.0 and r["n_datasets"] == 2 and r["mean_strict"] == 64.5
    assert r["paper"] == pytest.approx((73.52 + 58.02) / 2)  # paper over the same datasets: like for like
    assert r["diff"] == pytest.approx(66.0 - 65.77)
    r = one_row(df, model=M2B, method="zeroshot", dataset="Average")
    assert r["mean"] == 46.0 and r["n_datasets"] == 2


def test_fewshot_order_unknown_names_and_no_paper(report):
    tiny = report.fewshot[report.fewshot["model"] == "tiny"]
    assert list(zip(tiny["method"], tiny["dataset"], strict=True)) == [
        ("nothink", "dtd"), ("nothink", "synthetic-colors"), ("nothink", "synthetic-shapes"), ("nothink", "Average"),
        ("mystery", "synthetic-shapes"), ("mystery", "Average")]
    assert tiny["paper"].isna().all()
    assert one_row(tiny, method="nothink", dataset="Average")["mean"] == 50.0
    m2b = report.fewshot[report.fewshot["model"] == M2B]
    assert list(dict.fromkeys(m2b["method"])) == ["zeroshot", "clsrl", "nothink"]


def test_base2new_average_is_h_of_means(report):
    df = report.base2new
    assert list(df.columns[:5]) == ["method", "dataset", "base", "new", "H"]
    r = one_row(df, method="nothink", dataset="dtd")
    assert (r["base"], r["new"], r["H"], r["n_seeds"]) == (90.0, 10.0, 18.0, 2)
    assert (r["paper_base"], r["paper_new"], r["paper_H"]) == (77.42, 70.37, 73.72)
    r = one_row(df, method="nothink", dataset="eurosat")
    assert r["H"] == 18.0
    avg = one_row(df, method="nothink", dataset="Average")
    assert (avg["base"], avg["new"], avg["H"], avg["n_datasets"]) == (50.0, 50.0, 50.0, 2)  # not mean of H (18)
    pb, pn = (77.42 + 66.43) / 2, (70.37 + 74.13) / 2
    assert avg["paper_base"] == pytest.approx(pb) and avg["paper_H"] == pytest.approx(harmonic(pb, pn))
    assert avg["diff_H"] == pytest.approx(50.0 - harmonic(pb, pn))


def test_transfer_matrix_minus_zeroshot(report):
    assert [(t.method, t.stem) for t in report.transfers] == [("clsrl", "transfer_clsrl")]  # nothink: no cross evals
    t = report.transfers[0]
    m = t.matrix
    assert list(m.index) == ["dtd", "eurosat"] and list(m.columns) == ["dtd", "eurosat", "oxford_pets", "AVG"]
    assert m.loc["dtd", "dtd"] == 15.0  # 65 - 50: zero-shot of the same seed (1), not the mean (52)
    assert m.loc["dtd", "eurosat"] == 5.0  # 45 - 40
    assert math.isnan(m.loc["dtd", "oxford_pets"])  # no zero-shot reference
    assert m.loc["dtd", "AVG"] == 10.0
    assert m.loc["eurosat", "dtd"] == 0.0  # seed 3 has no zero-shot: 52 - mean(50, 54)
    assert m.loc["eurosat", "eurosat"] == 8.0 and math.isnan(m.loc["eurosat", "oxford_pets"])
    assert m.loc["eurosat", "AVG"] == 4.0
    assert len(t.notes) == 1 and "oxford_pets" in t.notes[0]
    assert t.paper.loc["imagenet", "imagenet"] == 21.44 and t.paper.loc["fgvc_aircraft", "AVG"] == 10.79


def test_cost_table(report):
    df = report.cost
    r = one_row(df, model=M2B, method="nothink", dataset="dtd", setting="fewshot")
    assert (r["wall_s"], r["wall_min"], r["steps"], r["n_seeds"]) == (6000.0, 100.0, 600.0, 3)
    assert r["mean_completion_tokens"] == pytest.approx(6.2)
    z = one_row(df, model=M2B, method="zeroshot", dataset="dtd")
    assert z[["wall_s", "wall_min", "steps", "mean_completion_tokens"]].isna().all()


def test_curves_and_think_vs_nothink(report):
    c = report.curves
    assert len(c) == 4 and set(c["method"]) == {"clsrl", "nothink"}
    assert one_row(c, method="clsrl", step=10)["accuracy"] == 60.0
    tvn = report.think_vs_nothink
    r = one_row(tvn, method="clsrl", dataset="dtd", setting="fewshot")
    assert (r["accuracy"], r["wall_min"], r["mean_completion_tokens"]) == (65.0, 200.0, 250.0)
    r = one_row(tvn, method="nothink", dataset="dtd", setting="fewshot")
    assert (r["accuracy"], r["wall_min"]) == (72.0, 100.0)
    assert set(tvn["dataset"]) == {"dtd", "eurosat", "Average"}
    assert one_row(tvn, method="nothink", dataset="Average")["accuracy"] == 66.0


# ------------------------------------------------------------------------------------------------ CLI and files
def test_cli_writes_all_files(cli_out):
    for name in ["fewshot.csv", "base2new.csv", "cost.csv", "skipped.csv", "transfer_clsrl.csv",
                 "transfer_clsrl_paper.csv", "curves.csv", "think_vs_nothink.csv", "report.md", "report.tex"]:
        assert (cli_out / name).stat().st_size > 0, name
    for name in ["transfer_clsrl.png", "curves.png"]:
        data = (cli_out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert not (cli_out / "transfer_nothink.csv").exists()
    assert not [p for p in cli_out.iterdir() if p.name.endswith(".tmp")]


def test_cli_csv_contents(cli_out):
    fs = pd.read_csv(cli_out / "fewshot.csv")
    assert list(fs.columns) == tables.FEWSHOT_COLUMNS
    r = one_row(fs, model=M2B, method="nothink", dataset="dtd")
    assert (r["mean"], r["std"], r["paper"]) == (72.0, 2.0, 73.52)
    assert math.isnan(one_row(fs, model=M2B, method="nothink", dataset="eurosat")["std"])  # empty cell for one seed
    assert one_row(pd.read_csv(cli_out / "base2new.csv"), method="nothink", dataset="Average")["H"] == 50.0
    tr = pd.read_csv(cli_out / "transfer_clsrl.csv", index_col=0)
    assert tr.loc["dtd", "AVG"] == 10.0 and tr.loc["eurosat", "dtd"] == 0.0
    paper_tr = pd.read_csv(cli_out / "transfer_clsrl_paper.csv", index_col=0)
    assert paper_tr.loc["stanford_cars", "stanford_cars"] == 44.47
    sk = pd.read_csv(cli_out / "skipped.csv")
    assert list(sk.columns) == ["path", "reason"] and len(sk) == 5
    assert sk["reason"].str.startswith("duplicate of").sum() == 1


def test_report_md_and_tex(cli_out):
    md = (cli_out / "report.md").read_text()
    assert "2503.16188" in md and "To Think or Not To Think" in md and "NeurIPS 2025" in md
    for heading in ["## Few-shot accuracy", "## Base-to-new", "## Free-lunch transfer", "## Training cost",
                    "## Think vs no-think", "## Training curves", "## Skipped records"]:
        assert heading in md, heading
    assert "| nothink (paper) " in md and "| nothink (diff) " in md
    assert "73.52" in md and "-1.52" in md and "72.00" in md and "2.00" in md  # ours, paper and diff
    assert "![clsrl transfer heatmap](transfer_clsrl.png)" in md and "![training curves](curves.png)" in md
    assert "1587" in md  # paper efficiency table
    assert "bad/corrupt/result.json" in md and "incomplete" in md and "duplicate of" in md
    assert "—" in md  # std of a single seed
    tex = (cli_out / "report.tex").read_text()
    assert tex.startswith("\\documentclass") and tex.rstrip().endswith("\\end{document}")
    assert "\\toprule" in tex and "73.52" in tex and "oxford\\_pets" in tex and "transfer_clsrl.png" in tex


def test_cli_empty_root(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "rep")]) == 0
    assert "no complete records found" in (tmp_path / "rep/report.md").read_text()
    assert "no complete records found" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "rep/fewshot.csv").empty


def test_cli_missing_root_exit_2_and_no_torch(tmp_path):
    missing = tmp_path / "nope"
    proc = subprocess.run([sys.executable, "-m", "clsrl_exp.report", str(missing), "--out", str(tmp_path / "r")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: run root not found: {missing}"
    assert not (tmp_path / "r").exists()
    code = ("import sys, clsrl_exp.report.__main__, clsrl_exp.report.plots; "
            "bad = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_full_paper_grid_uses_printed_averages():
    """With all 11 datasets the paper Average is the printed one (few-shot and base-to-new)."""
    from clsrl_exp.report.records import Record

    def rec(ds, setting, evals):
        run = {"method": "nothink", "model": M2B, "dataset": ds, "setting": setting, "shots": 4, "seed": 1}
        return Record(path=f"/x/{setting}/{ds}", mtime=0.0, run=run,
                      evals=[{"dataset": ds, "split": s, "accuracy": a} for s, a in evals])

    recs = [rec(ds, "fewshot", [("test", paper.FEWSHOT["nothink"][ds])]) for ds in paper.DATASETS]
    recs += [rec(ds, "base2new", [("base", b), ("new", n)]) for ds, (b, n, _) in paper.BASE2NEW["nothink"].items()]
    fs = one_row(tables.fewshot_table(recs), dataset="Average")
    assert fs["paper"] == 84.39 and fs["n_datasets"] == 11 and abs(fs["diff"]) < 0.01
    assert list(tables.fewshot_table(recs)["dataset"][:11]) == list(paper.DATASETS)
    b2n = one_row(tables.base2new_table(recs), dataset="Average")
    assert (b2n["paper_base"], b2n["paper_new"], b2n["paper_H"]) == (83.42, 81.88, 82.64)
    assert abs(b2n["base"] - 83.42) < 0.01 and abs(b2n["H"] - 82.64) < 0.01


def test_zeroshot_reference_is_the_runs_own_dataset(tmp_path):
    """With a base model prepared per dataset (the tiny demo's warm start), a zero-shot run evaluated on another
    dataset is not that dataset's baseline: its own-dataset zero-shot run is."""
    _write(tmp_path, "zs-a", "zeroshot", "a", 1, [("a", "test", 25.0, None), ("b", "test", 0.0, None)], model="t")
    _write(tmp_path, "zs-b", "zeroshot", "b", 1, [("a", "test", 0.0, None), ("b", "test", 30.0, None)], model="t")
    _write(tmp_path, "nt-a", "nothink", "a", 1, [("a", "test", 95.0, None), ("b", "test", 10.0, None)], model="t",
           train=_train(60.0, 2.0))
    (t,) = build_report([tmp_path]).transfers
    row = t.matrix.loc["a"]
    assert row["a"] == pytest.approx(70.0) and row["b"] == pytest.approx(-20.0)  # not 95 - 12.5 / 10 - 15
    assert row["AVG"] == pytest.approx(25.0)
