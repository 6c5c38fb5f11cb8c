"""Process-level state: the device and rank this process runs as, stop signals, the cell lock, the experiment
tracker, GPU memory release.

`setup_device()` is called once per cell; everything that depends on the machine (CPU fallbacks, bf16, worker
counts) reads the `Device` it returns instead of probing again.

Signals: `stop_on_signals()` turns SIGINT/SIGTERM (and a launcher's preemption signal) into a stop request that
training and evaluation honour at their next safe point (end of the optimizer step with a checkpoint saved; end of
the prediction batch, already flushed) by raising `CellInterrupted`; a second SIGINT stops at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clsrl_exp.errors import CellBusy, CellInterrupted, ConfigError

if TYPE_CHECKING:
    from clsrl_exp.config import LoggerConfig, RunConfig

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


# ----------------------------------------------------------------------------------------------------- signals
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_stop: dict = {"signum": None, "previous": {}, "forward": None}


def _on_signal(signum, frame) -> None:
    if _stop["signum"] is not None and signum == signal.SIGINT:
        raise KeyboardInterrupt  # the second Ctrl-C: stop now, without saving
    _stop["signum"] = signum
    log.warning("%s received: stopping at the next safe point (training: after this step, with a checkpoint; "
                "evaluation: after this batch); send SIGINT again to stop at once", signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals(extra: tuple[int, ...] = ()) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM (and `extra`, e.g. Slurm's preemption signal) request a graceful stop;
    the previous handlers come back afterwards (and `forward_stop` can hand the signal on to them)."""
    if _stop["previous"]:  # nested (e.g. a cell run inside another): the outer block owns the handlers
        yield
        return
    _stop["signum"] = None
    try:
        for s in (*STOP_SIGNALS, *extra):
            _stop["previous"][s] = signal.signal(s, _on_signal)
    except ValueError:  # not the main thread: no handlers, no graceful stop
        yield
        return
    try:
        yield
    finally:
        _stop["forward"] = _stop["previous"].get(_stop["signum"])
        for s, h in _stop["previous"].items():
            signal.signal(s, h)
        _stop["previous"] = {}


def stop_requested() -> int | None:
    """The signal number of a pending stop request, or None."""
    return _stop["signum"]


def check_stop(where: str) -> None:
    """Raise `CellInterrupted` at a safe point if a stop was requested."""
    if (signum := _stop["signum"]) is not None:
        raise CellInterrupted(signum, f"stopped by {signal.Signals(signum).name} {where}; run the same command "
                                      "again to resume")


def forward_stop(signum: int) -> None:
    """After the cell stopped: hand the signal on to the handler that was installed before ours (e.g. submitit's,
    which requeues the Slurm job and exits); nothing happens for default or ignored handlers."""
    previous = _stop["forward"]
    if callable(previous) and previous not in (_on_signal, signal.default_int_handler):
        previous(signum, None)


# ----------------------------------------------------------------------------------------------------- cell lock
@contextlib.contextmanager
def cell_lock(run_dir: str | Path, wait: bool = False) -> Iterator[None]:
    """One process per cell: hold `<run_dir>/.lock` for the block. Another holder is a `CellBusy` error naming it
    (pid, host, start time), or is waited for with `wait=True`. A lock left by a dead process is free again."""
    from clsrl_exp.fileio import LockHeld, try_lock

    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        with try_lock(Path(run_dir) / ".lock", holder, wait=wait):
            yield
    except LockHeld as e:
        h = e.holder
        raise CellBusy(f"the cell {run_dir} is being run by another process (pid {h.get('pid')} on "
                       f"{h.get('host')}, since {h.get('started')}): let it finish, or pass wait_for_lock=true to "
                       "wait for it") from None


# ----------------------------------------------------------------------------------------------------- tracker
def tracker_mode(logger: LoggerConfig) -> str:
    """W&B's mode: the WANDB_MODE environment variable if set (W&B's own convention), else `logger.mode`."""
    return os.environ.get("WANDB_MODE") or logger.mode


def check_tracker(logger: LoggerConfig) -> None:
    """Online W&B needs credentials: say so at start (before any data or model work), not an hour in."""
    if logger.name != "wandb" or tracker_mode(logger) != "online":
        return
    if os.environ.get("WANDB_API_KEY"):
        return
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        if netrc.netrc().authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise ConfigError(f"logger.mode=online needs W&B credentials and none were found (no WANDB_API_KEY, no {host} "
                      "entry in ~/.netrc): set WANDB_API_KEY or run `wandb login`; or log offline with "
                      "logger.mode=offline and `wandb sync` the run later")



def init_tracker(run: RunConfig, container: dict, device: Device, run_id: str, run_name: str) -> list[str]:
    """Start W&B on rank 0 (offline unless logger.mode=online) with the resolved config; returns TRL's report_to.
    The W&B run id is the training identity: evaluating the model later resumes the same W&B run."""
    logger = run.logger
    if logger.name != "wandb" or not device.is_main:
        return ["none"]
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    tags = [run.method.name, run.dataset.name, run.setting.name, run.model.name, *logger.tags]
    kwargs = dict(project=logger.project, entity=logger.entity, group=logger.group or run.sweep_name, name=run_name,
                  id=run_id, resume="allow", tags=tags, config=container, dir=run.run_dir, reinit="finish_previous")
    mode = tracker_mode(logger)
    try:  # a tracker is never why a cell fails or hangs: bounded start, offline fallback, else untracked
        wandb.init(mode=mode, settings=wandb.Settings(init_timeout=logger.init_timeout), **kwargs)
        return ["wandb"]
    except Exception as e:  # noqa: BLE001 - network, auth, server errors all end the same way
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    if mode == "online":
        log.warning("W&B could not start online (%s): logging offline instead; sync later with `wandb sync "
                    "%s/wandb/offline-run-*`", reason, run.run_dir)
        try:
            wandb.init(mode="offline", **kwargs)
            return ["wandb"]
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}: {e}"[:300]
    log.warning("W&B unavailable (%s): this run is not tracked (its results are in %s)", reason, run.run_dir)
    return ["none"]


def finish_tracker(summary: dict | None = None) -> None:
    """Close the W&B run (if any); a failure here is a warning, never a failed cell."""
    try:
        import wandb

        if wandb.run is not None:
            if summary:
                wandb.run.summary.update(summary)
            wandb.finish()
    except Exception as e:  # noqa: BLE001
        log.warning("W&B could not finish the run cleanly (%s: %s); the cell's results are unaffected",
                    type(e).__name__, str(e)[:200])
