"""TrainingArguments shared by the GRPO and SFT trainers: the batch plan, CPU fallbacks, `train.extra`."""

from __future__ import annotations

from clsrl_exp.config import RunConfig
from clsrl_exp.plan import BatchPlan, derive_batch
from clsrl_exp.runtime import Device


def batch_plan(run: RunConfig, world_size: int) -> BatchPlan:
    """`train.prompts_per_step` x G completions (G = 1 for SFT) per optimizer step at this world size."""
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
    attention unless the extra names them).

    >>> merge_extra({"a": 1, "m": {"dtype": "x"}}, {"b": 2, "m": {"attn": "y"}})
    {'a': 1, 'm': {'dtype': 'x', 'attn': 'y'}, 'b': 2}
    """
    for k, v in extra.items():
        kwargs[k] = {**kwargs[k], **v} if isinstance(v, dict) and isinstance(kwargs.get(k), dict) else v
    return kwargs
