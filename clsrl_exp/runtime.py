"""Process-level state: the device and rank this process runs as, the experiment tracker, GPU memory release.

`setup_device()` is called once per cell; everything that depends on the machine (CPU fallbacks, bf16, worker
counts) reads the `Device` it returns instead of probing again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clsrl_exp.config import RunConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    """What the run executes on: CUDA or CPU, and this process's place among the launcher's ranks."""

    cuda: bool
    world_size: int = 1
    rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


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


def preprocessing_workers(device: Device) -> int:
    """Worker processes that decode and preprocess images beside the GPU (none on a CPU: they would compete
    with the model for the same cores). Leaves two cores for the main process and the tracker.

    >>> preprocessing_workers(Device(cuda=False))
    0
    """
    return min(8, max(0, (os.cpu_count() or 1) - 2)) if device.cuda else 0


def release_model(model) -> None:
    """Drop a model and give its GPU memory back (before another engine, e.g. vLLM, needs it). Returns None so
    callers write `model = release_model(model)`."""
    import gc

    del model
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    return None


# ----------------------------------------------------------------------------------------------------- tracker
def init_tracker(run: RunConfig, container: dict, device: Device, run_id: str, run_name: str) -> list[str]:
    """Start W&B on rank 0 (offline unless logger.mode=online) with the resolved config; returns TRL's report_to.
    The W&B run id is the training identity: evaluating the model later resumes the same W&B run."""
    logger = run.logger
    if logger.name != "wandb" or not device.is_main:
        return ["none"]
    import wandb

    os.environ.setdefault("WANDB_MODE", logger.mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    tags = [run.method.name, run.dataset.name, run.setting.name, run.model.name, *logger.tags]
    wandb.init(project=logger.project, entity=logger.entity, group=logger.group or run.sweep_name, name=run_name,
               id=run_id, resume="allow", tags=tags, config=container, dir=run.run_dir, mode=os.environ["WANDB_MODE"],
               reinit="finish_previous")
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
