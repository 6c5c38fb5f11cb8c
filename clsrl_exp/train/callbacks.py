"""Trainer callbacks: wall time that survives resume, every logged step on disk, held-out accuracy during training."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from transformers import TrainerCallback

from clsrl_exp.fileio import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)


class WallClock(TrainerCallback):
    """Training wall time, saved (by rank 0, atomically) beside each checkpoint so a resumed run adds to what was
    spent before; an unreadable file counts as nothing spent."""

    def __init__(self, state_file: Path):
        self.state_file = Path(state_file)
        saved = read_json(self.state_file)
        self.before = float(saved.get("wall_s", 0.0)) if isinstance(saved, dict) else 0.0
        self.t0 = None

    @property
    def wall_s(self) -> float:
        return self.before + (time.perf_counter() - self.t0 if self.t0 else 0.0)

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            atomic_write_json(self.state_file, {"wall_s": self.wall_s, "step": state.global_step})


COMPLETE = ".complete"  # written into a checkpoint folder once the trainer has finished saving it


class CheckpointMarker(TrainerCallback):
    """Mark each saved checkpoint complete (a file written after the trainer finished saving it), so a checkpoint
    cut short by a kill or a full disk is never resumed from (`clsrl_exp.train.fit.last_checkpoint`)."""

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / COMPLETE).write_text(json.dumps({"step": state.global_step}))


class StopOnSignal(TrainerCallback):
    """A stop request (SIGINT/SIGTERM, a preemption signal; `clsrl_exp.runtime.stop_on_signals`) ends training at
    the end of the current optimizer step with a checkpoint. Every rank stops at the same step: the request is
    shared across ranks (any rank's signal stops all)."""

    def on_step_end(self, args, state, control, **kw):
        from clsrl_exp.runtime import stop_requested

        stop = stop_requested() is not None
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            flag = torch.tensor([int(stop)], device="cuda" if torch.cuda.is_available() else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if stop and state.global_step < state.max_steps:
            control.should_save = True
            control.should_training_stop = True
            log.warning("stopping after optimizer step %d of %d with a checkpoint", state.global_step,
                        state.max_steps)


class LogHistory(TrainerCallback):
    """Every log entry (loss, rewards, KL, lengths per logged step) appended to a JSONL file on rank 0, so a flat
    reward curve is visible without a tracker. On resume, entries after the resumed checkpoint's step (and a line
    torn by a kill) are dropped first: they are logged again."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kw):
        if not state.is_world_process_zero or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                if json.loads(line).get("step", 0) <= state.global_step:
                    keep.append(line)
            except (ValueError, AttributeError):
                continue
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch, **logs}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, default=float) + "\n")


class AccuracyCurve(TrainerCallback):
    """Greedy held-out accuracy every `every` optimizer steps (and before the first), on the live model.

    The measurement leaves every random number generator as it found it (a DataLoader draws a seed from torch's
    global generator, which TRL's sampling also uses): with or without a curve, training makes the same steps.
    """

    def __init__(self, evaluate_fn, every: int, state_file: Path | None = None):
        self.evaluate_fn, self.every, self.state_file = evaluate_fn, every, state_file
        saved = read_json(state_file) if state_file is not None else None
        self.points: list[dict] = saved if isinstance(saved, list) else []  # a resumed run keeps its earlier points

    def _measure(self, step: int, model) -> None:
        if any(p["step"] == step for p in self.points):
            return
        import random

        import numpy as np
        import torch

        py, npy = random.getstate(), np.random.get_state()
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            points = self.evaluate_fn(model)
        random.setstate(py)
        np.random.set_state(npy)
        for point in points:
            self.points.append({"step": step, **point})
            log.info("curve step %d: %s/%s accuracy %.1f", step, point["dataset"], point["split"], point["accuracy"])
        if self.state_file is not None:
            atomic_write_json(self.state_file, self.points)

    def on_train_begin(self, args, state, control, model=None, **kw):
        self._measure(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kw):
        if self.every and state.global_step % self.every == 0:
            self._measure(state.global_step, model)

    def on_train_end(self, args, state, control, model=None, **kw):
        self._measure(state.global_step, model)


def accuracy_curve(tasks, processor, *, every: int, limit: int, image_size: int, batch_size: int,
                   max_new_tokens: int, scratch: Path, state_file: Path | None = None) -> AccuracyCurve:
    """An `AccuracyCurve` that scores the live model greedily (HF generate) on the first `limit` items of each
    evaluation task, with the task's own prompt; `scratch` holds a throw-away prediction log."""
    from clsrl_exp.evaluate import PredictionLog, evaluate_set
    from clsrl_exp.generation.hf import HFGenerator

    def measure(model) -> list[dict]:
        gen = HFGenerator(model=model, processor=processor, max_new_tokens=max_new_tokens, greedy=True,
                          num_workers=0)
        out = []
        for task in tasks:
            scratch.unlink(missing_ok=True)
            entry = evaluate_set(gen, processor, task, PredictionLog(scratch), image_size=image_size,
                                 batch_size=batch_size, limit=limit, progress=False)
            scratch.unlink(missing_ok=True)
            out.append({"dataset": entry.dataset, "split": entry.split, "prompt_variant": entry.prompt_variant,
                        "accuracy": entry.accuracy})
        return out

    return AccuracyCurve(measure, every, state_file=state_file)


def last_log(history: list[dict]) -> dict:
    """The last logged training metrics (numbers only) for the record."""
    last = next((h for h in reversed(history) if "loss" in h or "reward" in h), history[-1] if history else {})
    return {k: v for k, v in last.items() if isinstance(v, (int, float))}


def mean_completion_tokens(log_history: list[dict]) -> float | None:
    vals = [h["completions/mean_length"] for h in log_history if "completions/mean_length" in h]
    return round(sum(vals) / len(vals), 2) if vals else None
