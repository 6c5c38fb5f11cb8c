"""Multi-rank cells as real processes: 2 CPU ranks (gloo) through torchrun and accelerate launch train with the same
optimizer steps on the same prompts as one rank, and evaluate disjoint shards into one prediction log whose greedy
predictions equal the single-rank ones, resuming after a rank is killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import REPO, TINY, cli, run_config

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

RECORD_IDS = '''
import os


def record_ids(completions, id, out, **kwargs):
    """Reward 0 for everything; appends the id of each scored completion to <out>/ids-<rank>.txt."""
    with open(os.path.join(out, f"ids-{os.environ.get('RANK', '0')}.txt"), "a") as fh:
        fh.write("".join(f"{i}\\n" for i in id))
    return [0.0] * len(completions)
'''


def _torchrun(torchrun, args, root, env=None, **kw):
    e = dict(os.environ, CLSRL_OUTPUTS=str(root), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "clsrl_exp", *args], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=kw.get("timeout", 600))


def _tail(r) -> str:
    return f"\n--- stdout ---\n{r.stdout[-3000:]}\n--- stderr ---\n{r.stderr[-3000:]}"


def _method_with_id_log(tmp_path: Path, out: Path) -> Path:
    """A config folder holding `method=nothink-ids`: No-Thinking plus a weight-0 reward logging the ids it scores."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "ids.py").write_text(RECORD_IDS)
    conf = tmp_path / "conf"
    (conf / "method").mkdir(parents=True)
    (conf / "method" / "nothink-ids.yaml").write_text(textwrap.dedent(f"""\
        # @package _global_
        defaults:
          - override /train: grpo
        method:
          name: nothink-ids
          train_template: "{{question}}\\n Please directly output the answer."
          eval_templates:
            default: "{{question}} Please directly output the answer name."
          rewards:
            - {{name: equality, weight: 1.0}}
            - {{name: "{tmp_path / 'ids.py'}:record_ids", weight: 0.0, kwargs: {{out: "{out}"}}}}
        """))
    return conf


def test_two_ranks_make_the_same_steps_on_the_same_prompts_as_one(torchrun, shared, tmp_path):
    """Training: the record is complete, the optimizer steps and the completions per step (64) are the single
    rank's, and the two ranks together score the same prompts, as often, as the single rank did."""
    runs = {}
    for world in (1, 2):
        out = tmp_path / f"ids{world}"
        out.mkdir()
        conf = _method_with_id_log(tmp_path / f"conf{world}", out)
        args = ["--config-dir", str(conf), *TINY, "method=nothink-ids", "shots=4", "train.max_steps=3",
                "train.max_completion_length=4", "eval.limit=8", "eval.max_new_tokens=4", *shared]
        root = tmp_path / f"out{world}"
        r = _torchrun(torchrun, args, root) if world == 2 else cli(args, root)
        assert r.returncode == 0, _tail(r)
        (result,) = (root / "runs").rglob("result.json")
        rec = json.loads(result.read_text())
        history = [json.loads(x) for x in (result.parent / rec["train"]["log_history"]).read_text().splitlines()]
        ids = Counter(i for f in out.glob("ids-*.txt") for i in f.read_text().split())
        runs[world] = rec, [h["completions_per_step"] for h in history if "completions_per_step" in h], ids, out
    (one, per_step_1, ids_1, _), (two, per_step_2, ids_2, out2) = runs[1], runs[2]
    assert one["status"] == two["status"] == "complete"
    assert one["train"]["steps"] == two["train"]["steps"] == 3
    assert per_step_1 == per_step_2 == [64.0] * 3  # 16 prompts x 4 completions per optimizer step at 1 and 2 ranks
    assert len(list(out2.glob("ids-*.txt"))) == 2  # both ranks scored completions
    assert ids_1 == ids_2 and sum(ids_1.values()) == 3 * 64


def _rank_pids(parent: int) -> dict[int, int]:
    """{local rank: pid} of the processes torchrun started."""
    out = {}
    for pid in subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"LOCAL_RANK="):
                out[int(item.split(b"=")[1])] = int(pid)
    return out


def test_two_rank_evaluation_equals_one_rank_and_resumes_after_a_rank_is_killed(torchrun, shared, tmp_path):
    args = [*TINY, "method=zeroshot", "logger=none", "eval.limit=48", "eval.batch_size=8", "eval.cache_zeroshot=false",
            "eval.max_new_tokens=64", *shared]
    one = cli(args, tmp_path / "one")
    assert one.returncode == 0, one.tail
    (p1,) = (tmp_path / "one" / "runs").rglob("predictions.jsonl")
    single = {r["id"]: r["output"] for r in map(json.loads, p1.read_text().splitlines())}
    assert len(single) == 48

    root = tmp_path / "two"
    run, _ = run_config(args, root)
    preds = Path(run.run_dir) / "predictions.jsonl"
    e = dict(os.environ, CLSRL_OUTPUTS=str(root), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([torchrun, "--nproc_per_node", "2", "-m", "clsrl_exp", *args], cwd=REPO, env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (preds.exists() and preds.read_bytes().count(b"\n") >= 8):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        ranks = _rank_pids(proc.pid)
        assert set(ranks) == {0, 1}, ranks
        os.kill(ranks[1], signal.SIGKILL)  # rank 1 dies mid-evaluation
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode != 0
    before = preds.read_bytes()
    assert 8 <= before.count(b"\n") < 48
    again = _torchrun(torchrun, args, root)
    assert again.returncode == 0, _tail(again)
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert preds.read_bytes().startswith(before[: before.rfind(b"\n") + 1])  # append-only
    assert len(rows) == len({r["id"] for r in rows}) == 48  # merged: no duplicate, none lost
    assert {r["id"]: r["output"] for r in rows} == single  # greedy predictions item by item
    rec = json.loads((Path(run.run_dir) / "result.json").read_text())
    assert rec["status"] == "complete" and rec["evals"][0]["n"] == 48


def test_accelerate_launch_runs_two_ranks_or_says_how(shared, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    args = [*TINY, "method=nothink", "shots=4", "debug=fast", *shared]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([str(accelerate), "launch", "--cpu", "--num_processes", "2", "-m", "clsrl_exp", *args],
                            cwd=REPO, env={**env, "CLSRL_OUTPUTS": str(tmp_path / "a")}, capture_output=True,
                            text=True, timeout=300)
    errors = [x for x in single.stderr.splitlines() if x.startswith("error:")]
    assert single.returncode != 0 and len(errors) == 1, _tail(single)
    assert "asked for 2 processes but started one" in errors[0] and "conf/accelerate/cpu.yml" in errors[0]
    two = subprocess.run([str(accelerate), "launch", "--config_file", str(REPO / "conf/accelerate/cpu.yml"),
                          "--num_processes", "2", "-m", "clsrl_exp", *args], cwd=REPO,
                         env={**env, "CLSRL_OUTPUTS": str(tmp_path / "b")}, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, _tail(two)
    assert "2 GPU(s) x per_device_train_batch_size 8 x gradient_accumulation_steps 4" in two.stdout + two.stderr
    (result,) = (tmp_path / "b" / "runs").rglob("result.json")
    assert json.loads(result.read_text())["status"] == "complete"
