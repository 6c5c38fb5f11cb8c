"""GRPO training with TRL: our config -> GRPOConfig (every paper value explicit) -> GRPOTrainer -> checkpoint."""

from __future__ import annotations

import logging

from clsrl_exp.config import RunConfig
from clsrl_exp.generation import Rollout, get_rollout
from clsrl_exp.rewards import get_reward
from clsrl_exp.runtime import Device
from clsrl_exp.train.common import batch_plan, common_args, merge_extra
from clsrl_exp.train.optim import MasterWeightsMixin

log = logging.getLogger(__name__)


# Every GRPOConfig field of TRL 1.16 that changes the loss, the advantage, sampling, which tokens count or the number
# of optimizer steps, with the TrainConfig field (or fixed value) we set it from. The field audit
# (tests/test_grpo_objective.py) fails when TRL adds or re-defaults such a field and this table does not name it.
OBJECTIVE_FIELDS = (
    "beta", "loss_type", "scale_rewards", "num_iterations", "epsilon", "epsilon_high", "delta",
    "importance_sampling_level", "use_bias_correction_kl", "top_entropy_quantile", "entropy_coef",
    "use_adaptive_entropy", "off_policy_mask_threshold", "multi_objective_aggregation", "reward_weights",
    "mask_truncated_completions", "num_generations", "generation_batch_size", "steps_per_generation",
    "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "generation_kwargs", "max_completion_length",
    "shuffle_dataset", "sync_ref_model", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay",
    "max_grad_norm", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "seed",
)


def grpo_kwargs(run: RunConfig, device: Device, output_dir: str, rollout: type[Rollout] | str,
                report_to: list[str]) -> tuple[dict, object]:
    """(GRPOConfig arguments, batch plan). Sampling is passed explicitly so the model's generation_config cannot
    override it; every field of `OBJECTIVE_FIELDS` is named here or in `common_args`."""
    t = run.train
    plan = batch_plan(run, device.world_size)
    kwargs = common_args(run, plan, device, output_dir, report_to)
    kwargs.update(
        beta=t.beta,
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        num_iterations=t.num_iterations,
        epsilon=t.epsilon,
        epsilon_high=t.epsilon_high,
        delta=t.delta,
        importance_sampling_level=t.importance_sampling_level,
        use_bias_correction_kl=t.use_bias_correction_kl,
        top_entropy_quantile=t.top_entropy_quantile,
        entropy_coef=t.entropy_coef,
        use_adaptive_entropy=t.use_adaptive_entropy,
        off_policy_mask_threshold=t.off_policy_mask_threshold,
        multi_objective_aggregation=t.multi_objective_aggregation,
        reward_weights=[r.weight for r in run.method.rewards],
        mask_truncated_completions=t.mask_truncated_completions,
        num_generations=t.num_generations,
        generation_batch_size=plan.generation_batch_size,
        steps_per_generation=None,  # = gradient_accumulation_steps: one generation per optimizer step, ratio 1
        temperature=t.temperature,
        top_p=t.top_p,
        top_k=t.top_k,
        min_p=t.min_p,
        repetition_penalty=t.repetition_penalty,
        generation_kwargs=None,
        max_completion_length=t.max_completion_length,
        shuffle_dataset=t.shuffle_dataset,
        sync_ref_model=t.sync_ref_model,
        log_completions=t.log_completions,
        remove_unused_columns=False,  # label and id reach the reward functions as kwargs
        **_rollout(rollout).grpo_kwargs(run.rollout),
    )
    merge_extra(kwargs, t.extra)
    return kwargs, plan


def grpo_config(run: RunConfig, device: Device, output_dir: str, rollout: type[Rollout] | str,
                report_to: list[str]):
    """The GRPOConfig for this run and its batch plan; `rollout` is the resolved rollout backend (or its name)."""
    from trl import GRPOConfig

    kwargs, plan = grpo_kwargs(run, device, output_dir, rollout, report_to)
    return GRPOConfig(**kwargs), plan


def _rollout(rollout: type[Rollout] | str) -> type[Rollout]:
    return get_rollout(rollout) if isinstance(rollout, str) else rollout


def reward_functions(run: RunConfig) -> list:
    """The method's rewards (registry keys or import paths, kwargs bound, plus the setting's `reward_kwargs` where a
    reward names them), in the order of `reward_weights`."""
    return [get_reward(r.name, r.kwargs, offered=run.setting.reward_kwargs) for r in run.method.rewards]


def make_grpo_trainer(run: RunConfig, model_path: str, processor, train_dataset, device: Device, output_dir: str,
                      rollout: type[Rollout] | str, report_to: list[str], callbacks=(), reward_funcs=None):
    """Build the trainer. `reward_funcs` overrides the method's rewards (tests). With `train.image_cache` the trainer
    gets a copy of `processor` that processes each training image once per run (clsrl_exp.train.imagecache)."""
    from trl import GRPOTrainer

    from clsrl_exp.train.imagecache import bytes_per_image, cached_processor, capacity
    from clsrl_exp.train.sampler import CompletionsPerStepMixin, OfficialStepsMixin

    rollout = _rollout(rollout)
    steps = (OfficialStepsMixin,) if run.train.step_rule == "official" else ()
    Trainer = type("Trainer", (MasterWeightsMixin, CompletionsPerStepMixin, *steps, *rollout.trainer_mixins(),
                               GRPOTrainer),
                   {"use_master_weights": run.train.master_weights})
    args, plan = grpo_config(run, device, output_dir, rollout, report_to)
    log.info("GRPO batch: %s; generation_batch_size %d", plan.describe(), args.generation_batch_size)
    if run.train.image_cache:
        n = capacity(run)
        processor = cached_processor(processor, n)
        log.info("image cache: up to %d training images per process (%.0f MB of %d MB; train.image_cache=false "
                 "turns it off)", n, n * sum(bytes_per_image(run.model)) / 2**20, run.train.image_cache_mb)
    return Trainer(model=model_path, reward_funcs=reward_funcs or reward_functions(run), args=args,
                   train_dataset=train_dataset, processing_class=processor, callbacks=list(callbacks))


def check_rollout_inputs(run: RunConfig, rollout: type[Rollout], model_path: str, processor, examples,
                         eval_sets=()) -> None:
    """The rollout backend's limits (e.g. vLLM's context length and pixel bounds) against the real GRPO prompts of
    the training examples and a sample of every eval set, before training starts."""
    from clsrl_exp.train.rows import grpo_prompt

    pairs = [(run.dataset.question_in(run.setting.name), ex) for ex in examples]
    pairs += [(s.question, ex) for s in eval_sets for ex in s.examples[:256]]
    texts = [grpo_prompt(ex, run.method, q) for q, ex in pairs]
    rollout.check_inputs(run, model_path, processor, texts, [ex.image_path for _, ex in pairs])
