"""Trainer callbacks: wall time that survives resume, and a held-out accuracy curve during training."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger(__name__)


class WallClock(TrainerCallback):
    """Training wall time, saved beside each checkpoint so a resumed run adds to what was spent before."""

    def __init__(self, state_file: Path):
        self.state_file = Path(state_file)
        self.before = json.loads(self.state_file.read_text())["wall_s"] if self.state_file.exists() else 0.0
        self.t0 = None

    @property
    def wall_s(self) -> float:
        return self.before + (time.perf_counter() - self.t0 if self.t0 else 0.0)

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()

    def on_save(self, args, state, control, **kw):
        self.state_file.write_text(json.dumps({"wall_s": self.wall_s, "step": state.global_step}))


class AccuracyCurve(TrainerCallback):
    """Greedy held-out accuracy every `every` optimizer steps (and before the first), on the live model."""

    def __init__(self, evaluate_fn, every: int, points: list | None = None):
        self.evaluate_fn, self.every = evaluate_fn, every
        self.points: list[dict] = points if points is not None else []

    def _measure(self, step: int, model) -> None:
        if any(p["step"] == step for p in self.points):
            return
        for point in self.evaluate_fn(model):
            self.points.append({"step": step, **point})
            log.info("curve step %d: %s/%s accuracy %.1f", step, point["dataset"], point["split"], point["accuracy"])

    def on_train_begin(self, args, state, control, model=None, **kw):
        self._measure(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kw):
        if self.every and state.global_step % self.every == 0:
            self._measure(state.global_step, model)

    def on_train_end(self, args, state, control, model=None, **kw):
        self._measure(state.global_step, model)


def mean_completion_tokens(log_history: list[dict]) -> float | None:
    vals = [h["completions/mean_length"] for h in log_history if "completions/mean_length" in h]
    return round(sum(vals) / len(vals), 2) if vals else None
