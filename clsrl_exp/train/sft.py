"""SFT with TRL's SFTTrainer (prompt/completion + image rows). Used by the SFT baseline and the tiny warm start."""

from __future__ import annotations

import logging

from clsrl_exp.config import RunConfig
from clsrl_exp.runtime import Device
from clsrl_exp.train.common import batch_plan, common_args, merge_extra
from clsrl_exp.train.optim import MasterWeightsMixin

log = logging.getLogger(__name__)


def image_masking_collator(processor, completion_only_loss: bool):
    """TRL's VLM collator, plus: no loss on `<|image_pad|>` tokens (the official sft.py masks them too)."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    base = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=completion_only_loss, max_length=None)
    image_id = processor.image_token_id

    def collate(examples):
        batch = base(examples)
        batch["labels"][batch["input_ids"] == image_id] = -100
        return batch

    return collate


def make_sft_trainer(run: RunConfig, model_path: str, processor, train_dataset, device: Device, output_dir: str,
                     report_to: list[str], callbacks=(), overrides: dict | None = None):
    from trl import SFTConfig, SFTTrainer

    t = run.train
    plan = batch_plan(run, device.world_size)
    kwargs = common_args(run, plan, device, output_dir, report_to)
    kwargs.update(max_length=None,  # never truncate image tokens (trl_notes 1.12)
                  completion_only_loss=t.completion_only_loss,
                  remove_unused_columns=False,
                  dataset_kwargs={"skip_prepare_dataset": True})
    merge_extra(kwargs, t.extra)
    kwargs.update(overrides or {})
    args = SFTConfig(**kwargs)
    log.info("SFT batch: %d samples per optimizer step (%d GPU(s) x %d x accumulation %d); loss on %s",
             plan.completions_per_step, device.world_size, plan.per_device_train_batch_size,
             plan.gradient_accumulation_steps, "the answer only" if t.completion_only_loss else "the whole sequence")

    class Trainer(MasterWeightsMixin, SFTTrainer):
        use_master_weights = t.master_weights

    return Trainer(model=model_path, args=args, train_dataset=train_dataset, processing_class=processor,
                   data_collator=image_masking_collator(processor, t.completion_only_loss), callbacks=list(callbacks))
