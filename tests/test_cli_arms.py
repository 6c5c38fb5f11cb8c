"""The paper's remaining arms end to end through the CLI on the tiny model (`debug=fast`): Think-After-Answer,
setting=open, and a trained checkpoint evaluated again with another method's prompt (cross-prompt) and with an
empty think block prefilled (empty-think): each a complete record, the variants as entries of the same record (no
second training) and as rows of their own in the report."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from helpers import TINY, cli, run_config

FAST = ["shots=4", "debug=fast"]
TAA = [*TINY, "method=think-after-answer", *FAST]
OPEN = [*TINY, "method=clsrl", "setting=open", *FAST]


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def arms(shared, tmp_path_factory):
    """Train Think-After-Answer (few-shot) and CLS-RL (open-set) side by side, then evaluate the open-set checkpoint
    with the No-Thinking prompt and with empty-think (one after the other: both append to the same record), then
    build the report. Returns (root, {name: CompletedProcess}, train.json bytes before the variants)."""
    root = tmp_path_factory.mktemp("arms_cli")
    with ThreadPoolExecutor(2) as pool:
        done = dict(zip(("taa", "open"), pool.map(lambda a: cli([*a, *shared], root), (TAA, OPEN)), strict=True))
    open_dir = Path(run_config([*OPEN, *shared], root)[0].run_dir)
    trained = (open_dir / "train.json").read_bytes() if (open_dir / "train.json").exists() else b""
    for variant in ("nothink", "empty-think"):
        done[variant] = cli([*OPEN, *shared, f"eval.prompt={variant}"], root)
    done["report"] = cli([str(root / "runs"), "--out", str(root / "report")], None, module="clsrl_exp.report")
    return root, done, trained


@pytest.mark.slow
def test_think_after_answer_trains_with_its_rewards(arms, shared):
    root, done, _ = arms
    assert done["taa"].returncode == 0, done["taa"].tail
    run_dir = Path(run_config([*TAA, *shared], root)[0].run_dir)
    assert "/fewshot/synthetic-colors/think-after-answer/tiny-qwen2vl/" in str(run_dir)
    rec = _record(run_dir)
    assert rec["status"] == "complete" and rec["train"]["steps"] == 2
    (ev,) = rec["evals"]
    assert (ev["n"], ev["prompt_variant"]) == (16, "eval")
    assert ev["identity"]["prompt"]["template"].endswith(
        "Please first output the answer in <answer> </answer> tags and then output a brief reasoning process in "
        "<reason> </reason> tags.")
    history = (run_dir / "trainer" / "log_history.jsonl").read_text()
    for key in ("rewards/accuracy_reward/mean", "rewards/answer_reason_format_reward/mean"):
        assert key in history, key  # TRL called both rewards
    assert all(len(r["options"]) == 4 for r in _lines(run_dir))  # closed set: every line keeps its options


@pytest.mark.slow
def test_open_set_cell_asks_without_options(arms, shared):
    root, done, _ = arms
    assert done["open"].returncode == 0, done["open"].tail
    run_dir = Path(run_config([*OPEN, *shared], root)[0].run_dir)
    assert "/open/synthetic-colors/clsrl/tiny-qwen2vl/" in str(run_dir)
    rec = _record(run_dir)
    assert rec["status"] == "complete" and rec["run"]["setting"] == "open" and rec["train"]["steps"] == 2
    own = next(ev for ev in rec["evals"] if ev["prompt_variant"] == "eval")
    assert (own["dataset"], own["split"], own["n"]) == ("synthetic-colors", "test", 16)
    assert own["classes"] == ["red", "green", "blue", "yellow"]  # the label space the answers are free over
    prompt = own["identity"]["prompt"]
    assert prompt["template"].startswith("{question} Please output the thinking process")  # open-set eval script
    assert own["identity"]["setting"]["name"] == "open"
    rows = [r for r in _lines(run_dir) if r["eval_hash"] == own["eval_hash"]]
    assert len(rows) == 16 and all(r["options"] == [] for r in rows)
    assert "rewards/accuracy_reward/mean" in (run_dir / "trainer" / "log_history.jsonl").read_text()


@pytest.mark.slow
def test_cross_prompt_and_empty_think_evaluate_the_same_checkpoint(arms, shared):
    root, done, trained = arms
    for variant in ("nothink", "empty-think"):
        assert done[variant].returncode == 0, done[variant].tail
    run_dir = Path(run_config([*OPEN, *shared], root)[0].run_dir)
    assert (run_dir / "train.json").read_bytes() == trained  # evaluated again, not trained again
    rec = _record(run_dir)
    by_variant = {ev["prompt_variant"]: ev for ev in rec["evals"]}
    assert sorted(by_variant) == ["empty-think", "eval", "nothink"]
    assert len({ev["eval_hash"] for ev in rec["evals"]}) == 3
    prompts = {v: ev["identity"]["prompt"] for v, ev in by_variant.items()}
    assert prompts["nothink"]["template"] == "{question} Please directly output the answer name."
    assert prompts["empty-think"]["prefill"] == "<think></think>" and prompts["eval"]["prefill"] == ""
    assert prompts["empty-think"]["template"] == prompts["eval"]["template"]
    rows = _lines(run_dir)
    for variant, ev in by_variant.items():
        mine = [r for r in rows if r["eval_hash"] == ev["eval_hash"]]
        assert len(mine) == 16 and {r["prompt_variant"] for r in mine} == {variant}
        assert sum(r["lenient"] for r in mine) == ev["correct"]
        assert all(r.get("prefill") == ("<think></think>" if variant == "empty-think" else None) for r in mine)


@pytest.mark.slow
def test_report_keeps_the_new_arms_and_variants_apart(arms):
    root, done, _ = arms
    assert done["report"].returncode == 0, done["report"].tail
    out = root / "report"
    op = pd.read_csv(out / "open.csv")
    own = op[op["dataset"] == "synthetic-colors"]
    assert sorted(own["method"]) == ["clsrl", "clsrl [empty-think]", "clsrl [nothink]"]
    fs = pd.read_csv(out / "fewshot.csv")
    assert set(fs["method"]) == {"think-after-answer"}  # the open-set cell never reaches the few-shot table
    md = (out / "report.md").read_text()
    assert "## Open-set few-shot accuracy (%)" in md and "Note: `clsrl [empty-think]`: no paper numbers" in md
