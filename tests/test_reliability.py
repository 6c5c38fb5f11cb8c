"""Reliability through the CLI: start-time checks before any work, a tracker that cannot hang or fail a cell, signals
that stop at a safe point and resume, checkpoints cut short, one process per cell, caches that are checked on use.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, TINY, cli, require, run_config

FAST = [*TINY, "method=nothink", "shots=4", "debug=fast"]


def _one_error(r) -> str:
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.tail
    return errors[0]


def _popen(args, root, env=None):
    e = dict(os.environ, CLSRL_OUTPUTS=str(root), **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "clsrl_exp", *args], cwd=REPO, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"ended before the condition held:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


# ------------------------------------------------------------------------------------------------- outputs
def test_an_output_root_that_is_a_file_stops_at_start(tmp_path, shared):
    blocker = tmp_path / "outputs"
    blocker.write_text("not a folder")
    r = cli([*FAST, *shared], blocker)
    assert r.returncode == 4, r.tail
    assert "is a file, not a folder" in _one_error(r) and "paths.output_root" in r.stderr
    assert blocker.read_text() == "not a folder"


def _read_only(folder: Path):
    """Make `folder` unwritable even for root (the immutable attribute); skip where the filesystem cannot (fail
    under CI=true)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    r = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        require(f"cannot make a folder read-only for root here (chattr +i): {r.stderr.strip()}")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_output_folder_stops_at_start(tmp_path, shared):
    root = tmp_path / "ro"
    undo = _read_only(root)
    try:
        r = cli([*FAST, *shared], root)
    finally:
        undo()
    assert r.returncode == 4, r.tail
    assert "cannot be written" in _one_error(r)
    assert not any(root.iterdir())


# ------------------------------------------------------------------------------------------------- tracker
WANDB_ONLINE = ["logger=wandb", "logger.mode=online"]


def test_online_tracking_without_credentials_stops_before_any_work(tmp_path, shared):
    home = tmp_path / "home"
    home.mkdir()
    r = cli([*FAST, *WANDB_ONLINE, f"data.root={tmp_path / 'data'}", shared[0]], tmp_path / "out",
            env={"WANDB_MODE": "online", "WANDB_API_KEY": "", "HOME": str(home), "NETRC": str(home / ".netrc")})
    assert r.returncode == 2, r.tail
    msg = _one_error(r)
    assert "WANDB_API_KEY" in msg and "wandb login" in msg and "logger.mode=offline" in msg
    assert not (tmp_path / "data").exists()  # stopped before any data work (the dataset was not generated)
    assert not list((tmp_path / "out").rglob("result.json"))


@pytest.mark.slow
def test_an_unreachable_tracker_falls_back_to_offline_and_the_cell_completes(tmp_path, shared):
    secret = "0123456789abcdef0123456789abcdef01234567"
    t0 = time.monotonic()
    r = cli([*FAST, *WANDB_ONLINE, "logger.init_timeout=5", *shared], tmp_path,
            env={"WANDB_MODE": "online", "WANDB_API_KEY": secret, "WANDB_BASE_URL": "http://127.0.0.1:9"})
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.tail
    out = r.stdout + r.stderr  # the job log goes to stdout
    assert "W&B could not start online" in out and "logging offline instead" in out, r.tail
    assert wall < 150, wall  # bounded: the 5 s start budget, then offline
    (result,) = (tmp_path / "runs").rglob("result.json")
    assert json.loads(result.read_text())["status"] == "complete"
    assert list(result.parent.rglob("offline-run-*"))  # the offline run can be synced later
    for f in result.parent.rglob("*"):  # no credential in any saved config, log or record
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


# ------------------------------------------------------------------------------------------------- signals
LONG_TRAIN = [*TINY, "method=nothink", "shots=4", "logger=none", "train.max_steps=40", "train.save_steps=1000",
              "train.max_completion_length=4", "train.prompts_per_step=4", "eval.limit=8", "eval.max_new_tokens=4"]


@pytest.mark.slow
def test_sigint_during_training_saves_a_checkpoint_and_the_rerun_resumes(shared, tmp_path):
    """SIGINT mid-training: a checkpoint of the current step, the record `interrupted`, exit 130; a truncated newer
    checkpoint is skipped; the same command resumes from the signal-time checkpoint and ends at the same step."""
    args = [*LONG_TRAIN, *shared]
    run, _ = run_config(args, tmp_path)
    run_dir = Path(run.run_dir)
    history = run_dir / "trainer" / "log_history.jsonl"
    proc = _popen(args, tmp_path)
    _wait_for(lambda: history.exists() and history.read_text().count("\n") >= 5, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("error: stopped by SIGINT")], err[-3000:]
    rec = _record(run_dir)
    assert rec["status"] == "interrupted" and "SIGINT" in rec["error"]
    (ckpt,) = (run_dir / "trainer").glob("checkpoint-*")
    step = int(ckpt.name.split("-")[1])
    assert 5 <= step < 40 and (ckpt / ".complete").exists()

    # a later checkpoint cut short while saving (no completion mark, a truncated weights file) must not be used
    cut = ckpt.with_name(f"checkpoint-{step + 1}")
    shutil.copytree(ckpt, cut)
    (cut / ".complete").unlink()
    weights = next(cut.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])

    r = cli(args, tmp_path)
    assert r.returncode == 0, r.tail
    out = r.stdout + r.stderr
    assert f"skipping incomplete checkpoint {cut}" in out and f"resuming training from {ckpt}" in out, r.tail
    rec = _record(run_dir)
    assert rec["status"] == "complete" and rec["train"]["steps"] == 40


@pytest.mark.slow
def test_sigterm_during_evaluation_flushes_and_the_rerun_completes(shared, tmp_path):
    args = [*TINY, "method=zeroshot", "logger=none", "eval.limit=48", "eval.batch_size=8", "eval.cache_zeroshot=false",
            "eval.max_new_tokens=256", *shared]
    run, _ = run_config(args, tmp_path)
    preds = Path(run.run_dir) / "predictions.jsonl"
    proc = _popen(args, tmp_path)
    _wait_for(lambda: preds.exists() and preds.read_bytes().count(b"\n") >= 8, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-3000:]
    done = preds.read_bytes()
    assert done.endswith(b"\n") and 8 <= done.count(b"\n") < 48  # whole batches only, flushed
    assert _record(Path(run.run_dir))["status"] == "interrupted"
    r = cli(args, tmp_path)
    assert r.returncode == 0, r.tail
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert preds.read_bytes().startswith(done) and len({x["id"] for x in rows}) == len(rows) == 48


# ------------------------------------------------------------------------------------------------- one process
@pytest.mark.slow
def test_a_second_process_on_the_same_cell_stops_or_waits(shared, tmp_path):
    args = [*LONG_TRAIN, "train.max_steps=15", *shared]
    run, _ = run_config(args, tmp_path)
    lock = Path(run.run_dir) / ".lock"
    first = _popen(args, tmp_path)
    try:
        _wait_for(lambda: lock.exists() and lock.read_text().strip(), first)
        second = cli(args, tmp_path)
        assert second.returncode == 5, second.tail
        msg = _one_error(second)
        assert f"pid {first.pid}" in msg and "wait_for_lock=true" in msg
        waiting = cli([*args, "wait_for_lock=true"], tmp_path)  # waits for the first, then finds the cell done
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert waiting.returncode == 0 and "completed by another process" in waiting.stdout + waiting.stderr, waiting.tail
    assert _record(Path(run.run_dir))["train"]["steps"] == 15


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    from clsrl_exp.runtime import cell_lock

    lock = tmp_path / ".lock"
    dead = subprocess.run([sys.executable, "-c", f"""
import fcntl, os, json
fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({{"pid": os.getpid(), "host": "h", "started": "then"}}).encode())
os._exit(9)  # killed while holding it
"""])
    assert dead.returncode == 9 and json.loads(lock.read_text())["started"] == "then"
    with cell_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


# ------------------------------------------------------------------------------------------------- caches
def test_a_corrupt_split_cache_is_rebuilt_with_one_warning(session_root, tmp_path, caplog):
    from clsrl_exp.data import eval_sets, train_examples

    run, _ = run_config([*TINY, "method=nothink", f"data.root={session_root / 'data'}"], tmp_path)
    first = (train_examples(run, run.dataset), eval_sets(run, run.dataset))
    caches = sorted(Path(run.data.cache_dir).rglob("*.json"))
    assert {p.parent.name for p in caches} == {"fewshot", "seed_1"}
    for p in caches:
        text = p.read_text()
        p.write_text(text[: len(text) // 2])  # truncated
    again = (train_examples(run, run.dataset), eval_sets(run, run.dataset))
    assert again == first
    assert sum("is rebuilt" in r.message for r in caplog.records) == len(caches)
    for p in caches:  # edited: valid JSON, another content
        data = json.loads(p.read_text())
        key = "train" if "train" in data else "items"
        data[key] = data[key][:1]
        p.write_text(json.dumps(data))
    assert (train_examples(run, run.dataset), eval_sets(run, run.dataset)) == first


def test_a_corrupt_prediction_line_is_scored_again(tmp_path, caplog):
    from clsrl_exp.evaluate import PredictionLog

    path = tmp_path / "p.jsonl"
    good = {"eval_hash": "h", "id": "a", "dataset": "d", "split": "test", "prompt_variant": "eval", "output": "x",
            "lenient": True, "strict": True}
    path.write_text(json.dumps(good) + "\n" + '{"eval_hash": "h", "id": "b", "out\n' + json.dumps({**good, "id": "c"})
                    + "\n")
    log_ = PredictionLog(path)
    assert set(log_.done("h")) == {"a", "c"}  # b is missing, so it is evaluated again
    assert any("1 unreadable line(s) ignored" in r.message for r in caplog.records)


def test_a_truncated_tiny_model_is_rebuilt(tmp_path, caplog):
    from clsrl_exp.models import resolve_model_path

    run, _ = run_config(TINY, tmp_path)
    path = Path(resolve_model_path(run.model, run.paths.cache))
    weights = path / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 3])
    assert Path(resolve_model_path(run.model, run.paths.cache)) == path
    assert weights.stat().st_size == size
    assert list(path.parent.glob(f"{path.name}.corrupt-*"))
    assert any("is rebuilt" in r.message and "truncated" in r.message for r in caplog.records)


# ------------------------------------------------------------------------------------------------- fuzzing
BAD_OVERRIDES = [
    # unknown keys and groups, typos of group options
    "foo=1", "train.fooo=2", "+train.fooo=2", "model=qwen2vl-2", "method=nothnk", "dataset=dtdd", "setting=fewshots",
    "rollout=vllm", "logger=wandbb", "debug=slow",
    # wrong types
    "shots=abc", "seed=1.5", "train.beta=lots", "eval.batch_size=[1]", "train.max_steps=x", "eval.greedy=maybe",
    # out of range / impossible values of validated fields
    "shots=0", "shots=-1", "train.num_generations=1", "train.loss_type=xyz", "train.scale_rewards=always",
    "train.step_rule=never", "train.prompts_per_step=0", "train.micro_batch_size=0", "setting.base_split=middle",
    "eval.batch_size=0", "eval.prompt=nope", "eval.backend=nope", "model.min_pixels=999999999",
    "train.max_completion_length=0", "method.rewards=[]", "train.image_cache_mb=-1",
    # broken syntax
    "shots=[", "=3", "train.beta=",
]


def test_every_bad_override_is_one_user_error_at_start(tmp_path):
    """Each bad override alone and in random pairs with good ones: preflight raises a UserError (never anything
    else), whose message is what the CLI prints on its one `error:` line."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from clsrl_exp.errors import UserError
    from clsrl_exp.preflight import preflight

    good = ["method=nothink", "method=clsrl", "shots=2", "seed=3", "setting=base2new", "dataset=synthetic-shapes"]
    base = ["model=tiny-qwen2vl", "dataset=synthetic-colors", "logger=none", f"paths.output_root={tmp_path}"]

    def stops(argv):
        try:
            preflight(argv)
        except UserError as e:
            return str(e)
        return None

    for bad in BAD_OVERRIDES:
        assert stops([*base, bad]), f"{bad!r} was accepted"

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(good), max_size=2), st.sampled_from(BAD_OVERRIDES))
    def pairs(extra, bad):
        assert stops([*base, *extra, bad]), (extra, bad)

    pairs()


@pytest.mark.parametrize("bad", ["train.fooo=2", "shots=abc", "train.num_generations=1", "shots=[", "method=nothnk"])
def test_the_cli_prints_one_error_line_for_bad_overrides(bad, tmp_path):
    r = cli([*TINY, "logger=none", bad], tmp_path, timeout=120)
    assert r.returncode == 2, r.tail
    _one_error(r)
    assert not (tmp_path / "runs").exists()


def test_a_crash_in_a_single_run_is_recorded_failed_with_its_traceback(shared, tmp_path):
    """Outside a sweep a bug still raises (the traceback on stderr, exit 1), and the cell's record says failed with
    the reason and error.txt holds the traceback, so a later listing does not show it as running."""
    boom = tmp_path / "boom.py"
    boom.write_text("def boom(completions, **kw):\n    raise RuntimeError('reward exploded')\n")
    r = cli([*FAST, f'method.rewards=[{{name: "{boom}:boom"}}]', *shared], tmp_path)
    assert r.returncode == 1 and "RuntimeError: reward exploded" in r.stderr, r.tail
    (result,) = (tmp_path / "runs").rglob("result.json")
    rec = json.loads(result.read_text())
    assert rec["status"] == "failed" and "reward exploded" in rec["error"], rec
    assert "RuntimeError: reward exploded" in (result.parent / "error.txt").read_text()
