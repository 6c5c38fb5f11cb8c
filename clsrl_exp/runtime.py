"""Process-level setup: device and threads, distributed rank, experiment tracker."""

from __future__ import annotations

import logging
import os

from clsrl_exp.config import RunConfig
from clsrl_exp.train.grpo import Device

log = logging.getLogger(__name__)


def setup_device() -> Device:
    """CUDA if visible, else CPU with one torch thread (2-core machines stall with more; feasibility.md)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        log.info("CUDA %s: bf16 weights (model.dtype), model.attn_implementation, rank %d of %d",
                 torch.cuda.get_device_name(local), rank, world)
        return Device(cuda=True, world_size=world, rank=rank)
    torch.set_num_threads(1)
    log.info("no CUDA: use_cpu=True, bf16=False, gradient_checkpointing=False, float32, 1 torch thread")
    return Device(cuda=False, world_size=world, rank=rank)


def init_tracker(run: RunConfig, container: dict, device: Device, run_id: str, run_name: str) -> list[str]:
    """Start W&B on rank 0 (offline unless logger.mode=online) with the resolved config; returns TRL's report_to."""
    if run.logger.name != "wandb" or not device.is_main:
        return ["none"]
    import wandb

    os.environ.setdefault("WANDB_MODE", run.logger.mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    tags = [run.method.name, run.dataset.name, run.setting.name, run.model.name, *run.logger.tags]
    wandb.init(project=run.logger.project, entity=run.logger.entity, group=run.logger.group or run.sweep_name,
               name=run_name, id=run_id, resume="allow", tags=tags, config=container, dir=run.run_dir,
               mode=os.environ["WANDB_MODE"], reinit="finish_previous")
    return ["wandb"]


def finish_tracker(summary: dict | None = None) -> None:
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        if summary:
            wandb.run.summary.update(summary)
        wandb.finish()
