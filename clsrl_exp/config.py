"""Typed run configuration: the composed Hydra config is merged into these dataclasses and validated at start.

Everything that changes results lives here with its source; `validate()` turns impossible combinations into one
`ConfigError` before any model is loaded, asking the plugin registries (rewards, generation backends, rollouts,
dataset formats) rather than comparing names. The GRPO batch derivation (16 prompts x 4 completions per optimizer
step at any world size, trap T8) is `derive_batch()`, the only place it is computed. Importing this module
registers the config resolvers (`clsrl_exp.resolvers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from clsrl_exp import resolvers  # noqa: F401  (registers ${clsrl_run:} and friends before Hydra composes)
from clsrl_exp.errors import ConfigError
from clsrl_exp.prompts import PROMPT_VARIANTS

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")  # TRL 1.16 (trap T12)
SCALE_REWARDS = ("group", "batch", "none")
TRAINERS = ("none", "grpo", "sft")
SETTINGS = ("fewshot", "base2new", "open")
STEP_RULES = ("official", "trl")


# ----------------------------------------------------------------------------------------------------- model
@dataclass
class TinyBuild:
    """A random Qwen2-VL built offline (tokenizer trained in-process); see `clsrl_exp.models.build_tiny`."""

    seed: int = 0
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 1
    vision_embed_dim: int = 32
    vision_heads: int = 2
    vocab_size: int = 512
    corpus: list[str] = field(default_factory=list)  # words that must become single tokens (class names)
    text: list[str] = field(default_factory=list)  # sentences the tokenizer is trained on (templates, questions)


@dataclass
class WarmArm:
    method: str = MISSING  # a method option whose train template the warm start uses
    target: str = MISSING  # target with {x} (random class) and {y} (random class): no label information


@dataclass
class WarmStart:
    """Label-free SFT so a random tiny model emits class names at all (learncheck.md: without it rewards are 0)."""

    datasets: list[str] = field(default_factory=list)
    arms: list[WarmArm] = field(default_factory=list)
    steps: int = 150
    batch_size: int = 16
    learning_rate: float = 1e-3
    seed: int = 777


@dataclass
class ModelConfig:
    name: str = MISSING
    path: str | None = None  # hub id or local dir; None = build the tiny model offline (needs `tiny`)
    dtype: str = "bfloat16"  # on CUDA; CPU always float32
    attn_implementation: str = "sdpa"
    image_size: int = 384  # every image is resized to image_size x image_size (LANCZOS) in train and eval
    min_pixels: int = 3136
    max_pixels: int = 401408
    tiny: TinyBuild | None = None
    warm_start: WarmStart | None = None


# ----------------------------------------------------------------------------------------------------- data
@dataclass
class ClassNames:
    underscores_to_spaces: bool = True  # CoOp stores raw names and cleans them at prompt time
    rename: dict[str, str] = field(default_factory=dict)  # raw -> display, applied before the underscore rule


@dataclass
class SyntheticSpec:
    kind: str = "colors"  # colors | shapes
    n_train_per_class: int = 100
    n_val_per_class: int = 0
    n_test_per_class: int = 50
    size: int = 56
    seed: int = 0


@dataclass
class FolderSplit:
    """How `layout: imagefolder` splits ONE folder of class folders (no train/ + test/ sub-folders): per class, a
    seeded fraction of the sorted files is held out as test (and val)."""

    test: float = 0.3
    val: float = 0.0
    seed: int = 0


@dataclass
class DatasetConfig:
    name: str = MISSING
    layout: str = "split_json"  # a key of clsrl_exp.data.formats.FORMATS (or file.py:reader)
    dataset_dir: str | None = None  # folder under data.root (None = the dataset's name)
    path: str | None = None  # the dataset folder itself, absolute or under data.root (where, not what: no identity)
    image_dir: str = ""  # folder under dataset_dir that split paths are relative to ("" = dataset_dir)
    split_file: str | None = None  # under dataset_dir
    files: dict[str, str] = field(default_factory=dict)  # clsrl_official: train / test / base / new -> file
    question: str = MISSING  # paper.md 1.1
    open_question: str | None = None  # setting=open (no option list): the official open-set domain question
    # (paper.md 1.3); null = `question`. Identity only in setting=open (clsrl_exp.identity)
    epochs: int = 50  # paper.md 3.1: ImageNet 10, SUN397 25, EuroSAT 100, others 50
    num_classes: int | None = None  # declared class count (paper Table 8): step counts known before data is read
    classnames: ClassNames = field(default_factory=ClassNames)
    folder_split: FolderSplit = field(default_factory=FolderSplit)  # imagefolder without train/ and test/
    synthetic: SyntheticSpec | None = None  # generated on first use into the same layout

    def question_in(self, setting: str) -> str:
        """The question a prompt asks in `setting`: open-set asks `open_question` when the dataset has one.

        >>> ds = DatasetConfig(name="f", dataset_dir="f", question="What type of object?", open_question="Flower?")
        >>> ds.question_in("fewshot"), ds.question_in("open"), DatasetConfig(question="Q?").question_in("open")
        ('What type of object?', 'Flower?', 'Q?')
        """
        return self.open_question if setting == "open" and self.open_question else self.question


@dataclass
class DataConfig:
    root: str = MISSING
    cache_dir: str = MISSING  # few-shot subsets and frozen eval option lists (small JSON)
    include_val_in_test: bool = False  # the official eval may have scored test+val rows (paper.md 4.2)


@dataclass
class SettingConfig:
    name: str = "fewshot"  # fewshot | base2new | open (no option list)
    option_fraction: float = 0.4  # few-shot 40% of classes, base-to-new 80% (paper.md 1.1); open: unused
    option_all_below: int = 30  # fewer than this many options -> use all classes
    option_cap: int = 100
    base_split: str = "floor"  # floor (CLS-RL data) | ceil (CoCoOp)
    # keyword arguments offered to every reward of the method that names them as parameters (the method's own
    # kwargs win), e.g. open-set's underscore_retry (clsrl_exp.rewards.get_reward)
    reward_kwargs: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------- method
@dataclass
class RewardSpec:
    """One reward of a method: a key of `clsrl_exp.rewards.REWARDS` or an import path, its weight, its kwargs."""

    name: str = MISSING  # e.g. accuracy | my_rewards.py:brevity | my_pkg.rewards:brevity
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)  # bound to the function, or passed to a @reward_factory


@dataclass
class MethodConfig:
    name: str = MISSING
    train_template: str = "{question}"
    eval_templates: dict[str, str] = field(default_factory=dict)  # default, + a setting (open) or split (base) key
    system_prompt: str | None = None
    image_first: bool = True
    target_template: str | None = None  # SFT target
    rewards: list[RewardSpec] = field(default_factory=list)


@dataclass
class TrainConfig:
    """Union of the GRPO and SFT sections; `kind` says which fields apply (validated in `validate`)."""

    kind: str = "none"
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: float = 1.0
    max_steps: int = -1
    prompts_per_step: int = 16  # prompts per optimizer step over all GPUs
    micro_batch_size: int = 8  # sequences per device per forward
    gradient_checkpointing: bool = False
    master_weights: bool = True  # bf16 weights + fp32 master copy in AdamW (clsrl_exp.train.optim)
    seed: int = 42
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int = 1
    # GRPO
    beta: float = 0.04
    loss_type: str = "grpo"
    scale_rewards: str = "group"
    num_iterations: int = 1
    num_generations: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    max_completion_length: int = 1024
    epsilon: float = 0.2
    mask_truncated_completions: bool = False
    # the rest of TRL 1.16's objective-relevant GRPOConfig fields, set explicitly (conf/train/grpo.yaml says why)
    use_bias_correction_kl: bool = False
    importance_sampling_level: str = "token"
    epsilon_high: float | None = None
    delta: float | None = None
    top_entropy_quantile: float = 1.0
    entropy_coef: float = 0.0
    use_adaptive_entropy: bool = False
    off_policy_mask_threshold: float | None = None
    multi_objective_aggregation: str = "sum_then_normalize"
    shuffle_dataset: bool = True
    min_p: float | None = None
    repetition_penalty: float = 1.0
    sync_ref_model: bool = False
    step_rule: str = "official"  # official: ceil(N / prompts_per_step) steps per epoch; trl: TRL's floor(N / ...)
    log_completions: bool = False
    shuffle_reward_labels: bool = False  # control: permute labels across training examples (rewards carry no signal)
    image_cache: bool = True  # GRPO: process each training image once per run (clsrl_exp.train.imagecache); speed only
    image_cache_mb: int = 8192  # its memory bound per process (processed + decoded images); speed only
    # SFT
    completion_only_loss: bool = False
    # passthrough for any other TRL argument (kept visible in the resolved config)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RolloutConfig:
    name: str = "hf"  # hf | vllm-colocate | vllm-server | auto (the name maps onto TRL's use_vllm + vllm_mode)
    gpu_memory_utilization: float = 0.3
    enable_sleep_mode: bool = False
    max_prompt_text_tokens: int = 1024  # text budget of one prompt; checked against the real prompts at start
    max_model_length: int | None = None  # derived: image tokens + text budget + max_completion_length
    server_base_url: str | None = None
    importance_sampling_correction: bool = True
    importance_sampling_mode: str = "sequence_mask"
    importance_sampling_clip_max: float = 3.0


@dataclass
class EvalConfig:
    backend: str = "hf"  # a key of clsrl_exp.generation.BACKENDS (hf | vllm) or an import path to a Generator
    batch_size: int = 64
    max_new_tokens: int = 1024
    greedy: bool = True
    datasets: Any = None  # None = the run's dataset; a list of dataset options; or "all"
    all_datasets: Any = "paper"  # eval.datasets=all: a dataset list name of clsrl_exp.grids, or a list
    prompt: str = "eval"  # eval | train | empty-think | <method name> (clsrl_exp.prompts.eval_prompt)
    empty_think: str = "<think></think>"  # eval.prompt=empty-think: prefilled at the start of the reply
    limit: int | None = None  # score only the first N items per eval set (debugging)
    cache_zeroshot: bool = True
    curve_every: int = 0  # > 0: held-out accuracy every N optimizer steps during training (train.curve)
    curve_limit: int = 200  # items per eval set for the curve


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str = "clsrl-exp"
    entity: str | None = None
    mode: str = "offline"
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 60.0  # seconds W&B may take to start online before the run falls back to offline


@dataclass
class PathsConfig:
    output_root: str = "outputs"
    runs: str = "outputs/runs"
    cache: str = "outputs/cache"


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    setting: SettingConfig = field(default_factory=SettingConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    shots: int = 4
    seed: int = 1
    sweep_name: str | None = None
    wait_for_lock: bool = False  # another process running the same cell: wait for it instead of stopping
    run_dir: str = MISSING


# ----------------------------------------------------------------------------------------------------- loading
def to_run_config(cfg: DictConfig | dict) -> RunConfig:
    """Merge a composed config into the typed schema; type errors become one `ConfigError`."""
    if isinstance(cfg, DictConfig):
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.pop("hydra", None)  # before resolving: hydra.runtime.* only resolve inside a running job
        container = OmegaConf.to_container(cfg, resolve=True)
    else:
        container = dict(cfg)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), container)
        run = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        msg = str(e.msg if hasattr(e, "msg") else e).splitlines()[0]
        raise ConfigError(f"invalid config value at '{key}': {msg}") from None
    validate(run)
    return run


def search_dirs() -> list[Path]:
    """Config folders: the running Hydra job's file sources (so `--config-dir` / `hydra.searchpath` additions are
    found), else `conf/` alone."""
    dirs = []
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            for src in HydraConfig.get().runtime.config_sources:
                if src.schema == "file" and src.path:
                    dirs.append(Path(src.path))
    except Exception:  # noqa: BLE001 - outside a Hydra job: conf/ only
        pass
    return [*dict.fromkeys([*dirs, CONF_DIR])]


def load_option(group: str, name: str) -> DictConfig:
    """Load one option of a config group by name (e.g. another dataset for `eval.datasets`)."""
    found = [d / group / f"{name}.yaml" for d in search_dirs() if (d / group / f"{name}.yaml").exists()]
    if not found:
        avail = ", ".join(sorted({p.stem for d in search_dirs() for p in (d / group).glob("*.yaml")}))
        raise ConfigError(f"unknown {group} '{name}' (no {group}/{name}.yaml in {', '.join(map(str, search_dirs()))}); "
                          f"available: {avail}")
    path = found[0]
    node = OmegaConf.load(path)
    node.pop("defaults", None)
    return node[group] if group in node and len(node) == 1 else node


def dataset_config(name: str) -> DatasetConfig:
    node = OmegaConf.merge(OmegaConf.structured(DatasetConfig), load_option("dataset", name))
    return OmegaConf.to_object(node)


def method_config(name: str) -> MethodConfig:
    node = OmegaConf.merge(OmegaConf.structured(MethodConfig), load_option("method", name))
    return OmegaConf.to_object(node)


# ----------------------------------------------------------------------------------------------------- checks
def validate(run: RunConfig) -> None:
    """Fail at start, not an hour in: every check names the key and the fix."""
    t, m = run.train, run.method
    if run.shots < 1:
        raise ConfigError(f"shots must be >= 1 (got {run.shots}); use shots=1|2|4|8|16")
    if t.kind not in TRAINERS:
        raise ConfigError(f"train.kind must be one of {TRAINERS} (got '{t.kind}')")
    if run.setting.name not in SETTINGS:
        raise ConfigError(f"setting.name must be one of {SETTINGS} (got '{run.setting.name}')")
    if run.setting.base_split not in ("floor", "ceil"):
        raise ConfigError(f"setting.base_split must be floor or ceil (got '{run.setting.base_split}')")
    if t.kind == "grpo":
        if t.num_generations < 2:
            raise ConfigError(
                f"train.num_generations must be >= 2 (got {t.num_generations}): GRPO advantages compare "
                "completions within a group; use train.num_generations=4 (the paper's G)"
            )
        if t.loss_type not in LOSS_TYPES:
            raise ConfigError(f"train.loss_type must be one of {LOSS_TYPES} (got '{t.loss_type}')")
        if t.scale_rewards not in SCALE_REWARDS:
            raise ConfigError(f"train.scale_rewards must be one of {SCALE_REWARDS} (got '{t.scale_rewards}')")
        if not m.rewards:
            raise ConfigError(f"method '{m.name}' trains with GRPO but lists no rewards (method.rewards)")
        from clsrl_exp.rewards import get_reward  # pure module, cheap

        for r in m.rewards:
            try:
                get_reward(r.name, r.kwargs, offered=run.setting.reward_kwargs)
            except Exception as e:  # noqa: BLE001 - unknown key, import error, bad kwargs: one message
                msg = e.args[0] if isinstance(e, KeyError) and e.args else e
                raise ConfigError(f"reward '{r.name}' of method '{m.name}' cannot be loaded: {msg}") from None
        if t.max_completion_length < 1:
            raise ConfigError("train.max_completion_length must be >= 1")
        if t.step_rule not in STEP_RULES:
            raise ConfigError(f"train.step_rule must be one of {STEP_RULES} (got '{t.step_rule}')")
        if t.image_cache_mb < 0:
            raise ConfigError(f"train.image_cache_mb must be >= 0 (got {t.image_cache_mb}); 0 keeps only the "
                              "images of the current call, train.image_cache=false turns the cache off")
    if t.kind == "sft" and not m.target_template:
        raise ConfigError(f"method '{m.name}' trains with SFT but has no method.target_template")
    if t.prompts_per_step < 1 or t.micro_batch_size < 1:
        raise ConfigError("train.prompts_per_step and train.micro_batch_size must be >= 1")
    from clsrl_exp import generation  # the registry only (backends import lazily)

    for check in (lambda: generation.get_rollout(run.rollout.name), lambda: generation.get_backend(run.eval.backend)):
        try:
            check()
        except (KeyError, ImportError) as e:
            raise ConfigError(e.args[0] if e.args else str(e)) from None
    if run.eval.prompt not in PROMPT_VARIANTS:
        try:
            method_config(run.eval.prompt)  # cross-prompt: another method's eval prompt
        except ConfigError as e:
            raise ConfigError(f"eval.prompt must be one of {', '.join(PROMPT_VARIANTS)} or a method option name "
                              f"(got '{run.eval.prompt}'): {e}") from None
    if run.eval.prompt == "empty-think" and not run.eval.empty_think:
        raise ConfigError("eval.prompt=empty-think needs eval.empty_think (the text the reply starts with), e.g. "
                          "eval.empty_think='<think></think>'")
    if run.eval.batch_size < 1:
        raise ConfigError(f"eval.batch_size must be >= 1 (got {run.eval.batch_size})")
    if "default" not in m.eval_templates:
        raise ConfigError(f"method '{m.name}' needs method.eval_templates.default")
    if run.model.path is None and run.model.tiny is None:
        raise ConfigError(f"model '{run.model.name}' has neither model.path nor a model.tiny build spec")
    if run.model.min_pixels > run.model.max_pixels:
        raise ConfigError("model.min_pixels must be <= model.max_pixels")
