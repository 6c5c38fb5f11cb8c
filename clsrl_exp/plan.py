"""How many optimizer steps a run makes and how each step's prompts x completions map onto TRL's batch arguments.

Known from the config alone (before any data is read): the dry sweep listing, the run log and the trainer use the
same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clsrl_exp.config import RunConfig, SettingConfig
from clsrl_exp.errors import ConfigError


# ----------------------------------------------------------------------------------------------------- steps
def steps_per_epoch(n_prompts: int, prompts_per_step: int, rule: str = "official") -> int:
    """Optimizer steps in one pass over `n_prompts` training prompts.

    `official`: ceil(N / P). The official runs (8 GPUs x 1 prompt, gradient accumulation 2, so P = 16) padded the
    last batch by wrapping around the shuffled epoch (accelerate / DistributedSampler) and made ceil(ceil(N/8)/2)
    steps per epoch, which equals ceil(N/16) for every N (paper.md 3.1 table). `trl`: TRL 1.16's RepeatSampler drops
    the last incomplete group: floor(N / P) (zero when N < P).

    >>> steps_per_epoch(40, 16), steps_per_epoch(40, 16, "trl"), steps_per_epoch(8, 16), steps_per_epoch(8, 16, "trl")
    (3, 2, 1, 0)
    """
    return -(-n_prompts // prompts_per_step) if rule == "official" else n_prompts // prompts_per_step


def base_count(num_classes: int, base_split: str) -> int:
    """Base classes of base-to-new: floor(C/2) (CLS-RL) or ceil(C/2) (CoCoOp `subsample_classes`).

    >>> base_count(5, "floor"), base_count(5, "ceil")
    (2, 3)
    """
    if base_split not in ("floor", "ceil"):
        raise ValueError(f"base_split must be floor or ceil (got {base_split!r})")
    return num_classes // 2 if base_split == "floor" else -(-num_classes // 2)


def training_classes(setting: SettingConfig, num_classes: int) -> int:
    """Classes the training set covers: all of them, or the base half in base-to-new.

    >>> training_classes(SettingConfig(name="base2new", base_split="floor"), 47)
    23
    """
    return base_count(num_classes, setting.base_split) if setting.name == "base2new" else num_classes


def planned_steps(run: RunConfig, num_classes: int | None = None) -> int | None:
    """Optimizer steps this run will make: `train.max_steps` if set, else epochs x steps per epoch over shots x
    training classes (`dataset.num_classes` unless given); None without training or without a class count."""
    t = run.train
    if t.kind == "none":
        return None
    if t.max_steps > 0:
        return t.max_steps
    c = num_classes or run.dataset.num_classes
    if not c:
        return None
    rule = t.step_rule if t.kind == "grpo" else "official"  # SFT's dataloader keeps the last partial batch
    per_epoch = steps_per_epoch(run.shots * training_classes(run.setting, c), t.prompts_per_step, rule)
    return math.ceil(t.epochs * per_epoch)  # as transformers: ceil(num_train_epochs x steps per epoch)


# ----------------------------------------------------------------------------------------------------- batch
@dataclass(frozen=True)
class BatchPlan:
    """How `prompts_per_step` x G completions per optimizer step map onto TRL's arguments (trap T8)."""

    world_size: int
    prompts_per_step: int
    num_generations: int
    per_device_train_batch_size: int  # completions per device per micro-step (TRL counts completions)
    gradient_accumulation_steps: int
    generation_batch_size: int  # completions generated per optimizer step over all ranks

    @property
    def completions_per_step(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.world_size

    def describe(self) -> str:
        return (
            f"{self.prompts_per_step} prompts x {self.num_generations} completions per optimizer step = "
            f"{self.world_size} GPU(s) x per_device_train_batch_size {self.per_device_train_batch_size} x "
            f"gradient_accumulation_steps {self.gradient_accumulation_steps}"
        )


def derive_batch(prompts_per_step: int, num_generations: int, world_size: int, micro_batch_size: int) -> BatchPlan:
    """Derive TRL batch arguments so every optimizer step sees the same prompts x completions on any world size.

    >>> derive_batch(16, 4, 1, 8).gradient_accumulation_steps
    8
    >>> p = derive_batch(16, 4, 8, 8); (p.per_device_train_batch_size, p.gradient_accumulation_steps)
    (8, 1)
    """
    total = prompts_per_step * num_generations
    if world_size < 1 or total % world_size:
        raise ConfigError(
            f"{prompts_per_step} prompts x {num_generations} completions = {total} completions per step cannot be "
            f"split evenly over {world_size} processes; choose train.prompts_per_step so that the product divides"
        )
    per_rank = total // world_size
    bs = min(micro_batch_size, per_rank)
    while per_rank % bs:  # largest micro batch <= micro_batch_size that divides the per-rank share
        bs -= 1
    plan = BatchPlan(world_size, prompts_per_step, num_generations, bs, per_rank // bs, total)
    assert plan.completions_per_step == total
    return plan
