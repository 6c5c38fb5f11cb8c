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


def grpo_config(run: RunConfig, device: Device, output_dir: str, rollout: type[Rollout] | str,
                report_to: list[str]):
    """The GRPOConfig for this run. Sampling is passed explicitly so the model's generation_config can't override it.
    `rollout` is the resolved rollout backend (or its registry name)."""
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
        **_rollout(rollout).grpo_kwargs(run.rollout),
    )
    merge_extra(kwargs, t.extra)
    return GRPOConfig(**kwargs), plan


def _rollout(rollout: type[Rollout] | str) -> type[Rollout]:
    return get_rollout(rollout) if isinstance(rollout, str) else rollout


def reward_functions(run: RunConfig) -> list:
    """The method's rewards (registry keys or import paths, kwargs bound), in the order of `reward_weights`."""
    return [get_reward(r.name, r.kwargs) for r in run.method.rewards]


def make_grpo_trainer(run: RunConfig, model_path: str, processor, train_dataset, device: Device, output_dir: str,
                      rollout: type[Rollout] | str, report_to: list[str], callbacks=(), reward_funcs=None):
    """Build the trainer. `reward_funcs` overrides the method's rewards (tests)."""
    from trl import GRPOTrainer

    rollout = _rollout(rollout)
    Trainer = type("Trainer", (MasterWeightsMixin, *rollout.trainer_mixins(), GRPOTrainer),
                   {"use_master_weights": run.train.master_weights})
    args, plan = grpo_config(run, device, output_dir, rollout, report_to)
    log.info("GRPO batch: %s; generation_batch_size %d", plan.describe(), args.generation_batch_size)
    return Trainer(model=model_path, reward_funcs=reward_funcs or reward_functions(run), args=args,
                   train_dataset=train_dataset, processing_class=processor, callbacks=list(callbacks))


def check_rollout_inputs(run: RunConfig, rollout: type[Rollout], model_path: str, processor, examples,
                         eval_sets=()) -> None:
    """The rollout backend's limits (e.g. vLLM's context length and pixel bounds) against the real GRPO prompts of
    the training examples and a sample of every eval set, before training starts."""
    from clsrl_exp.prompts import grpo_messages, prompt_text

    pairs = [(run.dataset.question, ex) for ex in examples]
    pairs += [(s.question, ex) for s in eval_sets for ex in s.examples[:256]]
    texts = [grpo_messages(prompt_text(run.method.train_template, q, ex.options, ex.problem), run.method)
             for q, ex in pairs]
    rollout.check_inputs(run, model_path, processor, texts, [ex.image_path for _, ex in pairs])
