"""GRPO training with TRL: our config -> GRPOConfig (every paper value explicit) -> GRPOTrainer -> checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from clsrl_exp.config import BatchPlan, RunConfig, derive_batch
from clsrl_exp.rewards import get_reward
from clsrl_exp.train.optim import MasterWeightsMixin
from clsrl_exp.train.rollout import ColocateImageFixMixin, grpo_vllm_kwargs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    """What the run executes on; set once by `clsrl_exp.runtime.setup_device`."""

    cuda: bool
    world_size: int = 1
    rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def batch_plan(run: RunConfig, world_size: int) -> BatchPlan:
    t = run.train
    g = t.num_generations if t.kind == "grpo" else 1
    return derive_batch(t.prompts_per_step, g, world_size, t.micro_batch_size)


def common_args(run: RunConfig, plan: BatchPlan, device: Device, output_dir: str, report_to: list[str]) -> dict:
    """TrainingArguments shared by GRPO and SFT. On CPU: use_cpu, fp32, no checkpointing (traps T3 + speed)."""
    t = run.train
    return dict(
        output_dir=output_dir,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=plan.per_device_train_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        gradient_checkpointing=t.gradient_checkpointing and device.cuda,
        bf16=device.cuda and run.model.dtype == "bfloat16",
        use_cpu=not device.cuda,
        seed=t.seed,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        save_only_model=False,  # optimizer state kept so an interrupted cell resumes exactly
        report_to=report_to,
        disable_tqdm=not device.is_main,
        dataloader_num_workers=0,
        model_init_kwargs={"dtype": run.model.dtype if device.cuda else "float32",
                           "attn_implementation": run.model.attn_implementation},
    )


def merge_extra(kwargs: dict, extra: dict) -> dict:
    """Apply `train.extra` (any other TRL argument); dict values merge into ours (model_init_kwargs keeps dtype and
    attention unless the extra names them)."""
    for k, v in extra.items():
        kwargs[k] = {**kwargs[k], **v} if isinstance(v, dict) and isinstance(kwargs.get(k), dict) else v
    return kwargs


def grpo_config(run: RunConfig, device: Device, output_dir: str, backend: str, report_to: list[str]):
    """The GRPOConfig for this run. Sampling is passed explicitly so the model's generation_config can't override it."""
    from trl import GRPOConfig

    t = run.train
    plan = batch_plan(run, device.world_size)
    kwargs = common_args(run, plan, device, output_dir, report_to)
    kwargs.update(
        beta=t.beta,
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        num_iterations=t.num_iterations,
        epsilon=t.epsilon,
        num_generations=t.num_generations,
        generation_batch_size=plan.generation_batch_size,
        temperature=t.temperature,
        top_p=t.top_p,
        top_k=t.top_k,
        min_p=None,
        repetition_penalty=1.0,
        max_completion_length=t.max_completion_length,
        mask_truncated_completions=t.mask_truncated_completions,
        reward_weights=[r.weight for r in run.method.rewards],
        log_completions=t.log_completions,
        remove_unused_columns=False,  # label and id reach the reward functions as kwargs
        **grpo_vllm_kwargs(run.rollout, backend),
    )
    merge_extra(kwargs, t.extra)
    return GRPOConfig(**kwargs), plan


def reward_functions(run: RunConfig) -> list:
    return [get_reward(r.name) for r in run.method.rewards]


def make_grpo_trainer(run: RunConfig, model_path: str, processor, train_dataset, device: Device, output_dir: str,
                      backend: str, report_to: list[str], callbacks=(), reward_funcs=None):
    """Build the trainer. `reward_funcs` overrides the method's rewards (tests and the shuffled-label control)."""
    from trl import GRPOTrainer

    class Trainer(MasterWeightsMixin, ColocateImageFixMixin, GRPOTrainer):
        use_master_weights = run.train.master_weights

    args, plan = grpo_config(run, device, output_dir, backend, report_to)
    log.info("GRPO batch: %s; generation_batch_size %d", plan.describe(), args.generation_batch_size)
    return Trainer(model=model_path, reward_funcs=reward_funcs or reward_functions(run), args=args,
                   train_dataset=train_dataset, processing_class=processor, callbacks=list(callbacks))
