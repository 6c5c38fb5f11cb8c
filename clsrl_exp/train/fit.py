"""Train one cell's model: GRPO or SFT through TRL, resumable, ending in `<run_dir>/checkpoint/` + `train.json`.

`fit()` is the whole of training as the cell sees it: it skips a finished training (train.json + checkpoint), resumes
from the last checkpoint in `<run_dir>/trainer/`, keeps the full log history beside it, and removes the resume
state once the final model is saved.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from clsrl_exp.config import RunConfig
from clsrl_exp.fileio import atomic_write_json
from clsrl_exp.plan import steps_per_epoch
from clsrl_exp.runtime import Device
from clsrl_exp.schema import CHECKPOINT_DIR, LOG_HISTORY_FILE, TRAIN_FILE, TRAINER_DIR, TrainSummary

log = logging.getLogger(__name__)


def checkpoint_complete(folder: Path) -> bool:
    """A checkpoint counts only when the trainer finished writing it: the completion mark our callback writes after
    the trainer's save returned (a checkpoint without it was cut short, or predates the mark: it is not resumed)."""
    from clsrl_exp.train.callbacks import COMPLETE

    return (folder / COMPLETE).exists()


def last_checkpoint(trainer_dir: Path) -> str | None:
    """The newest complete checkpoint; incomplete ones (killed or out of disk while saving) are skipped, each with a
    warning, and left on disk."""
    ckpts = sorted(trainer_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for ckpt in ckpts:
        if checkpoint_complete(ckpt):
            return str(ckpt)
        log.warning("skipping incomplete checkpoint %s (cut short while saving); resuming from the one before",
                    ckpt)
    return None


def finished(run_dir: Path) -> TrainSummary | None:
    """The summary of a finished training in this run directory, or None."""
    done = run_dir / TRAIN_FILE
    if not (done.exists() and (run_dir / CHECKPOINT_DIR / "config.json").exists()):
        return None
    data = json.loads(done.read_text())
    return TrainSummary(**{k: v for k, v in data.items() if k in TrainSummary.__dataclass_fields__})


def fit(run: RunConfig, model_path: str, processor, examples, device: Device, rollout, report_to: list[str],
        curve_tasks=(), data_fingerprint: str | None = None) -> tuple[object, TrainSummary, str]:
    """Train (resuming if a checkpoint exists) and return (live model or None if already trained, summary,
    checkpoint path). `curve_tasks` are evaluation tasks scored during training when `eval.curve_every` > 0;
    `data_fingerprint` (what the training data is) is stored in the summary."""
    from clsrl_exp.data import shuffled_labels
    from clsrl_exp.runtime import check_stop
    from clsrl_exp.train.callbacks import (
        CheckpointMarker,
        LogHistory,
        StopOnSignal,
        WallClock,
        accuracy_curve,
        last_log,
        mean_completion_tokens,
    )
    from clsrl_exp.train.rows import grpo_dataset, sft_dataset, sft_rows

    run_dir = Path(run.run_dir)
    ckpt = run_dir / CHECKPOINT_DIR
    summary = finished(run_dir)
    if summary is not None:
        log.info("training already finished: %s", ckpt)
        return None, summary, str(ckpt)

    trainer_dir = run_dir / TRAINER_DIR
    trainer_dir.mkdir(parents=True, exist_ok=True)
    clock = WallClock(trainer_dir / "wall.json")
    callbacks = [clock, LogHistory(trainer_dir / LOG_HISTORY_FILE), CheckpointMarker(), StopOnSignal()]
    curve = None
    if run.eval.curve_every and device.is_main and curve_tasks:
        curve = accuracy_curve(curve_tasks, processor, every=run.eval.curve_every, limit=run.eval.curve_limit,
                               image_size=run.model.image_size, batch_size=run.eval.batch_size,
                               max_new_tokens=run.eval.max_new_tokens, scratch=trainer_dir / "curve_tmp.jsonl",
                               state_file=trainer_dir / "curve.json")
        callbacks.append(curve)

    q, img = run.dataset.question_in(run.setting.name), run.model.image_size
    if run.train.shuffle_reward_labels:
        examples = shuffled_labels(examples, run.seed)
        log.warning("control run: training labels are permuted across examples, rewards carry no label information")
    if run.train.kind == "grpo":
        from clsrl_exp.train.grpo import make_grpo_trainer
        from clsrl_exp.train.imagecache import decoded_cache_size

        data = grpo_dataset(examples, run.method, q, img, decoded_cache_size(run))
        trainer = make_grpo_trainer(run, model_path, processor, data, device, str(trainer_dir), rollout, report_to,
                                    callbacks)
    else:
        from clsrl_exp.train.sft import make_sft_trainer

        trainer = make_sft_trainer(run, model_path, processor, sft_dataset(sft_rows(examples, run.method, q), img),
                                   device, str(trainer_dir), report_to, callbacks)
    per_epoch = steps_per_epoch(len(examples), run.train.prompts_per_step,
                                run.train.step_rule if run.train.kind == "grpo" else "official")
    log.info("training on %d examples: %d optimizer steps per epoch, %s", len(examples), per_epoch,
             f"max_steps {run.train.max_steps}" if run.train.max_steps > 0 else f"{run.train.epochs} epochs")
    resume = last_checkpoint(trainer_dir)
    if resume:
        log.info("resuming training from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    if trainer.state.global_step < trainer.state.max_steps:  # stopped by a signal: a checkpoint of this step exists
        check_stop(f"after optimizer step {trainer.state.global_step} of {trainer.state.max_steps} (checkpoint "
                   f"saved in {trainer_dir})")
    history = trainer.state.log_history
    summary = TrainSummary(kind=run.train.kind, steps=trainer.state.global_step, wall_s=round(clock.wall_s, 2),
                           examples=len(examples), mean_completion_tokens=mean_completion_tokens(history),
                           curve=curve.points if curve else [], final_log=last_log(history),
                           log_history=f"{TRAINER_DIR}/{LOG_HISTORY_FILE}", data_fingerprint=data_fingerprint)
    if device.is_main:
        trainer.save_model(str(ckpt))
        processor.save_pretrained(str(ckpt))
        atomic_write_json(run_dir / TRAIN_FILE, asdict(summary))
        for old in trainer_dir.glob("checkpoint-*"):  # the final model is in checkpoint/; resume state no longer needed
            shutil.rmtree(old, ignore_errors=True)
    return trainer.model, summary, str(ckpt)
