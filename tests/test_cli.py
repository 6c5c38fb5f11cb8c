"""The entry point end to end: `python -m clsrl_exp ... method=M shots=4` completes for every method and writes a
complete result.json; `--cfg job` and `--help` work offline; bad input stops at start with one `error:` line.

The five method runs share the session's tiny model and synthetic data (paths.cache, data.root) and write their
runs into one fresh folder; they run two at a time (~20 s each on 2 cores).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import CONF, TINY, cli, run_config

METHODS = ["zeroshot", "sft", "clsrl", "nothink", "adaptive"]
FAST = ["shots=4", "debug=fast"]




@pytest.fixture(scope="module")
def method_runs(shared, tmp_path_factory):
    """Run the CLI once per method (two at a time) into one root; returns (root, {method: CompletedProcess})."""
    root = tmp_path_factory.mktemp("cli_methods")

    def one(method):
        t0 = time.perf_counter()
        r = cli([*TINY, f"method={method}", *FAST, *shared], root)
        r.wall_s = time.perf_counter() - t0
        return method, r

    with ThreadPoolExecutor(2) as pool:
        results = dict(pool.map(one, METHODS))
    return root, results


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_completes_with_a_full_record(method, method_runs, shared):
    root, results = method_runs
    r = results[method]
    assert r.returncode == 0, r.tail
    run, _ = run_config([*TINY, f"method={method}", *FAST, *shared], root)  # the same overrides -> the same dir
    run_dir = Path(run.run_dir)
    assert run_dir.is_relative_to(root / "runs")
    rec = json.loads((run_dir / "result.json").read_text())
    assert rec["status"] == "complete", rec
    assert rec["run"]["method"] == method and rec["run"]["dataset"] == "synthetic-colors"
    assert rec["run"]["shots"] == 4 and rec["run"]["model"] == "tiny-qwen2vl"
    (ev,) = rec["evals"]
    assert ev["dataset"] == "synthetic-colors" and ev["split"] == "test"
    assert ev["n"] == 16 and ev["skipped"] == 0
    assert isinstance(ev["accuracy"], (int, float)) and 0 <= ev["accuracy"] <= 100
    assert ev["accuracy"] == round(100 * ev["correct"] / 16, 2)
    if method == "zeroshot":
        assert rec["train"] is None
    else:
        assert rec["train"]["steps"] == 2, rec["train"]
        assert rec["train"]["kind"] == ("sft" if method == "sft" else "grpo")
        assert (run_dir / "checkpoint" / "config.json").exists()
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 16
    rows = [json.loads(x) for x in lines]
    for row in rows:
        assert {"id", "prompt_variant", "output", "lenient", "strict"} <= row.keys()
        assert row["prompt_variant"] == "eval" and isinstance(row["lenient"], bool)
    assert len({row["id"] for row in rows}) == 16
    assert sum(row["lenient"] for row in rows) == ev["correct"]


@pytest.mark.slow
def test_a_finished_cell_is_skipped(method_runs, shared):
    """Re-running a complete cell does not train or evaluate again (same run dir, record untouched)."""
    root, _ = method_runs
    run, _ = run_config([*TINY, "method=nothink", *FAST, *shared], root)
    before = (Path(run.run_dir) / "result.json").read_bytes()
    r = cli([*TINY, "method=nothink", *FAST, *shared], root)
    assert r.returncode == 0, r.tail
    assert "skipped" in r.stdout + r.stderr
    assert (Path(run.run_dir) / "result.json").read_bytes() == before


# ------------------------------------------------------------------------------------------------- offline info
def test_cfg_job_prints_the_composed_config_offline(tmp_path):
    t0 = time.perf_counter()
    r = cli(["--cfg", "job", "model=qwen2vl-2b", "method=nothink", "shots=4"], tmp_path,
            env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 0, r.tail
    assert time.perf_counter() - t0 < 60
    out = r.stdout
    assert "path: Qwen/Qwen2-VL-2B-Instruct" in out
    assert "beta: 0.04" in out and "loss_type: grpo" in out and "top_k: 50" in out
    assert "num_generations: 4" in out and "name: nothink" in out and "shots: 4" in out
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing ran


def _help_line(group: str) -> str:
    return f"{group}: " + ", ".join(sorted(p.stem for p in (CONF / group).glob("*.yaml")))


def test_help_lists_the_groups(tmp_path):
    r = cli(["--help"], tmp_path, timeout=120)
    assert r.returncode == 0, r.tail
    lines = r.stdout.splitlines()
    assert "method: adaptive, clsrl, nothink, sft, think-after-answer, zeroshot" in lines
    for group in ("model", "dataset", "method", "train", "setting", "rollout", "logger", "debug"):
        assert _help_line(group) in lines, (group, r.stdout[:2000])
    assert any(line.startswith("sweep: ") and "paper-fewshot" in line for line in lines)


# ------------------------------------------------------------------------------------------------- bad input
BAD = [
    pytest.param(["model=does-not-exist"], None, ["Could not find 'model/does-not-exist'",
                                                  "Available options in 'model'", "tiny-qwen2vl", "qwen2vl-2b"],
                 id="unknown-option"),
    pytest.param(["shots=-1"], 2, ["error: shots must be >= 1"], id="negative-shots"),
    pytest.param(["method=nothink", "train.num_generations=1"], 2, ["error: train.num_generations must be >= 2"],
                 id="one-generation"),
    pytest.param(["method=nothink", "rollout=vllm-colocate"], 2, ["error: rollout=vllm-colocate needs"],
                 id="vllm-colocate-on-cpu"),
]


@pytest.mark.parametrize(("overrides", "code", "messages"), BAD)
def test_bad_input_stops_at_start_with_one_message(overrides, code, messages, shared, tmp_path):
    if "rollout=vllm-colocate" in overrides:
        import torch

        from clsrl_exp.generation.vllm import vllm_available

        if torch.cuda.is_available() and vllm_available():
            pytest.skip("this machine can run vllm-colocate")
    args = [*TINY, *FAST, *shared, *overrides]  # the bad value last: nothing after it overrides it
    t0 = time.perf_counter()
    r = cli(args, tmp_path, timeout=120)
    wall = time.perf_counter() - t0
    assert r.returncode != 0, r.tail
    if code is not None:
        assert r.returncode == code, r.tail
    for msg in messages:
        assert msg in r.stderr, r.tail
    assert "Traceback" not in r.stderr, r.tail
    if code is not None:  # our own errors: exactly one `error:` line
        assert sum(line.startswith("error: ") for line in r.stderr.splitlines()) == 1, r.tail
    assert wall < 60, f"took {wall:.0f} s: it did not stop at start"
    for rec in tmp_path.rglob("result.json"):
        assert json.loads(rec.read_text()).get("status") != "complete"
    assert not list(tmp_path.rglob("predictions.jsonl"))
    assert not list(tmp_path.rglob("checkpoint"))


def test_cfg_job_shows_the_derived_vllm_settings(tmp_path):
    """`--cfg job` prints resolved values: the derived vLLM context (196 image tokens at 384 px + 1024 text +
    1024 completion) and the identity-derived run directory; `--raw` keeps Hydra's interpolations."""
    r = cli(["--cfg", "job", "rollout=vllm-colocate", "model=qwen2vl-2b"], tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.tail
    assert "max_model_length: 2244" in r.stdout and "gpu_memory_utilization: 0.3" in r.stdout
    assert "run_dir: " in r.stdout and "/fewshot/dtd/nothink/qwen2vl-2b/k4-s1-" in r.stdout
    raw = cli(["--cfg", "job", "--raw", "rollout=vllm-colocate"], tmp_path)
    assert raw.returncode == 0 and "${clsrl_vllm_len:" in raw.stdout
