"""Plugin registries: a new method is one YAML file with a user reward (`file.py:function` + kwargs), a new
evaluation backend is one class outside the package, and a record round-trips from the writer to the report.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import fake_backend
import pytest
from helpers import REPO, TINY, cli, run_config

from clsrl_exp.errors import ConfigError
from clsrl_exp.rewards import get_reward, reward_factory

USER_REWARDS = '''
def brevity(completions, label, max_chars, **kwargs):
    """1.0 for a completion of at most `max_chars` characters (a reward with a parameter)."""
    return [1.0 if len(c[0]["content"]) <= max_chars else 0.0 for c in completions]


def not_a_function():
    pass


NOT_CALLABLE = 3
'''


@pytest.fixture
def user_rewards(tmp_path) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_REWARDS)
    return path


# ------------------------------------------------------------------------------------------------- rewards
def test_a_reward_from_a_user_file_with_kwargs(user_rewards):
    fn = get_reward(f"{user_rewards}:brevity", {"max_chars": 3})
    done = [[{"role": "assistant", "content": t}] for t in ("red", "yellow")]
    assert fn(completions=done, label=["red", "red"]) == [1.0, 0.0]
    from trl.trainer.utils import get_callable_name

    assert get_callable_name(fn) == "brevity"  # TRL logs it as rewards/brevity/mean


def test_a_reward_factory_gets_the_kwargs():
    @reward_factory
    def longer_than(n):
        def longer(completions, **kwargs):
            return [float(len(c) > n) for c in completions]

        return longer

    import clsrl_exp.rewards as rewards

    rewards.REWARDS["longer_than"] = longer_than
    try:
        fn = get_reward("longer_than", {"n": 2})
        assert fn.__name__ == "longer" and fn(["abc", "a"]) == [1.0, 0.0]
    finally:
        del rewards.REWARDS["longer_than"]


@pytest.mark.parametrize("name, message", [
    ("nope", "unknown reward 'nope'"),
    ("{file}:missing", "has no attribute 'missing'"),
    ("{file}:NOT_CALLABLE", "is not callable"),
    ("{dir}/absent.py:f", "file not found"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
])
def test_a_bad_reward_name_is_one_config_error(name, message, user_rewards, tmp_path):
    name = name.format(file=user_rewards, dir=tmp_path)
    method = {"name": "x", "eval_templates": {"default": "{question}"}, "rewards": [{"name": name}]}
    run, container = run_config([*TINY, "method=nothink"], tmp_path)
    container["method"] = {**container["method"], **method}
    from clsrl_exp.config import to_run_config

    with pytest.raises(ConfigError, match=message):
        to_run_config(container)


def test_a_reward_with_wrong_kwargs_fails_at_start(user_rewards, tmp_path):
    """A kwarg the function does not take is found when TRL would call it: the error names the reward first."""
    fn = get_reward(f"{user_rewards}:brevity", {"max_charz": 3})
    with pytest.raises(TypeError):
        fn(completions=[[{"content": "a"}]], label=["a"])


# ------------------------------------------------------------------------------------------------- a new method
@pytest.mark.slow
def test_a_new_method_is_one_yaml_file_with_a_user_reward(shared, user_rewards, tmp_path):
    conf = tmp_path / "myconf"
    (conf / "method").mkdir(parents=True)
    (conf / "method" / "brevity.yaml").write_text(textwrap.dedent(f"""\
        # @package _global_
        # No-Thinking plus a user reward with a parameter (a brevity bonus), defined outside the package.
        defaults:
          - override /train: grpo
        method:
          name: brevity
          train_template: "{{question}}\\n Please directly output the answer."
          eval_templates:
            default: "{{question}} Please directly output the answer name."
          rewards:
            - {{name: equality, weight: 1.0}}
            - {{name: "{user_rewards}:brevity", weight: 0.5, kwargs: {{max_chars: 6}}}}
        """))
    args = ["--config-dir", str(conf), *TINY, "method=brevity", "shots=4", "debug=fast", *shared]
    root = tmp_path / "out"
    r = cli(args, root)
    assert r.returncode == 0, r.tail
    (result,) = (root / "runs").rglob("result.json")
    rec = json.loads(result.read_text())
    assert rec["status"] == "complete" and rec["run"]["method"] == "brevity" and rec["train"]["steps"] == 2
    assert rec["identity"]["method"]["rewards"][1]["kwargs"] == {"max_chars": 6}
    assert rec["identity"]["reward_files"]  # the user file's content is part of the training identity
    history = [json.loads(x) for x in (result.parent / rec["train"]["log_history"]).read_text().splitlines()]
    logged = {k for h in history for k in h}
    assert "rewards/brevity/mean" in logged and "rewards/equality_reward/mean" in logged, sorted(logged)


# ------------------------------------------------------------------------------------------------- a new backend
def test_a_backend_registered_outside_the_package_evaluates_a_cell(shared, tmp_path):
    """In-process, end to end on the tiny model (zero-shot): `eval.backend=echo-label` is found in the registry
    (registered by tests/fake_backend.py), scores every item, and the record names it."""
    from clsrl_exp.run import run_cell

    fake_backend.EchoLabelGenerator.calls.clear()
    run, container = run_config([*TINY, "method=zeroshot", "eval.backend=echo-label", "eval.limit=12",
                                 "eval.batch_size=5", *shared], tmp_path)
    out = run_cell(run, container)
    assert out["cell"] == "done" and out["status"] == "complete"
    (ev,) = out["evals"]
    assert ev["backend"] == "echo-label" and ev["n"] == 12 and ev["accuracy"] == 100.0
    assert [len(c) for c in fake_backend.EchoLabelGenerator.calls] == [5, 5, 2]
    rows = [json.loads(x) for x in (Path(run.run_dir) / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["lenient"] and r["strict"] for r in rows)
    assert run_cell(run, container)["cell"] == "skipped"


def test_a_backend_named_by_import_path_through_the_cli(shared, tmp_path):
    spec = f"{REPO / 'tests' / 'fake_backend.py'}:EchoLabelGenerator"
    r = cli([*TINY, "method=zeroshot", f"eval.backend={spec}", "eval.limit=8", *shared], tmp_path)
    assert r.returncode == 0, r.tail
    (result,) = (tmp_path / "runs").rglob("result.json")
    (ev,) = json.loads(result.read_text())["evals"]
    assert ev["accuracy"] == 100.0 and ev["backend"] == spec


def test_an_unknown_backend_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match="eval.backend must be one of hf, vllm, echo-label"):
        run_config([*TINY, "eval.backend=nope"], tmp_path)


# ------------------------------------------------------------------------------------------------- the record
def test_a_record_round_trips_from_the_writer_to_the_report(tmp_path):
    from clsrl_exp.report import build_report
    from clsrl_exp.schema import Record, RunInfo, TrainSummary, make_eval, read_record, write_record

    run_dir = tmp_path / "runs" / "cell"
    rec = Record(status="complete", run=RunInfo("nothink", "qwen2vl-2b", "dtd", "fewshot", 4, 1),
                 identity_hash="abc", run_dir=str(run_dir),
                 evals=[make_eval("dtd", "test", "eval", n=8, correct=6, correct_strict=5, skipped=0, eval_hash="e1"),
                        make_eval("dtd", "test", "train", n=8, correct=2, correct_strict=2, skipped=0,
                                  eval_hash="e2"),
                        make_eval("eurosat", "test", "eval", n=4, correct=1, correct_strict=1, skipped=0,
                                  eval_hash="e3")],
                 train=TrainSummary(kind="grpo", steps=600, wall_s=120.0, examples=188, mean_completion_tokens=3.5))
    write_record(run_dir, rec)
    assert read_record(run_dir) == rec
    report = build_report([tmp_path / "runs"])
    few = report.fewshot
    row = few[(few["method"] == "nothink") & (few["dataset"] == "dtd")].iloc[0]
    assert row["mean"] == 75.0 and row["mean_strict"] == 62.5 and row["paper"] == 73.52
    variant = few[(few["method"] == "nothink [train]") & (few["dataset"] == "dtd")].iloc[0]
    assert variant["mean"] == 25.0 and variant["paper"] != variant["paper"]  # its own row, no paper number
    cost = report.cost[report.cost["method"] == "nothink"].iloc[0]
    assert (cost["steps"], cost["wall_s"], cost["mean_completion_tokens"]) == (600, 120.0, 3.5)


# ------------------------------------------------------------------------------------------------- the surface
def test_help_lists_only_config_groups(tmp_path):
    r = cli(["--help"], tmp_path, timeout=120)
    assert r.returncode == 0 and "accelerate" not in r.stdout.split("== Config ==")[0], r.tail
    assert (REPO / "conf" / "accelerate" / "zero3.yml").exists()  # still there for `accelerate launch`


def test_make_bench_learning_names_a_module_that_exists():
    import importlib.util
    import re

    targets = re.findall(r"-m (clsrl_exp[\w.]*)", (REPO / "Makefile").read_text())
    assert "clsrl_exp.bench.learning" in targets
    assert all(importlib.util.find_spec(t) is not None for t in targets), targets


def test_bench_without_cuda_says_to_use_tiny(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = cli(["--out", str(tmp_path)], module="clsrl_exp.bench", timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "--tiny" in errors[0], r.tail
    assert not any(tmp_path.iterdir())
