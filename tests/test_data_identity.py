"""The data fingerprint in a cell's identity, without a model: where data lives is not identity, what it is is;
`cell_state` reads the split definitions and tells skip / evaluate / retrain / error; stale work is set aside.
(The same decisions through the CLI on the tiny model: test_data_cli.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_fixtures import make_dtd
from helpers import run_config

from clsrl_exp.cells import cell_state, requested_evals, set_aside_evals, set_aside_training
from clsrl_exp.errors import DataError
from clsrl_exp.identity import train_hash
from clsrl_exp.schema import Record, RunInfo, TrainSummary, make_eval, read_record, write_record


def _cfg(tmp_path: Path, *extra: str, root: Path | None = None):
    return run_config(["model=qwen2vl-2b", "dataset=dtd", "logger=none", f"data.root={root or tmp_path / 'data'}",
                       *extra], tmp_path / "out")


def _record(run, container, fps: dict[str, str], *, trained_on: str | None = None, legacy: bool = False) -> Record:
    """A complete record holding every evaluation the cell asks for (as the cell writes it)."""
    thash = train_hash(container)
    specs = requested_evals(run, thash, None if legacy else fps)
    evals = [make_eval(s.dataset.name, s.split, s.variant, n=4, correct=2, correct_strict=2, skipped=0,
                       eval_hash=s.eval_hash, identity=s.identity) for s in specs]
    train = None if run.train.kind == "none" else TrainSummary("grpo", 10, 1.0, 20, data_fingerprint=trained_on)
    info = RunInfo(run.method.name, run.model.name, run.dataset.name, run.setting.name, run.shots, run.seed)
    return Record("complete", info, thash, run.run_dir, evals, train, data={} if legacy else dict(fps))


def test_where_the_data_is_is_not_identity_what_it_is_is(tmp_path):
    birds = ["dataset=imagefolder", "dataset.name=birds", "method=nothink"]
    a, ca = run_config([*birds, "dataset.path=/data/a/birds"], tmp_path)
    b, cb = run_config([*birds, "dataset.path=/elsewhere/birds"], tmp_path)
    assert a.run_dir == b.run_dir and train_hash(ca) == train_hash(cb)
    h = train_hash(ca)
    same = [s.eval_hash for s in requested_evals(a, h, {"birds": "f1"})]
    assert same == [s.eval_hash for s in requested_evals(b, h, {"birds": "f1"})]
    assert same != [s.eval_hash for s in requested_evals(a, h, {"birds": "f2"})]
    (spec,) = requested_evals(a, h, {"birds": "f1"})
    assert spec.identity["data"] == spec.identity["trained_on"] == "f1" and "path" not in spec.identity["dataset"]
    zs, czs = run_config([*birds, "method=zeroshot"], tmp_path)
    (spec,) = requested_evals(zs, train_hash(czs), {"birds": "f1"})
    assert spec.identity["data"] == "f1" and "trained_on" not in spec.identity  # no training data: zero-shot


def test_cell_state_reads_the_data_and_says_what_is_left(tmp_path):
    make_dtd(tmp_path / "data")
    run, container = _cfg(tmp_path, "method=nothink")
    assert cell_state(run, container).state == "pending"
    fp = cell_state(run, container).fingerprints["dtd"]
    write_record(Path(run.run_dir), _record(run, container, {"dtd": fp}, trained_on=fp))
    done = cell_state(run, container)
    assert (done.state, done.missing, done.stale_training) == ("complete", [], None)

    moved, mcont = _cfg(tmp_path, "method=nothink", root=tmp_path / "moved")
    make_dtd(tmp_path / "moved")  # the same content elsewhere
    assert cell_state(moved, mcont).state == "complete"

    split = tmp_path / "data" / "dtd" / run.dataset.split_file
    data = json.loads(split.read_text())
    data["train"] = data["train"][1:]  # the training split changed
    split.write_text(json.dumps(data))
    stale = cell_state(run, container)
    assert (stale.state, stale.stale_training) == ("retrain", fp) and len(stale.missing) == 1
    assert stale.fingerprints["dtd"] != fp

    gone, gcont = _cfg(tmp_path, "method=nothink", root=tmp_path / "gone")
    for listing in (False, True):  # a record of its own: even the listing reads the data
        with pytest.raises(DataError, match="data root not found"):
            cell_state(gone, gcont, listing=listing)
    fresh, fcont = _cfg(tmp_path, "method=clsrl", root=tmp_path / "gone")
    assert cell_state(fresh, fcont, listing=True).state == "pending"  # no record: nothing to check, nothing read


def test_a_changed_eval_split_only_reevaluates_and_old_records_keep_their_training(tmp_path):
    make_dtd(tmp_path / "data")
    zs, zcont = _cfg(tmp_path, "method=zeroshot")
    fp = cell_state(zs, zcont).fingerprints["dtd"]
    write_record(Path(zs.run_dir), _record(zs, zcont, {"dtd": fp}))
    split = tmp_path / "data" / "dtd" / zs.dataset.split_file
    data = json.loads(split.read_text())
    data["test"] = data["test"][1:]
    split.write_text(json.dumps(data))
    st = cell_state(zs, zcont)
    assert st.state == "evaluate" and [s.identity["data"] for s in st.missing] == [st.fingerprints["dtd"]]

    nt, ncont = _cfg(tmp_path, "method=nothink")  # a record from before data fingerprints
    write_record(Path(nt.run_dir), _record(nt, ncont, {}, legacy=True))
    legacy = cell_state(nt, ncont)
    assert legacy.state == "evaluate" and legacy.stale_training is None  # training kept, evaluations redone


def test_set_aside_moves_stale_work_once_and_keeps_current_evaluations(tmp_path):
    make_dtd(tmp_path / "data")
    run, container = _cfg(tmp_path, "method=nothink")
    rdir = Path(run.run_dir)
    rec = _record(run, container, {"dtd": "old"}, trained_on="old")
    write_record(rdir, rec)
    for name in ("checkpoint", "trainer"):
        (rdir / name).mkdir()
        (rdir / name / "x").write_text(name)
    (rdir / "train.json").write_text("{}")
    (rdir / "predictions.jsonl").write_text('{"id": "a"}\n')
    dest = set_aside_training(rdir, "dtd", "old")
    assert dest == rdir / "stale" / "old"
    assert sorted(p.name for p in dest.iterdir()) == ["checkpoint", "predictions.jsonl", "result.json", "train.json",
                                                      "trainer"]
    assert not (rdir / "result.json").exists() and (dest / "trainer" / "x").read_text() == "trainer"
    assert set_aside_training(rdir, "dtd", "old") is None  # another rank after the first: nothing left to move

    old = make_eval("dtd", "test", "eval", n=1, correct=1, correct_strict=1, skipped=0, identity={"data": "old"})
    cur = make_eval("dtd", "test", "train", n=1, correct=0, correct_strict=0, skipped=0, identity={"data": "new"})
    other = make_eval("eurosat", "test", "eval", n=1, correct=0, correct_strict=0, skipped=0, identity={"data": "e"})
    rec.evals = [old, cur, other]
    assert set_aside_evals(rdir, rec, {"dtd": "new"}) == [cur, other]
    assert json.loads((rdir / "stale" / "old" / "evals.json").read_text())[0]["prompt_variant"] == "eval"
    assert read_record(rdir) is None  # the record itself is the caller's to write
