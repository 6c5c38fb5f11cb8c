"""Time whole GRPO optimizer steps through our training entry (`make_grpo_trainer`), split into phases."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

from transformers import TrainerCallback

from clsrl_exp.bench.hardware import sync


class StepTimer(TrainerCallback):
    def __init__(self, cuda: bool):
        self.cuda, self.steps, self.t0 = cuda, [], None

    def on_step_begin(self, args, state, control, **kw):
        sync(self.cuda)
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        sync(self.cuda)
        self.steps.append(time.perf_counter() - self.t0)


def _wrap(obj, name: str, bucket: list, cuda: bool) -> None:
    fn = getattr(obj, name)

    def timed(*a, **kw):
        sync(cuda)
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        sync(cuda)
        bucket.append(time.perf_counter() - t0)
        return out

    setattr(obj, name, timed)


def variant_run(run, *, micro_batch_size: int | None = None, trl_defaults: bool = False, length: int = 8,
                steps: int = 3, prompts_per_step: int | None = None, image_cache: bool = True):
    """Our config for the benchmark (forced completion length, no saving), or TRL's defaults with only the
    paper's hyperparameters: fp32 weights + bf16 autocast, gradient checkpointing on, TRL's own image processing."""
    extra = {"generation_kwargs": {"min_new_tokens": length}, "save_strategy": "no"}
    train = replace(run.train, max_steps=steps + 1, max_completion_length=length, logging_steps=1,
                    micro_batch_size=micro_batch_size or run.train.micro_batch_size,
                    prompts_per_step=prompts_per_step or run.train.prompts_per_step,
                    image_cache=image_cache and not trl_defaults)
    if trl_defaults:
        train = replace(train, gradient_checkpointing=True)
        extra["model_init_kwargs"] = {"dtype": "float32", "attn_implementation": run.model.attn_implementation}
        extra["bf16"] = True
    return replace(run, train=replace(train, extra=extra))


def time_grpo(name: str, run, model_path: str, processor, examples, device, out_dir: str) -> dict:
    """Train steps+1 optimizer steps; report the median of the steps after the first, with phase split."""
    import torch

    from clsrl_exp.train.grpo import make_grpo_trainer
    from clsrl_exp.train.rows import grpo_dataset

    cuda = device.cuda
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer(cuda)
    from clsrl_exp.train.imagecache import decoded_cache_size

    data = grpo_dataset(examples, run.method, "What type of object is in the photo?", run.model.image_size,
                        decoded_cache_size(run))
    trainer = make_grpo_trainer(run, model_path, processor, data, device, out_dir, "hf", ["none"], [timer])
    gen, score = [], []
    _wrap(trainer, "_generate_single_turn", gen, cuda)
    _wrap(trainer, "_generate_and_score_completions", score, cuda)
    trainer.train()
    n = len(timer.steps)
    steps = timer.steps[1:] or timer.steps
    per_step = lambda xs: xs[-len(steps):] if len(xs) >= len(steps) else xs
    g = statistics.median(per_step(gen)) if gen else 0.0
    s = statistics.median(per_step(score)) if score else 0.0
    step = statistics.median(steps)
    logs = [h for h in trainer.state.log_history if "num_tokens" in h]
    tokens = (logs[-1]["num_tokens"] - logs[-2]["num_tokens"]) if len(logs) >= 2 else (
        logs[-1]["num_tokens"] if logs else 0)
    dtype = str(next(trainer.model.parameters()).dtype).replace("torch.", "")
    out = {"variant": name, "steps_timed": len(steps), "steps_total": n, "step_s": step, "generate_s": g,
           "score_ref_s": max(s - g, 0.0), "update_s": max(step - s, 0.0), "tokens_per_step": tokens,
           "tokens_per_s": tokens / step if step else 0.0, "completion_len": run.train.max_completion_length,
           "micro_batch": trainer.args.per_device_train_batch_size,
           "grad_accum": trainer.args.gradient_accumulation_steps,
           "checkpointing": bool(trainer.args.gradient_checkpointing), "weights": dtype,
           "image_cache": run.train.image_cache,
           "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None}
    del trainer
    if cuda:
        torch.cuda.empty_cache()
    return out
