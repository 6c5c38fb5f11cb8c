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


# ----------------------------------------------------------------------------------------------------- ranks
def env_rank() -> int:
    """This process's global rank from its launcher's environment, before any process group exists: RANK (torchrun,
    accelerate), else SLURM_PROCID (Slurm tasks), else 0."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def launch_ranks() -> tuple[int, int]:
    """(rank, world size) of this process, as its launcher set them: torchrun and `accelerate launch` export RANK and
    WORLD_SIZE; Slurm tasks (srun, submitit with `tasks_per_node` > 1) give SLURM_PROCID / SLURM_NTASKS, exported here
    as the RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT torch reads. A launch that asked for several
    processes but started one is a `ConfigError` naming the fix."""
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        export_slurm_ranks()
    if "WORLD_SIZE" not in os.environ:
        check_single_process_launch()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def export_slurm_ranks() -> None:
    """RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the Slurm task environment
    (submitit's helper: the first node of the job is the master, the port derives from the job id)."""
    from submitit.helpers import TorchDistributedEnvironment

    for key in ("MASTER_ADDR", "MASTER_PORT"):  # set in the submitting shell, they would reach every task
        os.environ.pop(key, None)
    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    log.info("Slurm task %d of %d (local %d), master %s:%s", env.rank, env.world_size, env.local_rank,
             env.master_addr, env.master_port)


def _parent_command() -> list[str]:
    try:
        return Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def requested_processes(cmd: list[str]) -> int:
    """Processes an `accelerate launch` command line asks for (`--num_processes N`), 1 if none or another program.

    >>> requested_processes(["python", "accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "x"])
    2
    >>> requested_processes(["python", "-m", "clsrl_exp"])
    1
    """
    if not any(part.endswith("accelerate") for part in cmd) or "launch" not in cmd:
        return 1
    for i, part in enumerate(cmd):
        name, _, value = part.partition("=")
        if name in ("--num_processes", "--num-processes"):
            value = value or (cmd[i + 1] if i + 1 < len(cmd) else "1")
            return int(value) if value.isdigit() else 1
    return 1


def check_single_process_launch() -> None:
    """This process is the only one (no WORLD_SIZE): make sure its launcher did not ask for more."""
    n = requested_processes(_parent_command())
    if n > 1:
        raise ConfigError(
            f"`accelerate launch` asked for {n} processes but started one: with --cpu (or use_cpu in its config) "
            "accelerate runs a single process (several CPU processes need its mpirun launcher). On CPU use "
            f"`accelerate launch --config_file conf/accelerate/cpu.yml --num_processes {n} -m clsrl_exp ...` or "
            f"`torchrun --nproc_per_node {n} -m clsrl_exp ...`")


def init_process_group(cuda: bool) -> None:
    """Join the launcher's process group now (gloo on CPU, nccl on CUDA) so ranks can agree before a trainer
    exists (the cell lock, sharded evaluation); the trainer later reuses the same group."""
    from accelerate import PartialState

    PartialState(cpu=not cuda)


def barrier(world_size: int) -> None:
    if world_size > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


@contextlib.contextmanager
def main_first(world_size: int) -> Iterator[None]:
    """Rank 0 runs the block first (building shared caches), the other ranks after it (finding them built)."""
    if world_size <= 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def broadcast(obj, world_size: int):
    """Rank 0's `obj` on every rank."""
    if world_size <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def setup_device() -> Device:
    """CUDA if visible, else CPU with one torch thread (2-core machines stall with more; feasibility.md)."""
    import torch

    rank, world = launch_ranks()
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


def free_accelerator_memory() -> None:
    """Collect dropped objects and give cached GPU memory back (before another engine, e.g. vLLM, needs it). The
    caller drops its own references first (`model = None`): a reference passed in here would keep the model alive."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


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


@contextlib.contextmanager
def cell_lock_all_ranks(run_dir: str | Path, rank: int, world: int, wait: bool = False) -> Iterator[None]:
    """`cell_lock` taken by rank 0 for all the cell's ranks: if it is held elsewhere, every rank stops with the
    same `CellBusy` (instead of the others waiting for rank 0 in a collective)."""
    with contextlib.ExitStack() as stack:
        busy = None
        if rank == 0:
            try:
                stack.enter_context(cell_lock(run_dir, wait=wait))
            except CellBusy as e:
                busy = str(e)
        busy = broadcast(busy, world)
        if busy:
            raise CellBusy(busy)
        yield


def preemption_signals() -> tuple[int, ...]:
    """The signal a cluster sends before it preempts or times out a job: submitit's (USR2 unless
    SUBMITIT_PREEMPT_SIGNAL says otherwise) when this process is a submitit job, else none."""
    if not os.environ.get("SUBMITIT_FOLDER"):
        return ()
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return (getattr(signal, f"SIG{name}"),)


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
