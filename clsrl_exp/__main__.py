"""`python -m clsrl_exp [group=option ...] [key=value ...]`: compose the config, validate it, run one cell.

    python -m clsrl_exp model=qwen2vl-2b method=nothink shots=4 dataset=dtd   # train + evaluate + record
    python -m clsrl_exp +sweep=paper-fewshot                                  # a grid from sweeps/ (multirun)
    python -m clsrl_exp --cfg job model=qwen2vl-2b method=nothink             # print the composed config (resolved)
    python -m clsrl_exp --help                                                # config groups and options

Bad input stops at start with one `error: ...` line and a non-zero exit (`clsrl_exp.preflight` checks the command
before Hydra starts; exit codes in `clsrl_exp.errors`). In a sweep, a failing cell is recorded and the others go on;
the sweep ends with a summary and a non-zero exit if any cell failed (clsrl_exp.sweep). SIGINT/SIGTERM stop a cell
at its next safe point, record it `interrupted` and exit 128 + the signal number; the same command resumes it.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from clsrl_exp import config  # noqa: F401  (registers the run-dir resolvers before Hydra composes)
from clsrl_exp.errors import CellBusy, CellInterrupted, UserError
from clsrl_exp.schema import RESULT_FILE

log = logging.getLogger("clsrl_exp")


def _cell(cfg: DictConfig) -> dict:
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    run = config.to_run_config(container)
    from clsrl_exp.run import run_cell

    return run_cell(run, container)


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="config")
def task(cfg: DictConfig) -> dict:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = _run_dir(cfg)
    try:
        return _cell(cfg)
    except CellBusy as e:  # another process owns the cell and its record: touch nothing
        if not multirun:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        log.error("error: %s", e)
        return {"cell": "failed", "run_dir": str(run_dir), "error": f"CellBusy: {e}"}
    except CellInterrupted as e:
        from clsrl_exp import runtime
        from clsrl_exp.schema import mark

        if (run_dir / RESULT_FILE).exists() and _main_rank():
            mark(run_dir, "interrupted", str(e))
        print(f"error: {e}", file=sys.stderr)
        runtime.forward_stop(e.signum)  # e.g. submitit's handler: requeue the Slurm job (and exit)
        sys.exit(e.exit_code)  # in a sweep run in this process too: the user asked to stop
    except UserError as e:
        if not multirun:
            _failed(run_dir, f"{type(e).__name__}: {e}", create=False)  # the cell had started: record why it stopped
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        log.error("error: %s", e)
        return _failed(run_dir, f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - in a sweep one cell's crash must not stop the others
        if not multirun:
            _failed(run_dir, f"{type(e).__name__}: {e}", create=False)  # the record says failed, error.txt why
            raise
        log.exception("cell failed")
        return _failed(run_dir, f"{type(e).__name__}: {e}")


def _run_dir(cfg: DictConfig) -> Path:
    """The cell's run directory (Hydra's output dir is it unless hydra.run.dir / hydra.sweep.dir were overridden)."""
    try:
        return Path(str(cfg.run_dir))
    except Exception:  # noqa: BLE001 - an invalid config: its error is reported by the caller
        return Path(HydraConfig.get().runtime.output_dir)


def _main_rank() -> bool:
    from clsrl_exp.runtime import env_rank

    return env_rank() == 0


def _failed(run_dir: Path, message: str, create: bool = True) -> dict:
    """Record a failed cell (status, message, traceback file) without touching its checkpoints or predictions;
    `create=False`: only if the cell had written a record.

    A complete record is left as it is: the cell had not started (it marks itself running first), so the error came
    from the checks before any work (e.g. its data is gone) and the finished result is still valid."""
    from clsrl_exp.fileio import atomic_write_text
    from clsrl_exp.schema import ERROR_FILE, mark, read_raw

    exists = (run_dir / RESULT_FILE).exists()
    if _main_rank() and (create or exists) and (read_raw(run_dir) or {}).get("status") != "complete":
        atomic_write_text(run_dir / ERROR_FILE, traceback.format_exc())
        mark(run_dir, "failed", message)
    return {"cell": "failed", "run_dir": str(run_dir), "error": message}


def main() -> None:
    # `--cfg job` prints resolved values, so derived settings (rollout.max_model_length, run_dir, train.epochs) show
    # as numbers and paths; `--cfg job --raw` keeps Hydra's unresolved view (`--cfg hydra|all` are left as Hydra's).
    argv = sys.argv
    shows_job = any(a in ("--cfg", "-c") and argv[i + 1:i + 2] == ["job"] for i, a in enumerate(argv))
    if "--raw" in argv:
        argv.remove("--raw")
    elif shows_job and "--resolve" not in argv:
        argv.append("--resolve")
    from clsrl_exp.preflight import preflight

    try:  # sweep launchers (hydra/launcher=local|slurm): a cell whose job dies is a failed cell, not the sweep's end
        from clsrl_exp.launchers import install

        install()
    except ImportError:  # hydra-submitit-launcher is not installed (pip install -e .[slurm])
        pass

    try:
        preflight(argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    task()


if __name__ == "__main__":
    main()
