"""Config tree: every option of every group composes into the typed schema; the paper's GRPO/SFT values survive
composition; the GRPO batch keeps 16 prompts x 4 completions at any world size; bad values stop with a message that
names the key; the run directory follows the config identity (and nothing else).

Options are discovered from the files on disk, so a new or broken config file gets (and fails) its own test.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from helpers import CONF, REPO, compose, run_config

from clsrl_exp.cells import requested_evals
from clsrl_exp.errors import ConfigError
from clsrl_exp.identity import train_hash
from clsrl_exp.plan import derive_batch

GROUPS = ["model", "dataset", "method", "train", "setting", "rollout", "logger", "debug"]
# Options that only validate together with a matching other group (a train kind needs a method that uses it).
COMPANIONS = {("train", "sft"): ["method=sft"], ("train", "none"): ["method=zeroshot"],
              ("train", "grpo"): ["method=nothink"]}
NAMED = {"model", "dataset", "method", "setting", "rollout", "logger"}  # groups whose files carry `name: <stem>`


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


GROUP_OPTIONS = [(g, o) for g in GROUPS for o in _options(g)]
EXPERIMENTS = sorted(str(p.relative_to(CONF / "experiment").with_suffix("")) for p in
                     (CONF / "experiment").rglob("*.yaml"))
SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))


def test_discovery_found_the_config_tree():
    """Guards the parametrisation below: an empty glob would silently test nothing."""
    for g in GROUPS:
        assert _options(g), f"no options found for group {g}"
    assert {"zeroshot", "sft", "clsrl", "nothink", "adaptive"} <= set(_options("method"))
    assert {"demo/nothink", "demo/clsrl", "demo/zeroshot"} <= set(EXPERIMENTS)
    assert {"paper-fewshot", "paper-base2new", "free-lunch", "smoke"} <= set(SWEEPS)
    assert "ddp" not in {o for _, o in GROUP_OPTIONS}  # conf/accelerate holds accelerate files, not options


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cfg")


_CACHE: dict[tuple, tuple] = {}


def cached_run_config(overrides: list[str], root: Path):
    """Composition takes ~0.3 s: tests that read the same composition share it (callers must not mutate it)."""
    key = (tuple(overrides), str(root))
    if key not in _CACHE:
        _CACHE[key] = run_config(overrides, root)
    return _CACHE[key]


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_composes_into_the_schema(group, option, root):
    run, container = run_config([f"{group}={option}", *COMPANIONS.get((group, option), [])], root)
    assert run.run_dir == container["run_dir"] and run.run_dir.startswith(str(root / "runs"))
    if group in NAMED:
        assert getattr(run, group).name == option
    if group == "train":
        assert run.train.kind == option
    if group == "dataset":
        assert run.dataset.question.endswith("?") and run.dataset.epochs >= 1 and run.dataset.dataset_dir
    if group == "model":
        assert run.model.path is not None or run.model.tiny is not None
    if group == "debug":
        assert run.train.max_steps > 0 and run.eval.limit and run.logger.name == "none"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_into_the_schema(experiment, root):
    run, _ = run_config([f"experiment={experiment}"], root)
    if experiment.startswith("demo/"):  # the CPU demo: tiny model, HF rollouts, one arm per file
        assert run.model.name.startswith("tiny-qwen2vl") and run.rollout.name == "hf"
        arm = experiment.split("/")[-1]
        if arm != "base":
            assert run.method.name == arm


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_with_a_grid(sweep, root):
    cfg = compose([f"+sweep={sweep}"], root, hydra=True)
    params = cfg.hydra.sweeper.params
    assert params and all(str(v).strip() for v in params.values())
    assert cfg.sweep_name == sweep and str(cfg.hydra.mode).endswith("MULTIRUN")


def test_to_run_config_accepts_a_composition_with_its_hydra_node(root):
    from clsrl_exp.config import to_run_config

    cfg = compose(["method=nothink"], root, hydra=True)
    assert to_run_config(cfg).method.name == "nothink"


# ------------------------------------------------------------------------------------------------- paper values
def test_grpo_values_are_the_papers(root):
    run, _ = cached_run_config(["method=nothink"], root)
    t = run.train
    assert t.kind == "grpo"
    assert t.learning_rate == 1e-6 and t.lr_scheduler_type == "linear" and t.warmup_ratio == 0.0
    assert t.weight_decay == 0.0 and t.max_grad_norm == 1.0
    assert t.beta == 0.04 and t.loss_type == "grpo" and t.scale_rewards == "group" and t.num_iterations == 1
    assert t.num_generations == 4 and t.prompts_per_step == 16
    assert t.temperature == 1.0 and t.top_p == 1.0 and t.top_k == 50
    assert t.max_completion_length == 1024
    assert t.gradient_checkpointing is False
    assert t.seed == run.seed


@pytest.mark.parametrize(("dataset", "epochs"), [("imagenet", 10), ("sun397", 25), ("eurosat", 100), ("dtd", 50),
                                                 ("caltech101", 50)])
def test_epochs_follow_the_dataset(dataset, epochs, root):
    run, container = run_config([f"dataset={dataset}", "method=nothink"], root)
    assert run.train.epochs == epochs and container["train"]["epochs"] == epochs


def test_sft_values(root):
    run, _ = cached_run_config(["method=sft"], root)
    t = run.train
    assert t.kind == "sft"
    assert (t.learning_rate, t.lr_scheduler_type, t.warmup_ratio) == (2e-5, "cosine", 0.1)
    assert t.completion_only_loss is False  # official sft.py: loss on the whole sequence


@pytest.mark.parametrize(("method", "kind"), [("zeroshot", "none"), ("sft", "sft"), ("clsrl", "grpo"),
                                              ("nothink", "grpo"), ("adaptive", "grpo")])
def test_method_selects_its_trainer(method, kind, root):
    run, _ = cached_run_config([f"method={method}"], root)
    assert run.train.kind == kind


@pytest.mark.parametrize(("method", "rewards"), [
    ("clsrl", [("accuracy", 1.0), ("format", 1.0)]),
    ("nothink", [("equality", 1.0)]),
    ("adaptive", [("accuracy", 1.0), ("adaptive_format", 1.0)]),
    ("zeroshot", []),
    ("sft", []),
])
def test_method_rewards(method, rewards, root):
    run, _ = cached_run_config([f"method={method}"], root)
    assert [(r.name, r.weight) for r in run.method.rewards] == rewards


# ------------------------------------------------------------------------------------------------- batch
@pytest.mark.parametrize("world_size", [1, 2, 8])
def test_derive_batch_keeps_64_completions_per_step(world_size, root):
    run, _ = cached_run_config(["method=nothink"], root)
    t = run.train
    plan = derive_batch(t.prompts_per_step, t.num_generations, world_size, t.micro_batch_size)
    assert plan.world_size == world_size
    assert plan.per_device_train_batch_size * plan.gradient_accumulation_steps * world_size == 64
    assert plan.completions_per_step == 64 and plan.generation_batch_size == 64
    assert 1 <= plan.per_device_train_batch_size <= t.micro_batch_size


def test_derive_batch_examples():
    assert (derive_batch(16, 4, 1, 8).per_device_train_batch_size, derive_batch(16, 4, 1, 8)
            .gradient_accumulation_steps) == (8, 8)
    assert (derive_batch(16, 4, 8, 8).per_device_train_batch_size, derive_batch(16, 4, 8, 8)
            .gradient_accumulation_steps) == (8, 1)
    p = derive_batch(16, 4, 2, 6)  # 32 per rank: the largest micro batch <= 6 that divides 32 is 4
    assert (p.per_device_train_batch_size, p.gradient_accumulation_steps) == (4, 8)


@pytest.mark.parametrize("world_size", [3, 5, 7, 0])
def test_derive_batch_rejects_uneven_world_sizes(world_size):
    with pytest.raises(ConfigError, match="train.prompts_per_step"):
        derive_batch(16, 4, world_size, 8)


# ------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(("overrides", "key"), [
    (["shots=-1"], "shots"),
    (["method=nothink", "train.num_generations=1"], "train.num_generations"),
    (["method=clsrl", "train.loss_type=ppo"], "train.loss_type"),
    (["method=sft", "method.target_template=null"], "target_template"),
    (["eval.backend=bogus"], "eval.backend"),
    (["eval.prompt=bogus"], "eval.prompt"),
    (["eval.prompt=empty-think", "eval.empty_think="], "eval.empty_think"),
    (["method=nothink", "train.image_cache_mb=-1"], "train.image_cache_mb"),
])
def test_bad_values_raise_a_config_error_naming_the_key(overrides, key, root):
    with pytest.raises(ConfigError) as err:
        run_config(overrides, root)
    assert key in str(err.value)


def test_wrong_type_is_a_config_error(root):
    with pytest.raises(ConfigError, match="train.beta"):
        run_config(["method=nothink", "train.beta=lots"], root)


# ------------------------------------------------------------------------------------------------- identity
BASE = ["model=tiny-qwen2vl", "dataset=synthetic-colors", "method=nothink", "shots=4", "seed=1"]


def _dir(overrides: list[str], root: Path) -> tuple[str, str]:
    run, container = cached_run_config(overrides, root)
    return run.run_dir, train_hash(container)


def test_same_overrides_same_run_dir(root):
    d1, h1 = _dir(BASE, root)
    d2, h2 = _dir(list(BASE), root)
    assert (d1, h1) == (d2, h2)
    assert d1.endswith(f"fewshot/synthetic-colors/nothink/tiny-qwen2vl/k4-s1-{h1}")


@pytest.mark.parametrize("change", ["train.learning_rate=2e-6", "seed=2", "shots=8", "dataset=synthetic-shapes",
                                    "method=clsrl", "train.max_completion_length=8", "setting=base2new"])
def test_result_relevant_changes_change_the_identity(change, root):
    d0, h0 = _dir(BASE, root)
    d1, h1 = _dir([*BASE, change], root)
    assert h1 != h0 and d1 != d0


@pytest.mark.parametrize("change", ["eval.batch_size=7", "logger=wandb", "logger=none", "paths.runs=/elsewhere/runs",
                                    "train.image_cache=false", "train.image_cache_mb=0"])
def test_non_identity_changes_keep_the_identity(change, root):
    d0, h0 = _dir(BASE, root)
    d1, h1 = _dir([*BASE, change], root)
    assert h1 == h0
    if not change.startswith("paths."):
        assert d1 == d0


@pytest.mark.parametrize("change", ["eval.max_new_tokens=8", "eval.prompt=train", "eval.limit=5",
                                    "eval.prompt=clsrl", "eval.prompt=empty-think",
                                    "eval.datasets=[synthetic-colors,synthetic-shapes]",
                                    "data.include_val_in_test=true", "method.eval_templates.default='{question} A.'"])
def test_evaluation_changes_keep_the_trained_model_and_change_the_evaluations(change, root):
    """A checkpoint is keyed by what changes training only; how it is evaluated keys each evaluation instead."""
    d0, h0 = _dir(BASE, root)
    d1, h1 = _dir([*BASE, change], root)
    assert (d1, h1) == (d0, h0)
    run0, _ = cached_run_config(BASE, root)
    run1, _ = cached_run_config([*BASE, change], root)
    own0 = {(e.dataset.name, e.split): e.eval_hash for e in requested_evals(run0, h0)}
    own1 = {(e.dataset.name, e.split): e.eval_hash for e in requested_evals(run1, h1)}
    if change.startswith("eval.datasets"):
        assert own1[("synthetic-colors", "test")] == own0[("synthetic-colors", "test")]  # the same evaluation
        assert len(own1) == 2
    else:
        assert own1[("synthetic-colors", "test")] != own0[("synthetic-colors", "test")]


def test_an_unknown_prompt_variant_names_the_variants_and_the_methods(root):
    with pytest.raises(ConfigError) as err:
        run_config(["eval.prompt=nothinkk"], root)
    msg = str(err.value)
    assert "eval.prompt must be one of eval, train, empty-think or a method option name (got 'nothinkk')" in msg
    assert "clsrl" in msg and "think-after-answer" in msg  # the available methods


def test_open_question_is_identity_only_in_the_open_setting(root):
    """A dataset's open-set question keeps few-shot (and base-to-new) runs and evaluations as they were; in
    setting=open it is what the prompt asks, so it is identity there."""
    def hashes(extra):
        run, container = cached_run_config([*BASE, *extra], root)
        th = train_hash(container)
        return th, [e.eval_hash for e in requested_evals(run, th)]

    assert hashes(["+dataset.open_question='What colour?'"]) == hashes([])
    assert hashes(["setting=base2new", "+dataset.open_question='What colour?'"]) == hashes(["setting=base2new"])
    open_a, open_b = hashes(["setting=open"]), hashes(["setting=open", "+dataset.open_question='What colour?'"])
    assert open_a[0] != open_b[0] and open_a[1] != open_b[1]
    assert open_a[0] != hashes([])[0]  # and open-set is a model of its own


def test_open_setting_offers_the_underscore_retry_to_the_rewards_that_take_it(root):
    from clsrl_exp.train.grpo import reward_functions

    for method, expected in (("clsrl", [1.0, 0.0]), ("nothink", [1.0])):
        run, _ = cached_run_config([*BASE, f"method={method}", "setting=open"], root)
        assert run.setting.reward_kwargs == {"underscore_retry": True}
        fns = reward_functions(run)
        text = "<answer>sea lion</answer>" if method == "clsrl" else "sea lion"
        assert [f([text], ["sea_lion"])[0] for f in fns] == expected
        few, _ = cached_run_config([*BASE, f"method={method}"], root)
        assert reward_functions(few)[0]([text], ["sea_lion"]) == [0.0]  # the closed set has no retry


def test_the_image_cache_settings_keep_existing_run_directories(root):
    """Runs trained before the cache existed (no train.image_cache keys) keep their hash."""
    _, container = cached_run_config(BASE, root)
    before = copy.deepcopy(container)
    for key in ("image_cache", "image_cache_mb"):
        del before["train"][key]
    assert train_hash(before) == train_hash(container)


def test_output_root_moves_the_dir_but_keeps_the_hash(tmp_path, root):
    d0, h0 = _dir(BASE, root)
    d1, h1 = _dir(BASE, tmp_path)
    assert h0 == h1 and d0 != d1 and Path(d1).is_relative_to(tmp_path)


def test_zeroshot_identity_ignores_shots(root):
    d4, h4 = _dir(["method=zeroshot", "shots=4"], root)
    d8, h8 = _dir(["method=zeroshot", "shots=8"], root)
    assert h4 == h8 and "/k4-" in d4 and "/k8-" in d8
    _, n4 = _dir(["method=nothink", "shots=4"], root)  # a trained method does depend on shots
    _, n8 = _dir(["method=nothink", "shots=8"], root)
    assert n4 != n8
