"""Sweeps on a real one-node Slurm cluster (`bash .ci/slurm.sh start`; CI starts it): cells are Slurm array jobs that
skip when done and redo only what is missing, a cell that dies is reported without hanging the sweep, a cell can
span 2 ranks, and a preempted cell requeues itself and resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import REPO, TINY, run_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=2", "hydra.launcher.gpus_per_node=0", "hydra.launcher.timeout_min=10"]


def _sweep(args, root, timeout=420):
    e = dict(os.environ, CLSRL_OUTPUTS=str(root), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "clsrl_exp", *args], cwd=REPO, env=e, capture_output=True, text=True,
                       timeout=timeout)
    r.tail = f"\n--- stdout ---\n{r.stdout[-3000:]}\n--- stderr ---\n{r.stderr[-3000:]}"
    return r


def _records(root: Path) -> dict[str, dict]:
    return {str(p.parent): json.loads(p.read_text()) for p in (root / "runs").rglob("result.json")}


def test_a_sweep_runs_as_a_slurm_array_skips_and_redoes_only_a_missing_cell(slurm_cluster, shared, tmp_path):
    args = ["+sweep=smoke", *SLURM, *shared]
    r = _sweep(args, tmp_path)
    assert r.returncode == 0 and "4 cells: 4 done, 0 skipped, 0 failed" in r.stdout, r.tail
    jobs = sorted(d.name for d in (tmp_path / "sweeps" / "smoke" / ".submitit").iterdir() if d.is_dir())
    array = jobs[0]
    assert jobs == [array] + [f"{array}_{i}" for i in range(4)], jobs  # one Slurm array, one task per cell, a log each
    jobs = jobs[1:]
    assert all((tmp_path / "sweeps" / "smoke" / ".submitit" / j / f"{j}_0_log.out").exists() for j in jobs)
    recs = _records(tmp_path)
    assert len(recs) == 4 and all(x["status"] == "complete" for x in recs.values())

    r = _sweep(args, tmp_path)
    assert r.returncode == 0 and "4 cells: 0 done, 4 skipped, 0 failed" in r.stdout, r.tail

    redo = next(d for d, x in recs.items() if x["run"]["method"] == "nothink")
    mtime = (Path(redo) / "train.json").stat().st_mtime_ns
    (Path(redo) / "result.json").unlink()
    r = _sweep(args, tmp_path)
    assert r.returncode == 0 and "4 cells: 1 done, 3 skipped, 0 failed" in r.stdout, r.tail
    assert (Path(redo) / "train.json").stat().st_mtime_ns == mtime  # only evaluated again, not retrained
    assert _records(tmp_path)[redo]["status"] == "complete"


CRASH = '''
import os


def die_on_shapes(completions, label, **kwargs):
    """Kills the process (no exception, no cleanup) when it scores a shape: a cell that dies hard."""
    if set(label) & {"circle", "square", "triangle", "cross"}:
        os._exit(3)
    return [0.0] * len(completions)
'''


def test_a_cell_that_dies_is_reported_failed_and_the_sweep_ends(slurm_cluster, shared, tmp_path):
    (tmp_path / "crash.py").write_text(CRASH)
    conf = tmp_path / "conf" / "method"
    conf.mkdir(parents=True)
    (conf / "crashy.yaml").write_text(textwrap.dedent(f"""\
        # @package _global_
        defaults:
          - override /train: grpo
        method:
          name: crashy
          train_template: "{{question}}\\\\n Please directly output the answer."
          eval_templates:
            default: "{{question}} Please directly output the answer name."
          rewards:
            - {{name: "{tmp_path / 'crash.py'}:die_on_shapes"}}
        """))
    t0 = time.monotonic()
    r = _sweep(["-m", "--config-dir", str(tmp_path / "conf"), "model=tiny-qwen2vl", "logger=none", "rollout=hf",
                "method=crashy", "shots=4", "debug=fast",
                "dataset=synthetic-colors,synthetic-shapes", "sweep_name=crash", *SLURM, *shared], tmp_path)
    assert r.returncode == 1, r.tail
    assert "2 cells: 1 done, 0 skipped, 1 failed" in r.stdout, r.tail
    assert time.monotonic() - t0 < 300
    summary = json.loads((tmp_path / "sweeps" / "crash" / "summary.json").read_text())
    (failed,) = summary["failed_cells"]
    assert "dataset=synthetic-shapes" in failed["overrides"] and "died without returning" in failed["error"]
    assert Path(failed["log"]).exists()
    recs = {x["run"]["dataset"]: x for x in _records(tmp_path).values()}
    assert recs["synthetic-colors"]["status"] == "complete" and recs["synthetic-shapes"]["status"] == "failed"


def test_a_two_rank_cell_in_a_slurm_sweep(slurm_cluster, shared, tmp_path):
    r = _sweep(["-m", *TINY, "method=nothink", "shots=4", "debug=fast", "sweep_name=ranks", *SLURM,
                "hydra.launcher.tasks_per_node=2", *shared], tmp_path)
    assert r.returncode == 0 and "1 cells: 1 done, 0 skipped, 0 failed" in r.stdout, r.tail
    (rec,) = _records(tmp_path).values()
    assert rec["status"] == "complete" and rec["train"]["steps"] == 2 and rec["evals"][0]["n"] == 16
    logs = " ".join(p.read_text() for p in (tmp_path / "sweeps" / "ranks" / ".submitit").rglob("*_log.out"))
    assert "Slurm task 0 of 2" in logs and "Slurm task 1 of 2" in logs
    assert "2 GPU(s) x per_device_train_batch_size 8 x gradient_accumulation_steps 4" in logs


def test_a_preempted_cell_requeues_and_resumes_with_the_same_steps(slurm_cluster, shared, tmp_path):
    """USR2 (what Slurm sends signal_delay_s before a time limit or a preemption) mid-training: the cell saves a
    checkpoint at its current step, requeues its job and finishes with the uninterrupted step count."""
    args = ["-m", *TINY, "method=nothink", "shots=4", "logger=none", "train.max_steps=40", "train.save_steps=1000",
            "train.max_completion_length=4", "train.prompts_per_step=4", "eval.limit=8", "eval.max_new_tokens=4",
            "sweep_name=preempt", *SLURM, *shared]
    run, _ = run_config([a for a in args if not a.startswith(("-m", "hydra", "sweep_name"))], tmp_path)
    history = Path(run.run_dir) / "trainer" / "log_history.jsonl"
    e = dict(os.environ, CLSRL_OUTPUTS=str(tmp_path), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "clsrl_exp", *args], cwd=REPO, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (history.exists() and history.read_text().count("\n") >= 5):
            assert time.monotonic() < deadline and proc.poll() is None, "training never started"
            time.sleep(0.2)
        (job,) = [d.name for d in (tmp_path / "sweeps" / "preempt" / ".submitit").iterdir() if d.is_dir()]
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        deadline = time.monotonic() + 60
        while "Restarts=1" not in subprocess.run(["scontrol", "show", "job", job], capture_output=True,
                                                 text=True).stdout:
            assert time.monotonic() < deadline, "the job was not requeued"
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while not any(f"JobState={s}" in subprocess.run(["scontrol", "show", "job", job], capture_output=True,
                                                        text=True).stdout for s in ("RUNNING", "COMPLETED")):
            assert time.monotonic() < deadline, "the requeued job did not start"
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)  # Slurm
            time.sleep(0.5)  # holds a requeued job ~2 minutes (EligibleTime): start it now
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "1 cells: 1 done, 0 skipped, 0 failed" in out, err[-3000:]
    logs = " ".join(p.read_text() for p in (tmp_path / "sweeps" / "preempt" / ".submitit").rglob("*_log.*"))
    assert "SIGUSR2 received" in logs and "stopping after optimizer step" in logs
    assert "resuming training from" in logs
    rec = json.loads((Path(run.run_dir) / "result.json").read_text())
    assert rec["status"] == "complete" and rec["train"]["steps"] == 40  # the uninterrupted count
    from clsrl_exp.schema import Record

    assert set(rec) == set(Record.__dataclass_fields__) and rec["error"] is None  # the usual record shape
    assert [e["dataset"] for e in rec["evals"]] == ["synthetic-colors"]
